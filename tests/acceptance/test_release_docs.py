"""The release document checks (INV-REL-003, INV-REL-011) and the doc edits that attack them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from acceptance.release_docs import (
    front_matter,
    license_of_text,
    markdown_sections,
    model_card_metadata,
    release_documents,
)
from falsifiers.doc_edits import DOC_EDITS, EditNotApplied, apply_doc_edit
from harness.context import CheckContext

ROOT = Path(__file__).resolve().parents[2]


def _invariant(inv_id: str) -> dict:
    data = yaml.safe_load((ROOT / "contracts" / "release.yaml").read_text())
    (inv,) = [i for i in data["invariants"] if i["id"] == inv_id]
    return inv


def _ctx(tmp_path: Path, params: dict) -> CheckContext:
    return CheckContext(params, 7, tmp_path / "scratch", tmp_path / "art", "T", root=ROOT)


def _judge(inv: dict, observed: dict) -> list[str]:
    """The expectations ``observed`` misses (eq / ge only, as these invariants use)."""
    bad = []
    for key, rule in inv["expect"].items():
        ((op, want),) = rule.items()
        ok = observed[key] == want if op == "eq" else observed[key] >= want
        if not ok:
            bad.append(key)
    return bad


CHECKS = {"INV-REL-003": release_documents, "INV-REL-011": model_card_metadata}


@pytest.mark.parametrize("inv_id", sorted(CHECKS))
def test_the_shipped_documents_pass(tmp_path, inv_id):
    inv = _invariant(inv_id)
    observed = CHECKS[inv_id](_ctx(tmp_path, dict(inv["check"].get("params", {}))))
    assert _judge(inv, observed) == [], observed


@pytest.mark.parametrize(
    "inv_id,edit,caught_by",
    [
        ("INV-REL-003", "extra-renamed", {"undefined_extras"}),
        ("INV-REL-003", "limitations-renamed", {"missing_text", "thin_sections"}),
        ("INV-REL-003", "limitations-stub", {"thin_sections"}),  # the word is still there
        ("INV-REL-011", "license-apache", {"license_disagreements"}),
        ("INV-REL-011", "licence-typo", {"schema_errors", "license_disagreements"}),
        ("INV-REL-011", "dataset-hub-id", {"datasets_unknown", "datasets_unlisted"}),
    ],
)
def test_each_doc_edit_is_caught_and_the_repository_is_untouched(tmp_path, inv_id, edit, caught_by):
    before = {p: (ROOT / p).read_bytes() for p in ("MODEL_CARD.md", "pyproject.toml")}
    inv = _invariant(inv_id)
    params = {**inv["check"].get("params", {}), "doc_edit": edit}
    observed = CHECKS[inv_id](_ctx(tmp_path, params))
    assert observed["doc_edit"] == edit
    assert set(_judge(inv, observed)) == caught_by, observed
    assert {p: (ROOT / p).read_bytes() for p in before} == before


def test_every_doc_edit_is_declared_as_a_falsifier():
    data = yaml.safe_load((ROOT / "contracts" / "release.yaml").read_text())
    used = {
        f["mutant"]["params"]["doc_edit"]
        for f in data["falsifiers"]
        if "doc_edit" in (f.get("mutant") or {}).get("params", {})
    }
    assert used == set(DOC_EDITS)


def test_an_edit_whose_text_is_gone_is_not_applied(tmp_path):
    (tmp_path / "MODEL_CARD.md").write_text("# card\n\n## Known issues\n\nnone\n")
    with pytest.raises(EditNotApplied):
        apply_doc_edit("limitations-stub", tmp_path)
    with pytest.raises(EditNotApplied, match="front matter"):
        apply_doc_edit("license-apache", tmp_path)
    with pytest.raises(EditNotApplied, match="not in the copy"):
        apply_doc_edit("extra-renamed", tmp_path)
    with pytest.raises(ValueError, match="doc edit must be one of"):
        apply_doc_edit("no-such-edit", tmp_path)


def test_front_matter_edits_touch_only_the_front_matter(tmp_path):
    shutil.copyfile(ROOT / "MODEL_CARD.md", tmp_path / "MODEL_CARD.md")
    body_before = (tmp_path / "MODEL_CARD.md").read_text().split("\n---\n", 1)[1]
    apply_doc_edit("dataset-hub-id", tmp_path)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert front_matter(text)["datasets"] == ["pystdlib", "scikit-learn/digits"]
    assert text.split("\n---\n", 1)[1] == body_before


def test_markdown_sections_skip_front_matter_and_code_fences():
    text = "---\n# not: a heading\nlicense: mit\n---\n# Top\nintro\n```bash\n# a comment\n```\n"
    text += "## A\none two\n### A.1\nthree\n## B\nfour\n"
    sections = markdown_sections(text)
    assert list(sections) == ["top", "a", "a.1", "b"]
    assert sections["a"].split() == ["one", "two", "###", "A.1", "three"]
    assert sections["b"].strip() == "four"


def test_front_matter_needs_a_closed_yaml_mapping():
    assert front_matter("---\nlicense: mit\n---\n# x\n") == {"license": "mit"}
    assert front_matter("# x\n---\nlicense: mit\n---\n") is None
    assert front_matter("---\nlicense: mit\n# never closed\n") is None
    assert front_matter("---\n- a list\n---\n") is None


def test_license_of_text():
    assert license_of_text((ROOT / "LICENSE").read_text()) == "mit"
    apache = "Apache License\n  Version 2.0, January 2004\n http://www.apache.org/licenses/"
    assert license_of_text(apache) == "apache-2.0"
    assert license_of_text("All rights reserved.") == "unknown"


def _docs_copy(tmp_path: Path, *drop: str) -> Path:
    """A copy of the files the document checks read, without ``drop``."""
    root = tmp_path / "repo"
    for rel in ("MODEL_CARD.md", "LICENSE", "pyproject.toml", "README.md", "CONTRIBUTING.md",
                "contracts/model-card.schema.json", "datasets/manifest.yaml"):  # fmt: skip
        if rel not in drop:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, root / rel)
    return root


def _ctx_at(tmp_path: Path, root: Path, inv_id: str) -> CheckContext:
    params = dict(_invariant(inv_id)["check"].get("params", {}))
    return CheckContext(params, 7, tmp_path / "scratch", tmp_path / "art", "T", root=root)


@pytest.mark.parametrize(
    "manifest_text",
    ["version: 1\n", "datasets: {digits: {}}\n", "datasets:\n  - kind: text\n", "[1, 2]\n"],
)
def test_a_manifest_without_datasets_is_one_line_naming_it(tmp_path, manifest_text):
    root = _docs_copy(tmp_path)
    (root / "datasets/manifest.yaml").write_text(manifest_text)
    with pytest.raises(ValueError) as err:
        model_card_metadata(_ctx_at(tmp_path, root, "INV-REL-011"))
    msg = str(err.value)
    assert "\n" not in msg and str(root / "datasets/manifest.yaml") in msg and "'datasets'" in msg


def test_a_missing_manifest_is_one_line_naming_it(tmp_path):
    root = _docs_copy(tmp_path, "datasets/manifest.yaml")
    with pytest.raises(FileNotFoundError, match="manifest.yaml: missing; ") as err:
        model_card_metadata(_ctx_at(tmp_path, root, "INV-REL-011"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("inv_id", sorted(CHECKS))
def test_a_missing_pyproject_is_one_line_naming_it(tmp_path, inv_id):
    root = _docs_copy(tmp_path, "pyproject.toml")
    with pytest.raises(FileNotFoundError) as err:
        CHECKS[inv_id](_ctx_at(tmp_path, root, inv_id))
    msg = str(err.value)
    assert msg.startswith(f"{root / 'pyproject.toml'}: missing; ") and "\n" not in msg


def test_a_broken_pyproject_is_one_line_naming_it(tmp_path):
    root = _docs_copy(tmp_path)
    (root / "pyproject.toml").write_text("[project\nname = 'x'\n")
    with pytest.raises(ValueError, match="pyproject.toml: not valid TOML") as err:
        release_documents(_ctx_at(tmp_path, root, "INV-REL-003"))
    assert "\n" not in str(err.value)


def test_doc_edits_and_the_check_see_one_front_matter(tmp_path):
    """Front matter closed by '---' with trailing spaces and no final newline: the check
    parses it, so the edit must find it too (one definition: front_matter_block)."""
    (tmp_path / "MODEL_CARD.md").write_text("---  \nlicense: mit\n--- ")
    assert front_matter((tmp_path / "MODEL_CARD.md").read_text()) == {"license": "mit"}
    apply_doc_edit("license-apache", tmp_path)
    assert front_matter((tmp_path / "MODEL_CARD.md").read_text()) == {"license": "apache-2.0"}
