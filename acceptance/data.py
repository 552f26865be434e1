"""Checks of the data-governance contract (contracts/data.yaml).

Every check runs the real data layer (``kernels.data``) on the real shipped
datasets; anything it corrupts, plants or rewrites is a copy under ``ctx.scratch``
(datasets/ itself is never written). The checks observe; the contract's
``expect:`` judges.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PII_KINDS = ("email", "phone", "card", "ipv4", "ssn")
SHIPPED = ("pystdlib", "digits", "tokenizer-1024")


# ------------------------------------------------------------------ helpers
def _copy_datasets(ctx: Any, name: str = "datasets") -> Path:
    """A private copy of datasets/ (files and manifest); returns the copied manifest."""
    from kernels.data.manifest import datasets_root

    dst = ctx.scratch / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(datasets_root(), dst)
    return dst / "manifest.yaml"


def _edit_manifest(mpath: Path, edits: dict[str, dict[str, Any]]) -> None:
    """Update (or add, when the name is new) manifest entries in place."""
    doc = yaml.safe_load(mpath.read_text(encoding="utf-8"))
    by_name = {e["name"]: e for e in doc["datasets"]}
    for name, fields in edits.items():
        if name in by_name:
            by_name[name].update(fields)
        else:
            doc["datasets"].append({"name": name, **fields})
    mpath.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _rerecord(mpath: Path, name: str) -> str:
    """Record a dataset file's current sha256 and size in the (copied) manifest, as an
    owner who changed the data and rebuilt the manifest would."""
    from kernels.data.manifest import load_manifest, sha256_file

    entry = load_manifest(mpath).datasets[name]
    f = mpath.parent / entry.path
    digest = sha256_file(f)
    _edit_manifest(mpath, {name: {"sha256": digest, "size_bytes": f.stat().st_size}})
    return digest


def _one_line(msg: str) -> bool:
    return bool(msg) and "\n" not in msg


def _trainer_calls_gate() -> bool:
    """Whether kernels/train.py calls authorize_training (recorded, not judged: until it
    does, "training is refused" is shown on the gate the trainer is meant to call)."""
    import importlib.util

    spec = importlib.util.find_spec("kernels.train")
    if spec is None or spec.origin is None:
        return False
    return "authorize_training" in Path(spec.origin).read_text(encoding="utf-8")


def _rng(ctx: Any, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(ctx.seed) % (2**32), *[int(x) % (2**32) for x in extra]])


# ======================================================== AC-DATA-001 manifest
def manifest_matches_files(ctx: Any) -> dict[str, Any]:
    """Every manifest entry names its source, license and sha256, and matches its file;
    every data file under the manifest's directory is listed."""
    from kernels.data.manifest import DatasetError, load_manifest, verify_all

    mparam = ctx.params.get("manifest")
    mpath = (ctx.root / mparam) if mparam else None
    ignore = list(ctx.params.get("ignore", []))
    try:
        m = load_manifest(mpath)
    except DatasetError as e:
        return {"manifest_errors": 1, "error": str(e)[:300], "datasets": 0}
    status = verify_all(m)
    mismatched = {k: v for k, v in status.items() if v != "ok"}
    missing_fields: list[str] = []
    license_problems: list[str] = []
    size_mismatch: list[str] = []
    referenced: set[Path] = set()
    rows = []
    for ent in m.datasets.values():
        f = (m.root / ent.path).resolve()
        referenced.add(f)
        for key in ("source", "license", "sha256"):
            if not str(getattr(ent, key)).strip():
                missing_fields.append(f"{ent.name}.{key}")
        if f.is_file():
            # an independent digest (hashlib here, not the loader's helper)
            actual = hashlib.sha256(f.read_bytes()).hexdigest()
            if actual != ent.sha256:
                mismatched.setdefault(ent.name, f"sha256 {actual} != manifest {ent.sha256}")
            if f.stat().st_size != ent.size_bytes:
                size_mismatch.append(ent.name)
        if not ent.license_file:
            license_problems.append(f"{ent.name}: no license_file")
        else:
            lf = (m.root / ent.license_file).resolve()
            referenced.add(lf)
            want = ent.extra.get("license_sha256")
            if not lf.is_file():
                license_problems.append(f"{ent.name}: {ent.license_file} missing")
            elif want and hashlib.sha256(lf.read_bytes()).hexdigest() != want:
                license_problems.append(
                    f"{ent.name}: {ent.license_file} differs from license_sha256"
                )
        if ent.extra.get("files_list"):
            referenced.add((m.root / str(ent.extra["files_list"])).resolve())
        rows.append(
            {"name": ent.name, "license": ent.license, "sha256": ent.sha256, "ok": status[ent.name]}
        )
    unlisted = []
    for f in sorted(p for p in m.root.rglob("*") if p.is_file()):
        rel = f.relative_to(m.root).as_posix()
        if f.resolve() in referenced or any(fnmatch.fnmatch(rel, pat) for pat in ignore):
            continue
        unlisted.append(rel)
    ctx.attach_json("manifest-check.json", {"datasets": rows, "unlisted": unlisted})
    return {
        "manifest_errors": 0,
        "datasets": len(m.datasets),
        "mismatched": len(mismatched),
        "mismatched_names": sorted(mismatched),
        "missing_fields": len(missing_fields),
        "license_problems": len(license_problems),
        "size_mismatch": len(size_mismatch),
        "unlisted_files": len(unlisted),
        "unlisted": unlisted[:10],
    }


