"""Checks of the PII and policy criteria of the data-governance contract
(contracts/data.yaml: AC-DATA-002, AC-DATA-003).

Every check runs the real data layer (``kernels.data``) on the real shipped
datasets; anything it corrupts, plants or rewrites is a copy under ``ctx.scratch``
(datasets/ itself is never written). The checks observe; the contract's
``expect:`` judges.

The manifest checks (AC-DATA-001) are in acceptance/data_manifest.py, the pipeline and
drift checks (AC-DATA-004, AC-DATA-005) in acceptance/data_pipeline.py, and what the
checks plant and corrupt in acceptance/data_copies.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from acceptance.data_copies import (
    DECOY_FORMS,
    PII_FORMS,
    PII_KINDS,
    SHIPPED,
    copy_datasets,
    edit_manifest,
    insert_at_newline,
    make_decoy,
    make_pii,
    one_line,
    plant_in_corpus,
    rerecord,
    seeded_rng,
)


def _trainer_calls_gate() -> bool:
    """Whether the trainer (the kernels.train package) calls authorize_training (recorded,
    not judged: until it does, "training is refused" is shown on the gate the trainer is
    meant to call). Only code counts: a call, not a mention in a docstring."""
    import importlib.util

    spec = importlib.util.find_spec("kernels.train")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for f in sorted(Path(folder).glob("*.py")):
            if "authorize_training(" in f.read_text(encoding="utf-8"):
                return True
    return False


# ============================================================= AC-DATA-002 PII
def pii_scanner_finds_planted(ctx: Any) -> dict[str, Any]:
    """PII planted in copies of real corpus documents is found (right kind, right span);
    look-alikes that are not PII (Luhn-invalid cards, bad octets, reserved SSN areas,
    example.com) are not reported; the shipped corpus scans clean.

    With ``every_form`` (the default) every form the scanner documents (``PII_FORMS``:
    each phone layout, each card grouping and length, emails with tags, subdomains and
    capitals, ...) is planted once per kind, and every documented look-alike
    (``DECOY_FORMS``) once, before ``per_kind`` plants of random forms and one random
    look-alike per kind (issue 13, class 1: a generator narrower than the spec)."""
    from kernels.data import pii
    from kernels.data.pipeline import ingest_corpus

    kinds = list(ctx.params.get("kinds", PII_KINDS))
    per_kind = int(ctx.params.get("per_kind", 3))
    every_form = bool(ctx.params.get("every_form", True))
    rng = seeded_rng(ctx, int(ctx.params.get("plant_seed", 0)), 1)
    docs = [d for d in ingest_corpus() if len(d.text) > 200]
    clean_findings = len(pii.scan_documents(docs))
    planted, missed, wrong = 0, [], []
    decoys, decoys_reported = 0, []
    forms_planted: set[str] = set()
    decoy_forms: set[str] = set()
    order = rng.permutation(len(docs))
    k = 0
    for kind in kinds:
        plants = list(PII_FORMS[kind]) if every_form else []
        for form in plants + [None] * per_kind:
            doc = docs[int(order[k % len(order)])]
            k += 1
            item = make_pii(kind, rng, form)
            text, off = insert_at_newline(doc.text, item, rng)
            found = pii.scan_text(text, doc_id=doc.id)
            planted += 1
            forms_planted.add(f"{kind}/{form}" if form else f"{kind}/random")
            hit = [f for f in found if f.offset == off and f.length == len(item)]
            if not hit:
                missed.append(f"{kind} ({form or 'random form'}): {item!r}")
            elif hit[0].kind != kind:
                wrong.append(f"{kind} reported as {hit[0].kind}: {item!r}")
        looks = list(DECOY_FORMS[kind]) if every_form else []
        for form in looks + [None]:
            doc = docs[int(order[k % len(order)])]
            k += 1
            decoy = make_decoy(kind, rng, form)
            text, off = insert_at_newline(doc.text, decoy, rng)
            decoys += 1
            decoy_forms.add(f"{kind}/{form}" if form else f"{kind}/random")
            if any(off <= f.offset < off + len(decoy) for f in pii.scan_text(text)):
                decoys_reported.append(f"{kind} ({form or 'random form'}): {decoy!r}")
    ctx.attach_json(
        "pii-scan.json",
        {
            "forms_planted": sorted(forms_planted),
            "decoy_forms": sorted(decoy_forms),
            "missed": missed,
            "wrong_kind": wrong,
            "decoys_reported": decoys_reported,
        },
    )
    return {
        "kinds": len(kinds),
        "planted": planted,
        "forms_planted": len(forms_planted),
        "missed": len(missed),
        "missed_examples": missed[:5],
        "wrong_kind": len(wrong),
        "decoys": decoys,
        "decoy_forms": len(decoy_forms),
        "decoys_reported": len(decoys_reported),
        "decoy_examples": decoys_reported[:5],
        "clean_corpus_findings": clean_findings,
    }


def pii_dataset_blocked(ctx: Any) -> dict[str, Any]:
    """A PII-flagged dataset (scanner findings in a copy whose manifest was re-recorded
    with pii: false, or a manifest pii: true) is refused by authorize_training until
    an approval for exactly its content is in the audit log; stale and forged
    approvals do not count; every decision is an audit event and the chain verifies."""
    import auditchain as kaudit
    from auditchain import verify_chain as harness_verify_chain
    from kernels.data.governance import (
        APPROVAL_EVENT,
        DECISION_EVENT,
        GovernanceError,
        approve_pii,
        authorize_training,
    )

    kinds = list(ctx.params.get("plant_kinds", PII_KINDS))
    rng = seeded_rng(ctx, int(ctx.params.get("plant_seed", 0)), 2)
    mpath = copy_datasets(ctx)
    items = plant_in_corpus(mpath, kinds, rng)
    rerecord(mpath, "pystdlib")  # the owner rebuilt the manifest but left pii: false
    edit_manifest(mpath, {"digits": {"pii": True}})  # flagged by the manifest alone
    log = ctx.scratch / "audit.jsonl"
    calls = 0
    messages: list[str] = []

    def attempt(names: list[str], **kw: Any) -> tuple[bool, str, str | None]:
        nonlocal calls
        calls += 1
        try:
            d = authorize_training(names, manifest=mpath, audit=kw.pop("audit", log), **kw)
            return True, d.reason, d.rule
        except GovernanceError as e:
            messages.append(str(e))
            return False, str(e), e.decision.rule if e.decision else None

    ok_pii, msg_pii, rule_pii = attempt(["pystdlib"])
    ok_flag, _, rule_flag = attempt(["digits"])
    ok_clean, _, _ = attempt(["tokenizer-1024"])
    approve_pii(
        "pystdlib",
        approver="data-protection-officer",
        reason="contract check: planted PII, approved for the test",
        audit=log,
        manifest=mpath,
    )
    ok_approved, _, _ = attempt(["pystdlib"])
    # a forged approval for digits: a line appended without the chain
    forged = ctx.scratch / "forged.jsonl"
    forged.write_bytes(log.read_bytes() if log.exists() else b"")
    from kernels.data.manifest import load_manifest

    digits_sha = load_manifest(mpath).datasets["digits"].sha256
    with open(forged, "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "seq": 99,
                    "prev": "0" * 64,
                    "event": APPROVAL_EVENT,
                    "dataset": "digits",
                    "sha256": digits_sha,
                    "approver": "nobody",
                    "reason": "forged",
                }
            )
            + "\n"
        )
    ok_forged, _, _ = attempt(["digits"], approvals=[forged], audit=ctx.scratch / "forged-d.jsonl")
    # the approved dataset changes again (more PII): the old approval is stale
    plant_in_corpus(mpath, kinds[:1], rng)
    rerecord(mpath, "pystdlib")
    ok_stale, _, _ = attempt(["pystdlib"])
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    events += [
        e
        for e in kaudit.read_events(ctx.scratch / "forged-d.jsonl")
        if e.get("event") == DECISION_EVENT
    ]
    _, _, problems = harness_verify_chain(log)
    if log.exists():
        ctx.attach(log, "governance-audit.jsonl")
    return {
        "planted": len(items),
        "blocked_unapproved": not ok_pii,
        "blocked_rule": rule_pii or "",
        "blocked_message": msg_pii,
        "flag_blocked": not ok_flag and rule_flag == "pii.approval",
        "clean_allowed": ok_clean,
        "approved_allowed": ok_approved,
        "forged_approval_blocked": not ok_forged,
        "stale_approval_blocked": not ok_stale,
        "decisions": calls,
        "unlogged_decisions": calls - len(events),
        "chain_problems": len(problems),
        "messages_one_line": all(one_line(m) for m in messages),
        "messages_name_pii": all("PII" in m for m in messages),
        "trainer_calls_gate": _trainer_calls_gate(),
    }


# ========================================================== AC-DATA-003 policy
def policy_enforced(ctx: Any) -> dict[str, Any]:
    """The shipped policy allows the shipped datasets and refuses datasets whose
    license or source it denies or does not allow, or whose name it withdraws, naming
    the rule; every decision, allowed or refused, is a hash-chained audit event."""
    import auditchain as kaudit
    from auditchain import verify_chain as harness_verify_chain
    from kernels.data.governance import (
        DECISION_EVENT,
        GovernanceError,
        authorize_training,
        default_policy_path,
    )

    mpath = copy_datasets(ctx)
    base = yaml.safe_load(mpath.read_text(encoding="utf-8"))
    digits = next(e for e in base["datasets"] if e["name"] == "digits")
    variants = {
        "digits-nc": ({"license": "CC-BY-NC-4.0"}, "licenses.deny"),
        "digits-gpl": ({"license": "GPL-3.0-only"}, "licenses.deny"),
        "digits-scraped": ({"source": "web scrape of a handwriting forum, 2024"}, "sources.deny"),
        "digits-custom-license": ({"license": "LicenseRef-vendor-eval"}, "licenses.allow"),
        "digits-unknown-source": ({"source": "a USB stick from a conference"}, "sources.allow"),
        "digits-withdrawn": ({}, "datasets.deny"),
    }
    edits = {}
    for name, (fields, _) in variants.items():
        entry = {k: v for k, v in digits.items() if k != "name"}
        entry.update(fields)
        edits[name] = entry
    edit_manifest(mpath, edits)
    policy = Path(ctx.params.get("policy") or default_policy_path())
    if not policy.is_absolute():
        policy = ctx.root / policy
    withdrawn = ctx.scratch / "policy-withdrawn.yaml"
    pdoc = yaml.safe_load(policy.read_text(encoding="utf-8"))
    pdoc.setdefault("datasets", {})["deny"] = ["digits-withdrawn"]
    withdrawn.write_text(yaml.safe_dump(pdoc, sort_keys=False), encoding="utf-8")
    log = ctx.scratch / "audit.jsonl"
    decisions: list[dict[str, Any]] = []

    def attempt(names: list[str], pol: Path) -> dict[str, Any]:
        try:
            d = authorize_training(names, manifest=mpath, policy=pol, audit=log)
            out = {"names": names, "allowed": True, "rule": None, "message": d.reason}
        except GovernanceError as e:
            rule = e.decision.rule if e.decision else None
            out = {"names": names, "allowed": False, "rule": rule, "message": str(e)}
        decisions.append(out)
        return out

    shipped = attempt(list(SHIPPED), policy)
    wrongly_allowed, wrong_rule, unclear = [], [], []
    for name, (_, rule) in variants.items():
        pol = withdrawn if rule == "datasets.deny" else policy
        for names in ([name], ["digits", name]):  # alone, and mixed with an allowed one
            r = attempt(names, pol)
            if r["allowed"]:
                wrongly_allowed.append(names)
            elif not str(r["rule"] or "").startswith(rule):
                wrong_rule.append(f"{names}: {r['rule']} (expected {rule})")
            elif not (one_line(r["message"]) and name in r["message"] and rule in r["message"]):
                unclear.append(r["message"])
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    mismatched = sum(
        1
        for d, e in zip(decisions, events, strict=False)
        if e.get("decision") != ("allowed" if d["allowed"] else "refused")
        or e.get("requested") != d["names"]
        or e.get("rule") != d["rule"]
    )
    _, _, problems = harness_verify_chain(log)
    if log.exists():
        ctx.attach(log, "policy-audit.jsonl")
    ctx.attach_json("policy-decisions.json", decisions)
    return {
        "shipped_allowed": shipped["allowed"],
        "shipped_message": shipped["message"],
        "denied_cases": 2 * len(variants),
        "wrongly_allowed": len(wrongly_allowed),
        "wrong_rule": len(wrong_rule),
        "wrong_rule_examples": wrong_rule[:3],
        "unclear_messages": len(unclear),
        "decisions": len(decisions),
        "unlogged_decisions": len(decisions) - len(events),
        "event_mismatch": mismatched,
        "chain_problems": len(problems),
        "example_refusal": next((d["message"] for d in decisions if not d["allowed"]), ""),
        "trainer_calls_gate": _trainer_calls_gate(),
    }


# ================================================ the trainer calls the gate
class _env:
    """Set environment variables for the block; restore them afterwards."""

    def __init__(self, **values: str | Path) -> None:
        self.values = {k: str(v) for k, v in values.items()}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        import os

        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        import os

        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _train_attempt(cfg: Any, out: Path) -> dict[str, Any]:
    """Run kernels.train.train; observe whether governance refused it before step 1."""
    from kernels.train import TrainError, train

    try:
        train(cfg, out)
    except TrainError as e:
        msg = str(e)
        wrote = out.exists() and any(out.iterdir())
        return {"refused": "data governance" in msg, "message": msg, "wrote": wrote}
    return {"refused": False, "message": "", "trained": (out / "result.json").is_file()}


def _mlp_config(ctx: Any) -> Any:
    from kernels.train import TrainConfig

    steps = int(ctx.params.get("steps", 2))
    return TrainConfig(family="mlp", steps=steps, eval_every=steps, ckpt_every=steps, batch_size=16)


def trainer_refuses_denied_dataset(ctx: Any) -> dict[str, Any]:
    """kernels.train.train() on a dataset the policy denies (the shipped policy plus
    'digits' withdrawn) is refused before step 1 with nothing written, and the decision
    is an audit event; the same run under the shipped policy trains. Every dataset a run
    reads is judged, not only the one its config names: a language model whose
    tokenizer ('tokenizer-1024', its second dataset) is withdrawn is refused too."""
    import auditchain as kaudit
    from auditchain import verify_chain as harness_verify_chain
    from kernels.data.governance import DECISION_EVENT, default_policy_path
    from kernels.train import TrainConfig

    shipped = default_policy_path()
    pdoc = yaml.safe_load(shipped.read_text(encoding="utf-8"))

    def withdrawn(name: str) -> Path:
        doc = {**pdoc, "datasets": {**(pdoc.get("datasets") or {}), "deny": [name]}}
        path = ctx.scratch / f"policy-withdrawn-{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    log = ctx.scratch / "audit.jsonl"
    cfg = _mlp_config(ctx)
    lm = TrainConfig(family="gpt2", steps=1, eval_every=1, ckpt_every=1, batch_size=2)
    with _env(KERNELS_DATA_POLICY=withdrawn("digits"), KERNELS_AUDIT_LOG=log):
        refused = _train_attempt(cfg, ctx.scratch / "run-denied")
    with _env(KERNELS_DATA_POLICY=withdrawn("tokenizer-1024"), KERNELS_AUDIT_LOG=log):
        lm_refused = _train_attempt(lm, ctx.scratch / "run-lm-tokenizer-denied")
    with _env(KERNELS_DATA_POLICY=shipped, KERNELS_AUDIT_LOG=log):
        allowed = _train_attempt(cfg, ctx.scratch / "run-allowed")
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    _, _, problems = harness_verify_chain(log) if log.exists() else (None, 0, ["no log"])
    return {
        "refused": refused["refused"],
        "refusal_message": refused["message"],
        "refusal_names_rule": "datasets.deny 'digits'" in refused["message"],
        "refusal_one_line": one_line(refused["message"]),
        "refused_run_wrote_files": bool(refused.get("wrote", True)),
        "allowed_trained": bool(allowed.get("trained", False)),
        "second_dataset_refused": lm_refused["refused"]
        and "datasets.deny 'tokenizer-1024'" in lm_refused["message"],
        "second_dataset_message": lm_refused["message"][:300],
        "decisions_logged": [e.get("decision") for e in events],
        "chain_problems": len(problems),
    }


def trainer_refuses_pii_dataset(ctx: Any) -> dict[str, Any]:
    """kernels.train.train() on a copy of the datasets ($KERNELS_DATA_MANIFEST) refuses
    the digits set flagged pii: true, and a language model on the corpus with planted PII
    (digest re-recorded, pii: false), before step 1; after approve_pii records an
    approval for the digits' exact content, the same run trains. The corpus,
    approved and then changed (one more PII item, digest re-recorded), is refused
    again: an approval covers content, not a name."""
    import auditchain as kaudit
    from kernels.data.governance import DECISION_EVENT, approve_pii, default_policy_path
    from kernels.train import TrainConfig

    mpath = copy_datasets(ctx)
    edit_manifest(mpath, {"digits": {"pii": True}})
    rng = seeded_rng(ctx, int(ctx.params.get("plant_seed", 0)), 5)
    plant_in_corpus(mpath, list(ctx.params.get("plant_kinds", PII_KINDS)), rng)
    rerecord(mpath, "pystdlib")
    log = ctx.scratch / "audit.jsonl"
    cfg = _mlp_config(ctx)
    lm = TrainConfig(family="gpt2", steps=1, eval_every=1, ckpt_every=1, batch_size=2)
    env = {
        "KERNELS_DATA_MANIFEST": mpath,
        "KERNELS_DATA_POLICY": default_policy_path(),
        "KERNELS_AUDIT_LOG": log,
    }
    with _env(**env):
        mlp_refused = _train_attempt(cfg, ctx.scratch / "run-unapproved")
        lm_refused = _train_attempt(lm, ctx.scratch / "run-lm-pii")
        approve_pii(
            "digits",
            approver="data-protection-officer",
            reason="contract check: approved for the test",
            audit=log,
            manifest=mpath,
        )
        approved = _train_attempt(cfg, ctx.scratch / "run-approved")
        # an approval covers exact content: the corpus approved, then changed, is refused
        approve_pii(
            "pystdlib",
            approver="data-protection-officer",
            reason="contract check: approved, then the content changes",
            audit=log,
            manifest=mpath,
        )
        lm_approved = _train_attempt(lm, ctx.scratch / "run-lm-approved")
        plant_in_corpus(mpath, ["email"], rng)
        rerecord(mpath, "pystdlib")
        lm_changed = _train_attempt(lm, ctx.scratch / "run-lm-changed")
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    return {
        "unapproved_refused": mlp_refused["refused"] and "PII" in mlp_refused["message"],
        "unapproved_message": mlp_refused["message"],
        "unapproved_wrote_files": bool(mlp_refused.get("wrote", True)),
        "lm_planted_pii_refused": lm_refused["refused"] and "PII" in lm_refused["message"],
        "lm_message": lm_refused["message"][:300],
        "approved_trained": bool(approved.get("trained", False)),
        "lm_approved_trained": bool(lm_approved.get("trained", False)),
        "changed_after_approval_refused": lm_changed["refused"] and "PII" in lm_changed["message"],
        "decisions_logged": [e.get("decision") for e in events],
    }
