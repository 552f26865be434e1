"""The shipped contracts: they lint clean, map to the seeds, and run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lint import lint_paths
from harness.listing import markdown_table
from harness.loader import load_contract_set

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"


def test_shipped_contracts_lint_clean():
    contracts, diags = lint_paths([CONTRACTS], ROOT, ())
    assert [d.format() for d in diags] == []
    assert len(contracts) >= 4


def test_recorded_tool_output_is_fed_only_by_mutants():
    """``recorded`` (acceptance/infra_probes.py: judge a tool's saved output instead of
    running the tool) would turn an infra probe's SKIP into a verdict on a file: it may
    appear in a mutant falsifier's ``mutant.params`` only, never in an invariant's own
    check params nor anywhere else. (A check cannot tell it runs under a mutant, so the
    probe also refuses it itself: ``infra_probes.recorded_refusal``.)"""
    cs = load_contract_set([CONTRACTS])
    own = [i.id for i in cs.invariants.values() if "recorded" in json.dumps(i.check.params)]
    fed, elsewhere = [], []
    for f in cs.falsifiers:
        params = f.spec.get("params") if f.kind == "mutant" else None
        rest = {k: v for k, v in f.spec.items() if k != "params"} if params else f.spec
        if isinstance(params, dict) and "recorded" in params:
            fed.append(f.id)
        if "recorded" in json.dumps(rest):
            elsewhere.append(f.id)
    assert own == [] and elsewhere == []
    assert len(fed) >= 3  # the infra probes' falsifiers: the test is not vacuous


# A reference is "seeds/NNN <section>: '<verbatim quote>'" (more quotes and a trailing remark
# allowed; a remark "context: ..." marks a line kept for context, not as the source), or, where
# no seed asks for the criterion, "project requirement (issue N...": one of our issues.
_SEED_REF = re.compile(r"seeds/(\d{3})\b")
_PROJECT_REF = re.compile(r"project requirement \(issue \d+\b")
# A quote opens with ' not preceded by a letter or digit and closes with ' not followed by
# one, so an apostrophe inside a word (APR's, step 1's) stays inside the quote.
_QUOTE = re.compile(r"(?<!\w)'(.+?)'(?!\w)")


def _ref_form_problem(ref: str) -> str | None:
    if _PROJECT_REF.match(ref):
        return None
    if not _SEED_REF.match(ref):
        return "is neither a 'seeds/NNN ...' quote nor a 'project requirement (issue N ...'"
    if not _QUOTE.search(ref):
        return "names a seed but quotes nothing from it"
    return None


def _is_context(ref: str) -> bool:
    return "context:" in ref


def test_every_criterion_names_where_it_comes_from():
    """Each reference is a seed quote or a project requirement naming our issue, and every
    criterion has at least one that is its source (not only context)."""
    wrong = []
    for c in load_contract_set([CONTRACTS]).criteria:
        wrong += [f"{c.id}: {r!r} {p}" for r in c.references if (p := _ref_form_problem(r))]
        if not any(not _is_context(r) for r in c.references):
            wrong.append(f"{c.id}: only context references, no source")
    assert wrong == []


def _plain(text: str) -> str:
    """Seed text as a reader sees it: markdown emphasis and code marks dropped,
    whitespace runs (line breaks included) as one space."""
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", "")).strip()


def _unquoted_phrases(ref: str, seeds: dict[str, str]) -> tuple[int, list[str]]:
    """(phrases checked, problems) for one reference: every quoted phrase of a seeds/NNN
    reference, and each part of it between '...' ellipses, occurs in seed NNN."""
    m = _SEED_REF.match(ref)
    if not m:
        return 0, []
    text = seeds.get(m.group(1))
    if text is None:
        return 0, [f"there is no seed file seeds/{m.group(1)}_*.txt"]
    checked, wrong = 0, []
    for quoted in _QUOTE.findall(ref):
        checked += 1
        parts = [p for p in (_plain(s) for s in quoted.split("...")) if p]
        missing = [p for p in parts if p not in text]
        if not parts or missing:
            wrong.append(f"seeds/{m.group(1)} does not say {(missing or [quoted])[0]!r}")
    return checked, wrong


def _seeds() -> dict[str, str]:
    seeds_dir = ROOT.parent / "shared" / "seeds"
    if not seeds_dir.is_dir():
        if os.environ.get("HARNESS_CI"):  # .ci/run sets it: CI has ../shared beside it
            pytest.fail("../shared/seeds is not beside this clone; CI must check the quotes")
        pytest.skip("../shared/seeds is not beside this clone")
    return {p.name[:3]: _plain(p.read_text(encoding="utf-8")) for p in seeds_dir.glob("*.txt")}


def test_every_quoted_seed_phrase_occurs_in_its_seed():
    """A reference says what its seed says (issue 13): each phrase quoted in a 'seeds/NNN'
    reference occurs in that seed file (each part between '...' ellipses, in any order)."""
    seeds = _seeds()
    checked, wrong = 0, []
    for c in load_contract_set([CONTRACTS]).criteria:
        for ref in c.references:
            n, problems = _unquoted_phrases(ref, seeds)
            checked += n
            wrong += [f"{c.id}: {p}" for p in problems]
    assert wrong == []
    assert checked >= 65  # 71 quoted phrases when this was written


def test_the_quote_check_catches_a_made_up_or_cut_quote():
    text = "when an APR's\nmetadata `architecture` claim contradicts it. Later: step 3."
    seeds = {"001": _plain(text)}
    ok = "seeds/001 #1760: 'when an APR's metadata `architecture` claim ... step 3.' (remark)"
    assert _unquoted_phrases(ok, seeds) == (1, [])
    for made_up in (
        "seeds/001 #1760: 'when an APR's metadata claim is ignored'",  # after the apostrophe
        "seeds/001 #1760: 'when an APR's metadata ... step 4.'",  # a part after the ellipsis
        "seeds/001: 'Later: step 3.' and 'a phrase the seed never had'",  # the second quote
        "seeds/009: 'when an APR'",  # no such seed
    ):
        assert _unquoted_phrases(made_up, seeds)[1], made_up
    assert _ref_form_problem("issue 6: 'a quote from our issue'")
    assert _ref_form_problem("seeds/001 #1760 says so")
    assert _ref_form_problem("project requirement (issue 13: a kill switch)") is None


def test_docs_criteria_is_generated_from_the_contracts():
    expected = markdown_table(load_contract_set([CONTRACTS])) + "\n"
    actual = (ROOT / "docs" / "criteria.md").read_text()
    assert actual == expected, "regenerate: harness list --markdown > docs/criteria.md"


@pytest.mark.slow
def test_fast_profile_runs_every_shipped_criterion_without_failure(tmp_path):
    out = tmp_path / "fast.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "--fast",
            "--no-evidence",
            "--output",
            f"json={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    bad = {
        c["criterion_id"]: c["reasons"][:2] for c in result["criteria"] if c["verdict"] == "NO-GO"
    }
    assert bad == {}, bad
    for c in result["criteria"]:
        if c["severity"] == "blocker":
            other = [r for r in c["reasons"] if "skipped by --fast" not in r]
            assert c["verdict"] == "UNPROVEN-FAST", (c["criterion_id"], other or c["reasons"])
    assert proc.returncode == 0, "--fast gates a merge: only skipped falsifiers missing is exit 0"