def _tamper(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) - max(1, len(data) // 10)]))
    elif how == "append":
        path.write_bytes(bytes(data) + b"\n")
    else:
        raise ValueError(f"unknown tamper {how!r}")


def _load_through_loader(name: str, mpath: Path) -> None:
    """Load dataset ``name`` the way the core does, from the (copied) manifest."""
    from kernels.data.manifest import dataset_path

    if name == "digits":
        from kernels.data.digits import load_digits

        load_digits(manifest=mpath)
    elif name == "pystdlib":
        from kernels.data.pipeline import ingest_corpus

        ingest_corpus(manifest=mpath)
    elif name == "tokenizer-1024":
        from kernels.data.tokenizer import ByteBPE

        ByteBPE.load(dataset_path(name, manifest=mpath))
    else:
        dataset_path(name, manifest=mpath).read_bytes()


def tampered_dataset_refused(ctx: Any) -> dict[str, Any]:
    """Copies of the datasets whose bytes differ from the manifest's sha256 are refused by
    the loaders with a one-line DatasetDigestError naming the file and both digests.
    Under a fault falsifier the injector corrupts each copy instead of the check."""
    from kernels.data.manifest import DatasetDigestError, load_manifest

    names = list(ctx.params.get("datasets", SHIPPED))
    tampers = ["fault"] if ctx.fault is not None else list(ctx.params.get("tampers", ["flip"]))
    mpath = _copy_datasets(ctx)
    m = load_manifest(mpath)
    originals = {n: (mpath.parent / m.datasets[n].path).read_bytes() for n in names}
    clean_errors = []
    for n in names:  # control: the untouched copies load
        try:
            _load_through_loader(n, mpath)
        except Exception as e:  # noqa: BLE001 - observed, not raised
            clean_errors.append(f"{n}: {type(e).__name__}: {e}")
    cases, refused, wrong_error, accepted, unclear = 0, 0, [], [], []
    examples: list[str] = []
    for n in names:
        f = mpath.parent / m.datasets[n].path
        for how in tampers:
            f.write_bytes(originals[n])
            if how == "fault":
                ctx.fault.inject(path=f)
            else:
                _tamper(f, how)
            if hashlib.sha256(f.read_bytes()).hexdigest() == m.datasets[n].sha256:
                raise RuntimeError(f"tampering {f} ({how}) left its digest unchanged")
            cases += 1
            try:
                _load_through_loader(n, mpath)
            except DatasetDigestError as e:
                refused += 1
                msg = str(e)
                clear = (
                    _one_line(msg)
                    and str(f.resolve()) in msg
                    and e.expected in msg
                    and e.actual in msg
                    and e.actual == hashlib.sha256(f.read_bytes()).hexdigest()
                )
                if not clear:
                    unclear.append(f"{n}/{how}")
                if len(examples) < 3:
                    examples.append(msg)
            except Exception as e:  # noqa: BLE001 - refused, but not by the digest check
                wrong_error.append(f"{n}/{how}: {type(e).__name__}: {str(e)[:120]}")
            else:
                accepted.append(f"{n}/{how}")
        f.write_bytes(originals[n])
    ctx.attach_json(
        "tamper-cases.json",
        {"examples": examples, "wrong_error": wrong_error, "accepted": accepted},
    )
    return {
        "clean_loaded": not clean_errors,
        "clean_errors": clean_errors[:3],
        "cases": cases,
        "refused": refused,
        "not_refused": cases - refused,
        "accepted": len(accepted),
        "wrong_error": len(wrong_error),
        "unclear_messages": len(unclear),
        "example": examples[0] if examples else "",
    }


# ============================================================= AC-DATA-002 PII
_FIRST = ["anna", "jonas", "mei", "omar", "lucia", "piotr", "sven", "aiko", "raj", "zoe"]
_DOMAINS = ["mailbox.org", "corp-mail.net", "uni-hamburg.de", "gmail.com", "outlook.fr"]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _digits(rng: np.random.Generator, k: int) -> str:
    return "".join(str(int(x)) for x in rng.integers(0, 10, k))


def make_pii(kind: str, rng: np.random.Generator) -> str:
    """One realistic PII string of ``kind`` (a valid card passes Luhn)."""
    if kind == "email":
        a, b = rng.choice(_FIRST, 2)
        return f"{a}.{b}{int(rng.integers(1, 99))}@{rng.choice(_DOMAINS)}"
    if kind == "phone":
        a3 = f"{int(rng.integers(201, 989))}"
        b3, c4 = f"{int(rng.integers(200, 999))}", f"{int(rng.integers(0, 9999)):04d}"
        fmt = int(rng.integers(0, 4))
        if fmt == 0:
            return f"+1 {a3} {b3} {c4}"
        if fmt == 1:
            return f"({a3}) {b3}-{c4}"
        if fmt == 2:
            return f"{a3}-{b3}-{c4}"
        return f"+44 20 {int(rng.integers(1000, 9999))} {int(rng.integers(1000, 9999))}"
    if kind == "card":
        fmt = int(rng.integers(0, 4))
        if fmt == 3:  # Amex 4-6-5
            body = "37" + _digits(rng, 12)
            n = body + _luhn_digit(body)
            return f"{n[:4]} {n[4:10]} {n[10:]}"
        body = rng.choice(["4", "51", "55"]) + ""
        body = body + _digits(rng, 15 - len(body))
        n = body + _luhn_digit(body)
        if fmt == 0:
            return n
        sep = " " if fmt == 1 else "-"
        return sep.join(n[i : i + 4] for i in range(0, 16, 4))
    if kind == "ipv4":
        a = int(rng.choice([10, 23, 46, 81, 100, 145, 172, 185, 192, 213]))
        b, c, d = (int(x) for x in rng.integers(0, 256, 3))
        if (a, b, c) in ((192, 0, 2), (198, 51, 100), (203, 0, 113)):
            c = 1
        return f"{a}.{b}.{c}.{max(d, 1)}"
    if kind == "ssn":
        area = int(rng.integers(1, 900))
        area = 667 if area == 666 else area
        return f"{area:03d}-{int(rng.integers(1, 100)):02d}-{int(rng.integers(1, 10000)):04d}"
    raise ValueError(f"unknown PII kind {kind!r}")


def make_decoy(kind: str, rng: np.random.Generator) -> str:
    """A string that looks like ``kind`` but is not PII by the scanner's rules."""
    if kind == "card":  # fails Luhn
        body = "4" + _digits(rng, 14)
        bad = str((int(_luhn_digit(body)) + 1 + int(rng.integers(0, 8))) % 10)
        n = body + bad
        return " ".join(n[i : i + 4] for i in range(0, 16, 4))
    if kind == "ipv4":  # an octet above 255
        a, b, d = int(rng.integers(10, 200)), int(rng.integers(256, 999)), int(rng.integers(1, 255))
        return f"{a}.{b}.1.{d}"
    if kind == "ssn":  # area 000 / 666 / 9xx
        area = rng.choice(["000", "666", f"9{int(rng.integers(0, 99)):02d}"])
        return f"{area}-{int(rng.integers(1, 100)):02d}-{int(rng.integers(1, 10000)):04d}"
    if kind == "email":  # a reserved example domain
        return f"{rng.choice(_FIRST)}@example.com"
    if kind == "phone":  # a bare digit run is not a phone
        return _digits(rng, 7)
    raise ValueError(f"unknown PII kind {kind!r}")


def _insert_at_newline(text: str, item: str, rng: np.random.Generator) -> tuple[str, int]:
    """``text`` with `` item `` inserted before a newline; returns (new text, offset)."""
    cands = [i for i, ch in enumerate(text) if ch == "\n"] or [len(text)]
    pos = int(cands[int(rng.integers(0, len(cands)))])
    new = text[:pos] + " " + item + " " + text[pos:]
    return new, pos + 1


def pii_scanner_finds_planted(ctx: Any) -> dict[str, Any]:
    """PII planted in copies of real corpus documents is found (right kind, right span);
    look-alikes that are not PII (Luhn-invalid cards, bad octets, reserved SSN areas,
    example.com) are not reported; the shipped corpus scans clean."""
    from kernels.data import pii
    from kernels.data.pipeline import ingest_corpus

    kinds = list(ctx.params.get("kinds", PII_KINDS))
    per_kind = int(ctx.params.get("per_kind", 3))
    rng = _rng(ctx, int(ctx.params.get("plant_seed", 0)), 1)
    docs = [d for d in ingest_corpus() if len(d.text) > 200]
    clean_findings = len(pii.scan_documents(docs))
    planted, missed, wrong = 0, [], []
    decoys, decoys_reported = 0, []
    order = rng.permutation(len(docs))
    k = 0
    for kind in kinds:
        for _ in range(per_kind):
            doc = docs[int(order[k % len(order)])]
            k += 1
            item = make_pii(kind, rng)
            text, off = _insert_at_newline(doc.text, item, rng)
            found = pii.scan_text(text, doc_id=doc.id)
            planted += 1
            hit = [f for f in found if f.offset == off and f.length == len(item)]
            if not hit:
                missed.append(f"{kind}: {item!r}")
            elif hit[0].kind != kind:
                wrong.append(f"{kind} reported as {hit[0].kind}: {item!r}")
        doc = docs[int(order[k % len(order)])]
        k += 1
        decoy = make_decoy(kind, rng)
        text, off = _insert_at_newline(doc.text, decoy, rng)
        decoys += 1
        if any(off <= f.offset < off + len(decoy) for f in pii.scan_text(text)):
            decoys_reported.append(f"{kind}: {decoy!r}")
    ctx.attach_json(
        "pii-scan.json",
        {"missed": missed, "wrong_kind": wrong, "decoys_reported": decoys_reported},
    )
    return {
        "kinds": len(kinds),
        "planted": planted,
        "missed": len(missed),
        "missed_examples": missed[:5],
        "wrong_kind": len(wrong),
        "decoys": decoys,
        "decoys_reported": len(decoys_reported),
        "decoy_examples": decoys_reported[:5],
        "clean_corpus_findings": clean_findings,
    }


def _plant_in_corpus(mpath: Path, kinds: list[str], rng: np.random.Generator) -> list[str]:
    """Plant one PII item of each kind in the copied corpus (between lines); returns them."""
    from kernels.data.manifest import load_manifest

    f = mpath.parent / load_manifest(mpath).datasets["pystdlib"].path
    text = f.read_text(encoding="utf-8")
    items = []
    for kind in kinds:
        item = make_pii(kind, rng)
        text, _ = _insert_at_newline(text, item, rng)
        items.append(item)
    f.write_text(text, encoding="utf-8")
    return items


def pii_dataset_blocked(ctx: Any) -> dict[str, Any]:
    """A PII-flagged dataset (scanner findings in a copy whose manifest was re-recorded
    with pii: false, or a manifest pii: true) is refused by authorize_training until
    an approval for exactly its content is in the audit log; stale and forged
    approvals do not count; every decision is an audit event and the chain verifies."""
    from harness.audit import verify_chain as harness_verify_chain
    from kernels.data import audit as kaudit
    from kernels.data.governance import (
        APPROVAL_EVENT,
        DECISION_EVENT,
        GovernanceError,
        approve_pii,
        authorize_training,
    )

    kinds = list(ctx.params.get("plant_kinds", PII_KINDS))
    rng = _rng(ctx, int(ctx.params.get("plant_seed", 0)), 2)
    mpath = _copy_datasets(ctx)
    items = _plant_in_corpus(mpath, kinds, rng)
    _rerecord(mpath, "pystdlib")  # the owner rebuilt the manifest but left pii: false
    _edit_manifest(mpath, {"digits": {"pii": True}})  # flagged by the manifest alone
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
    _plant_in_corpus(mpath, kinds[:1], rng)
    _rerecord(mpath, "pystdlib")
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
        "messages_one_line": all(_one_line(m) for m in messages),
        "messages_name_pii": all("PII" in m for m in messages),
        "trainer_calls_gate": _trainer_calls_gate(),
    }


# ========================================================== AC-DATA-003 policy
def policy_enforced(ctx: Any) -> dict[str, Any]:
    """The shipped policy allows the shipped datasets and refuses datasets whose
    license or source it denies or does not allow, or whose name it withdraws, naming
    the rule; every decision, allowed or refused, is a hash-chained audit event."""
    from harness.audit import verify_chain as harness_verify_chain
    from kernels.data import audit as kaudit
    from kernels.data.governance import (
        DECISION_EVENT,
        GovernanceError,
        authorize_training,
        default_policy_path,
    )

    mpath = _copy_datasets(ctx)
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
    _edit_manifest(mpath, edits)
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
            elif not (_one_line(r["message"]) and name in r["message"] and rule in r["message"]):
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


# ======================================================== AC-DATA-004 pipeline
def _ngrams(text: str, n: int) -> set[tuple[bytes, ...]]:
    w = text.encode("utf-8").split()
    return set(zip(*[w[i:] for i in range(n)], strict=False))


def pipeline_invariants(ctx: Any) -> dict[str, Any]:
    """Run the real pipeline on the shipped corpus with eval passages planted in train
    documents and duplicates added; then: no duplicates remain, no n-gram is shared
    between train and eval (an exact recomputation on word tuples, not the kernel's
    hashes), the shards hold every final document exactly once, and the stats equal
    their recomputation from the shards (and the manifest's, on the unplanted corpus)."""
    from kernels.data.manifest import load_manifest
    from kernels.data.pipeline import (
        Document,
        clean,
        deduplicate,
        ingest_corpus,
        recompute_stats,
        run_pipeline,
        shipped_tokenizer,
        split_documents,
    )

    n = int(ctx.params.get("n", 13))
    count = int(ctx.params.get("plant_count", 3))
    L = max(n, int(ctx.params.get("passage_words", 2 * n)))
    ws = str(ctx.params.get("whitespace", "original"))
    dup_count = int(ctx.params.get("dup_count", 2))
    rng = _rng(ctx, int(ctx.params.get("plant_seed", 0)), 4)
    tok = shipped_tokenizer() if ctx.params.get("with_tokens", True) else None

    docs = ingest_corpus()
    cleaned, _ = clean(docs)
    deduped, _ = deduplicate(cleaned)
    train0, eval0 = split_documents(deduped)
    eval_long = [d for d in eval0 if len(d.text.split()) >= L]
    train_ids = [d.id for d in train0 if len(d.text) > 200]
    idx = {d.id: i for i, d in enumerate(docs)}
    planted_ids: list[str] = []
    for _ in range(count):
        src = eval_long[int(rng.integers(0, len(eval_long)))]
        words = src.text.split()
        start = int(rng.integers(0, len(words) - L + 1))
        if ws == "original":  # the passage exactly as in the eval document
            spans = [m.span() for m in re.finditer(r"\S+", src.text)]
            passage = src.text[spans[start][0] : spans[start + L - 1][1]]
        else:
            seps = {"space": [" "], "newline": ["\n"], "mixed": [" ", "\t", "\n", "  "]}[ws]
            passage = words[start]
            for w in words[start + 1 : start + L]:
                passage += seps[int(rng.integers(0, len(seps)))] + w
        target = train_ids[int(rng.integers(0, len(train_ids)))]
        d = docs[idx[target]]
        text, _ = _insert_at_newline(d.text, passage, rng)
        docs[idx[target]] = Document(d.id, text, d.source)
        planted_ids.append(d.id)
    dup_ids = []
    for k in range(dup_count):
        d = docs[idx[train_ids[int(rng.integers(0, len(train_ids)))]]]
        text = d.text.replace(" ", "  ", 3) if k % 2 else d.text
        docs.append(Document(f"{d.source}#dup{k}", text, d.source))
        dup_ids.append(f"{d.source}#dup{k}")

    res = run_pipeline(docs, n=n, tokenizer=tok)
    final = res.train + res.val
    final_ids = [d.id for d in final]

    def dups(ds: list[Any]) -> int:
        c = Counter(" ".join(d.text.split()) for d in ds)
        return sum(v - 1 for v in c.values() if v > 1)

    train_ngrams: set[tuple[bytes, ...]] = set()
    for d in res.train:
        train_ngrams |= _ngrams(d.text, n)
    shared = 0
    for d in res.val:
        shared += len(_ngrams(d.text, n) & train_ngrams)
    in_shards = Counter(i for s in res.shards for i in s.doc_ids)
    split_of = {d.id: "train" for d in res.train} | {d.id: "val" for d in res.val}
    wrong_split = sum(1 for s in res.shards for i in s.doc_ids if split_of.get(i) != s.split)
    try:
        again = recompute_stats(res.shards, {d.id: d for d in final}, tok)
        shard_digest_error = ""
    except (ValueError, KeyError) as e:
        again, shard_digest_error = {}, str(e)
    stats_mismatch = [k for k in ("train", "val", "all") if again.get(k) != res.stats.get(k)]
    direct = {
        "train": (len(res.train), sum(len(d.text.encode()) for d in res.train)),
        "val": (len(res.val), sum(len(d.text.encode()) for d in res.val)),
    }
    for split, (nd, nb) in direct.items():
        if (res.stats[split].docs, res.stats[split].bytes) != (nd, nb):
            stats_mismatch.append(f"{split}-direct")
    manifest_mismatch = []
    if ctx.params.get("manifest_stats", True):
        entry = load_manifest().datasets["pystdlib"]
        clean_run = run_pipeline(None, tokenizer=None)
        want_docs, want_bytes = entry.splits, entry.extra.get("bytes_after_pipeline", {})
        for split in ("train", "val"):
            if clean_run.stats[split].docs != want_docs.get(split):
                manifest_mismatch.append(f"{split}.docs")
            if clean_run.stats[split].bytes != want_bytes.get(split):
                manifest_mismatch.append(f"{split}.bytes")
    ctx.metric("docs_after_stage", len(res.ingested), step=0)
    ctx.metric("docs_after_stage", len(res.cleaned), step=1)
    ctx.metric("docs_after_stage", len(res.deduped), step=2)
    ctx.metric("docs_after_stage", len(final), step=3)
    ctx.attach_json("pipeline-summary.json", res.summary())
    return {
        "documents": len(final),
        "duplicates_after_dedupe": dups(res.deduped),
        "duplicates_final": dups(final),
        "planted_duplicates_kept": sum(1 for i in dup_ids if i in final_ids),
        "shared_ngrams": shared,
        "planted_contaminated": len(planted_ids),
        "planted_contaminated_kept": sum(1 for i in planted_ids if i in split_of),
        "decontaminate_removed": res.removed_counts.get("decontaminate", 0),
        "shard_missing": sum(1 for i in final_ids if in_shards[i] == 0),
        "shard_duplicated": sum(1 for v in in_shards.values() if v > 1),
        "shard_foreign": sum(1 for i in in_shards if i not in split_of),
        "shard_wrong_split": wrong_split,
        "shard_digest_error": shard_digest_error,
        "stats_mismatch": len(stats_mismatch),
        "stats_mismatch_where": stats_mismatch,
        "manifest_stats_mismatch": len(manifest_mismatch),
    }


# =========================================================== AC-DATA-005 drift
def _digits_with_ref() -> tuple[np.ndarray, dict[str, Any]]:
    from kernels.data.digits import load_digits
    from kernels.data.manifest import load_manifest

    X, _ = load_digits()
    e = load_manifest().datasets["digits"]
    return X, {"name": e.name, "sha256": e.sha256}


def _iid_split(X: np.ndarray, seed: int, n_ref: int, n_cur: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.random.default_rng(seed).permutation(X.shape[0])
    return X[p[:n_ref]], X[p[n_ref : n_ref + n_cur]].copy()


def _detector(ref: np.ndarray, ctx: Any, dataset: dict[str, Any]) -> Any:
    from kernels.data.drift import DriftDetector, digit_block_slices

    return DriftDetector(
        ref,
        digit_block_slices(int(ctx.params.get("block", 2))),
        bins=int(ctx.params.get("bins", 10)),
        alpha=float(ctx.params.get("alpha", 0.01)),
        psi_threshold=float(ctx.params.get("psi_threshold", 0.1)),
        dataset=dataset,
    )


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [round(c / total, 4) for c in counts]


def _shift(cur: np.ndarray, idx: list[int], delta: float) -> np.ndarray:
    cur[:, idx] = np.clip(cur[:, idx] + np.float32(delta), 0.0, 1.0)
    return cur


def drift_detected(ctx: Any) -> dict[str, Any]:
    """A brightness shift of one 2x2 pixel block of the digits, of every declared size
    from shift_min to shift_max, on an i.i.d. sample, raises an alert whose most
    drifted slice is the shifted block, with a retrain suggestion naming the dataset."""
    from kernels.data.drift import digit_block_slices

    X, dsref = _digits_with_ref()
    slices = digit_block_slices(int(ctx.params.get("block", 2)))
    names = list(slices)
    lo, hi = float(ctx.params["shift_min"]), float(ctx.params["shift_max"])
    if "shift_position" in ctx.params:
        sizes = [lo + float(ctx.params["shift_position"]) * (hi - lo)]
    else:
        sizes = [float(x) for x in np.linspace(lo, hi, int(ctx.params.get("shift_steps", 3)))]
    blocks = list(ctx.params.get("blocks", range(len(names))))
    seeds = int(ctx.params.get("seeds", 2))
    base = int(ctx.params.get("split_seed", 0))
    n_ref, n_cur = int(ctx.params.get("n_ref", 1257)), int(ctx.params.get("n_cur", 270))
    trials, detected, named, with_ref = 0, 0, 0, 0
    misses: list[str] = []
    first = None
    for si, delta in enumerate(sizes):
        for b in blocks:
            for s in range(seeds):
                seed = base + 7919 * si + 104729 * int(b) + s
                ref, cur = _iid_split(X, seed, n_ref, n_cur)
                rep = _detector(ref, ctx, dsref).detect(_shift(cur, slices[names[b]], delta))
                trials += 1
                detected += rep.alert
                ok = bool(rep.drifted) and rep.drifted[0] == names[b]
                named += ok
                sug = rep.retrain_suggestion()
                with_ref += bool(sug and sug["dataset"] == dsref and names[b] in sug["slices"])
                if not ok:
                    misses.append(f"delta={delta:.3f} block={names[b]} seed={seed}: {rep.drifted}")
                if ok and si == 0:  # keep the least degenerate reference for the chart
                    sd = next(x for x in rep.slices if x.name == names[b])
                    peak = max(sd.ref_counts) / sum(sd.ref_counts)
                    if first is None or peak < first[0]:
                        first = (peak, rep, sd)
    if first is not None:
        _, rep, sd = first
        ctx.metric(
            f"share of rows per bin, drifted slice '{sd.name}' (shift {sizes[0]:.2f})",
            _shares(sd.cur_counts),
            kind="histogram",
            reference=_shares(sd.ref_counts),
        )
        ctx.attach_json("drift-report.json", rep.to_dict())
    # the power curve below the declared size: evidence, not judged
    for delta in ctx.params.get("power_curve", []):
        hits = 0
        for s in range(len(names)):
            ref, cur = _iid_split(X, 555 + s, n_ref, n_cur)
            rep = _detector(ref, ctx, dsref).detect(_shift(cur, slices[names[s]], float(delta)))
            hits += bool(rep.drifted) and rep.drifted[0] == names[s]
        ctx.metric("detection_rate_by_shift_x100", hits / len(names), step=round(100 * delta))
    return {
        "trials": trials,
        "shift_min_tested": min(sizes),
        "detection_rate": detected / trials,
        "named_slice_rate": named / trials,
        "retrain_with_dataset_rate": with_ref / trials,
        "misses": misses[:5],
    }


def drift_quiet_on_iid(ctx: Any) -> dict[str, Any]:
    """Over many seeds, i.i.d. resamples of the digits (disjoint rows, same
    distribution) raise an alert at a rate below the declared bound."""
    X, dsref = _digits_with_ref()
    trials = int(ctx.params.get("trials", 300))
    n_ref, n_cur = int(ctx.params.get("n_ref", 1257)), int(ctx.params.get("n_cur", 270))
    alarms = 0
    max_psi = 0.0
    first = None
    for s in range(trials):
        ref, cur = _iid_split(X, int(ctx.seed) % (2**31) + s, n_ref, n_cur)
        rep = _detector(ref, ctx, dsref).detect(cur)
        alarms += rep.alert
        max_psi = max(max_psi, max(x.psi for x in rep.slices))
        if first is None:
            first = rep
    assert first is not None
    sd = max(first.slices, key=lambda x: x.psi)
    ctx.metric(
        f"share of rows per bin, i.i.d. resample, slice '{sd.name}'",
        _shares(sd.cur_counts),
        kind="histogram",
        reference=_shares(sd.ref_counts),
    )
    return {
        "trials": trials,
        "false_alarms": alarms,
        "false_alarm_rate": alarms / trials,
        "max_psi_iid": round(max_psi, 4),
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
    is an audit event; the same run under the shipped policy trains."""
    from harness.audit import verify_chain as harness_verify_chain
    from kernels.data import audit as kaudit
    from kernels.data.governance import DECISION_EVENT, default_policy_path

    shipped = default_policy_path()
    denied = ctx.scratch / "policy-withdrawn.yaml"
    pdoc = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    pdoc.setdefault("datasets", {})["deny"] = ["digits"]
    denied.write_text(yaml.safe_dump(pdoc, sort_keys=False), encoding="utf-8")
    log = ctx.scratch / "audit.jsonl"
    cfg = _mlp_config(ctx)
    with _env(KERNELS_DATA_POLICY=denied, KERNELS_AUDIT_LOG=log):
        refused = _train_attempt(cfg, ctx.scratch / "run-denied")
    with _env(KERNELS_DATA_POLICY=shipped, KERNELS_AUDIT_LOG=log):
        allowed = _train_attempt(cfg, ctx.scratch / "run-allowed")
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    _, _, problems = harness_verify_chain(log) if log.exists() else (None, 0, ["no log"])
    return {
        "refused": refused["refused"],
        "refusal_message": refused["message"],
        "refusal_names_rule": "datasets.deny 'digits'" in refused["message"],
        "refusal_one_line": _one_line(refused["message"]),
        "refused_run_wrote_files": bool(refused.get("wrote", True)),
        "allowed_trained": bool(allowed.get("trained", False)),
        "decisions_logged": [e.get("decision") for e in events],
        "chain_problems": len(problems),
    }


def trainer_refuses_pii_dataset(ctx: Any) -> dict[str, Any]:
    """kernels.train.train() on a copy of the datasets ($KERNELS_DATA_MANIFEST) refuses
    the digits set flagged pii: true, and a language model on the corpus with planted PII
    (digest re-recorded, pii: false), before step 1; after approve_pii records an
    approval for the digits' exact content, the same run trains."""
    from kernels.data import audit as kaudit
    from kernels.data.governance import DECISION_EVENT, approve_pii, default_policy_path
    from kernels.train import TrainConfig

    mpath = _copy_datasets(ctx)
    _edit_manifest(mpath, {"digits": {"pii": True}})
    rng = _rng(ctx, int(ctx.params.get("plant_seed", 0)), 5)
    _plant_in_corpus(mpath, list(ctx.params.get("plant_kinds", PII_KINDS)), rng)
    _rerecord(mpath, "pystdlib")
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
    events = [e for e in kaudit.read_events(log) if e.get("event") == DECISION_EVENT]
    return {
        "unapproved_refused": mlp_refused["refused"] and "PII" in mlp_refused["message"],
        "unapproved_message": mlp_refused["message"],
        "unapproved_wrote_files": bool(mlp_refused.get("wrote", True)),
        "lm_planted_pii_refused": lm_refused["refused"] and "PII" in lm_refused["message"],
        "lm_message": lm_refused["message"][:300],
        "approved_trained": bool(approved.get("trained", False)),
        "decisions_logged": [e.get("decision") for e in events],
    }
