"""Hostile bundles: each test is an attack on a sealed, signed bundle.

- Every file on disk is covered: a flipped byte anywhere is named by ``verify``,
  and a file added at any name or depth is reported, dotfiles, nested seal names,
  links, pipes and empty folders included. The audit log is split on ``\\n`` only.
  ``verdict.dsse.json`` has exactly the writer's shape and bytes, and results.json
  must tell the signed verdict's verdicts.
- ``rerun`` (and ``promote``) verify the bundle before using it: an edited stored
  contract never runs.
- A payload of any JSON shape, even validly signed, is a list of problems (exit 1),
  never a crash (exit 3); signature problems come first.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from auditchain import verify_lines
from harness.cli import cli
from harness.evidence import build_manifest
from harness.fsutil import dumps_json, sha256_file
from harness.loader import load_contract_set
from harness.runner import run_contracts
from harness.signing import (
    STATEMENT_TYPE,
    VERDICT_TYPE,
    canonical_json,
    generate_keypair,
    load_public_key,
    load_signer,
    make_envelope,
)
from harness.verify import verify_run

from .conftest import CHECKS, PYPROJECT, Project, simple_contract

CID = "AC-DEMO-001"

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair(d / "signing.key")
    other_priv, other_pub = generate_keypair(d / "other.key")
    return {"priv": priv, "pub": pub, "other_priv": other_priv, "other_pub": other_pub}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Path:
    """One signed, complete bundle of two criteria, with logs, metrics and an artifact.
    Built once; tests attack copies of it."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "demochecks.py").write_text(CHECKS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.syspath_prepend(str(root))
        project = Project(root)
        project.contract("a", simple_contract(check="demochecks:noisy"))
        project.contract(
            "b",
            simple_contract(cid="AC-TWO-001", inv="INV-TWO-001").replace(
                "name: ac-two-001", "name: two"
            ),
        )
        project.commit()
        contracts = load_contract_set([root / "contracts"])
        result = run_contracts(
            contracts,
            contracts.criteria,
            jobs=2,
            seed=5,
            root=root,
            evidence_root=root / "evidence",
            signer=load_signer(keys["priv"]),
        )
    run_dir = Path(result.evidence_dir)
    assert verify_run(run_dir, [load_public_key(keys["pub"])]) == []
    return run_dir


@pytest.fixture
def bundle(sealed: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(sealed, copy, symlinks=True)
    return copy


def problems(run_dir: Path, keys: dict[str, Path], which: str = "pub") -> list[str]:
    return verify_run(run_dir, [load_public_key(keys[which])])


def names(found: list[str], path: Path) -> bool:
    return any(p.startswith(f"{path}:") for p in found)


def files_on_disk(root: Path) -> list[Path]:
    """Every file under ``root`` as the filesystem has it (not as a manifest says)."""
    return sorted(Path(d, f).relative_to(root) for d, _, files in os.walk(root) for f in files)


@contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Put the files back as they were after one attack."""
    saved = {p: p.read_bytes() for p in paths}
    try:
        yield
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


@contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    def fail(*_: Any) -> None:
        raise AssertionError(f"verify hung for {seconds}s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- re-signing with the test's own (trusted) key: the signatures are valid


def sign_verdict(run_dir: Path, keys: dict[str, Path], payload: bytes, which: str = "priv") -> None:
    signer = load_signer(keys[which])
    (run_dir / "verdict.json").write_bytes(payload)
    envelope = make_envelope(payload, VERDICT_TYPE, signer)
    (run_dir / "verdict.dsse.json").write_text(dumps_json(envelope))


def edit_verdict(
    run_dir: Path, keys: dict[str, Path], edit: Callable[[dict[str, Any]], Any], which: str = "priv"
) -> None:
    verdict = json.loads((run_dir / "verdict.json").read_bytes())
    sign_verdict(run_dir, keys, canonical_json(edit(verdict)), which)


def sign_statement(run_dir: Path, keys: dict[str, Path], payload: bytes, cid: str = CID) -> None:
    """Replace a criterion's statement and re-sign the verdict to match (a consistent
    re-sign with the trusted key: only the payload's shape can be wrong)."""
    folder = run_dir / "criteria" / cid
    (folder / "statement.json").write_bytes(payload)
    envelope = make_envelope(payload, STATEMENT_TYPE, load_signer(keys["priv"]))
    (folder / "statement.dsse.json").write_text(dumps_json(envelope))
    digest = sha256_file(folder / "statement.dsse.json")

    def point_at_it(v: dict[str, Any]) -> dict[str, Any]:
        v["criteria"][cid]["envelope_sha256"] = digest
        return v

    edit_verdict(run_dir, keys, point_at_it)


def reseal_criterion(
    run_dir: Path, keys: dict[str, Path], manifest: bytes | None = None, cid: str = CID
) -> None:
    """Seal a criterion folder again as it now is (or with the given manifest bytes):
    manifest, statement and verdict all re-signed with the trusted key."""
    folder = run_dir / "criteria" / cid
    if manifest is None:
        manifest = dumps_json(build_manifest(folder)).encode()
    (folder / "manifest.json").write_bytes(manifest)
    statement = json.loads((folder / "statement.json").read_bytes())
    for entry in statement["predicate"]["configuration"]:
        if entry["name"] == "manifest.json":
            entry["digest"]["sha256"] = sha256_file(folder / "manifest.json")
    sign_statement(run_dir, keys, canonical_json(statement), cid)


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_bytes()))))


# --------------------------------------------------------------------------- finding 4


def test_flipping_a_byte_of_any_file_on_disk_names_that_file(bundle, keys):
    files = files_on_disk(bundle)
    assert len(files) > 15
    assert Path("criteria", CID, "artifacts", "INV-DEMO-001", "thing.bin") in files
    for rel in files:
        target = bundle / rel
        data = target.read_bytes()
        for at in sorted({0, len(data) // 2, len(data) - 1}):
            with restored(target):
                flipped = bytearray(data or b"\0")  # an empty file gains a byte
                flipped[at] ^= 0x01
                target.write_bytes(bytes(flipped))
                found = problems(bundle, keys)
            assert names(found, target), f"byte {at} of {rel} flipped, not named: {found}"
    assert problems(bundle, keys) == []


ADDED = [
    ".hidden",
    "manifest.json",
    "statement.json",
    "statement.dsse.json",
    "verdict.dsse.json.sig",
    ".git/config",
    "a/b/c/d/e/f/g.txt",
    "contracts/.hidden.yaml",
    "contracts/manifest.json",
    "contracts/sub/evil.yaml",
    "checks/INV-DEMO-001/stdout.txt",
    "criteria/.hidden",
    "criteria/README",
    "criteria/AC-NEW-001/statement.json",
    f"criteria/{CID}/.hidden",
    f"criteria/{CID}/logs/.keep",
    f"criteria/{CID}/logs/manifest.json",
    f"criteria/{CID}/sub/statement.dsse.json",
    f"criteria/{CID}/artifacts/INV-DEMO-001/statement.json",
    f"criteria/{CID}/artifacts/INV-DEMO-001/statement.dsse.json",
    f"criteria/{CID}/artifacts/INV-DEMO-001/manifest.json",
    f"criteria/{CID}/artifacts/X/Y/Z/.statement.json",
    "criteria/AC-TWO-001/verdict.json.orig",
]


@pytest.mark.parametrize("where", ADDED)
def test_a_file_added_at_any_name_or_depth_is_reported(bundle, keys, where):
    target = bundle / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"planted")
    found = problems(bundle, keys)
    assert names(found, target), found
    assert any("unexpected" in p for p in found if p.startswith(f"{target}:")), found


SEGMENTS = [
    "manifest.json",
    "statement.json",
    "statement.dsse.json",
    "verdict.json",
    ".hidden",
    "criteria",
    CID,
    "AC-TWO-001",
    "artifacts",
    "INV-DEMO-001",
    "logs",
    "contracts",
    "checks",
    "x",
]


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(parts=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
def test_a_file_added_at_a_generated_path_is_reported(sealed, keys, parts):
    rel = Path(*parts)
    prefixes = [sealed / Path(*parts[:n]) for n in range(1, len(parts))]
    assume(not (sealed / rel).exists() and not any(p.is_file() for p in prefixes))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp, "bundle")
        shutil.copytree(sealed, copy, symlinks=True)
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(b"planted")
        found = problems(copy, keys)
        assert names(found, copy / rel), (rel, found)


def _symlink_to_copy(bundle: Path, rel: str) -> Path:
    """Replace a file (or folder) by a link to an identical copy outside the bundle:
    every digest still matches."""
    target = bundle / rel
    outside = bundle.parent / "outside" / rel
    outside.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        shutil.copytree(target, outside)
        shutil.rmtree(target)
    else:
        shutil.copyfile(target, outside)
        target.unlink()
    target.symlink_to(outside)
    return target


def _fifo(bundle: Path, rel: str) -> Path:
    target = bundle / rel
    if target.exists():
        target.unlink()
    os.mkfifo(target)
    return target


def _empty_folder(bundle: Path, rel: str) -> Path:
    (bundle / rel).mkdir(parents=True)
    return bundle / rel


ODD_ENTRIES = [
    (_symlink_to_copy, f"criteria/{CID}/logs/INV-DEMO-001.stdout.txt"),
    (_symlink_to_copy, f"criteria/{CID}/artifacts/INV-DEMO-001/thing.bin"),
    (_symlink_to_copy, "results.json"),
    (_symlink_to_copy, "audit.jsonl"),
    (_symlink_to_copy, "criteria/AC-TWO-001"),
    (_symlink_to_copy, "contracts"),
    (_fifo, "verdict.dsse.json"),
    (_fifo, "run.json"),
    (_fifo, "audit.jsonl"),
    (_fifo, f"criteria/{CID}/manifest.json"),
    (_fifo, f"criteria/{CID}/statement.dsse.json"),
    (_fifo, f"criteria/{CID}/logs/pipe"),
    (_fifo, "pipe"),
    (_empty_folder, "empty"),
    (_empty_folder, f"criteria/{CID}/artifacts/empty"),
    (_empty_folder, "criteria/AC-NEW-001"),
]


@pytest.mark.parametrize(
    "make, rel", ODD_ENTRIES, ids=[f"{m.__name__}:{r}" for m, r in ODD_ENTRIES]
)
def test_links_pipes_and_empty_folders_are_reported_without_hanging(bundle, keys, make, rel):
    target = make(bundle, rel)
    with no_hang():
        found = problems(bundle, keys)
    assert names(found, target), found


def _audit_lines(bundle: Path) -> list[bytes]:
    return (bundle / "audit.jsonl").read_bytes().split(b"\n")


@pytest.mark.parametrize(
    "attack",
    [
        lambda data: data.replace(b"\n", b"\r", 1),  # two lines become one
        lambda data: data.replace(b"\n", b"\r\n"),  # CRLF endings
        lambda data: data[:-1],  # the last line loses its newline
        lambda data: data + b"\n",  # an empty line at the end
        lambda data: data.replace(b"\n", b"\n\n", 1),  # an empty line inside
    ],
    ids=["lf-to-cr", "crlf", "partial-last-line", "trailing-empty-line", "empty-line"],
)
def test_audit_lines_end_with_a_newline_and_nothing_else(bundle, keys, attack):
    audit = bundle / "audit.jsonl"
    audit.write_bytes(attack(audit.read_bytes()))
    assert names(problems(bundle, keys), audit)


def test_audit_chain_is_split_on_newline_only():
    first = json.dumps({"seq": 0, "prev": "0" * 64}).encode()
    head, count, found = verify_lines(first + b"\n")
    assert (count, found) == (1, [])
    assert verify_lines(first + b"\r")[2]  # not a line ending
    assert verify_lines(first)[2] == ["line 1: no newline at its end (a partial line)"]
    assert verify_lines(b"[1]\n")[2] == ["line 1: not a JSON object"]
    assert "seq True" in verify_lines(first.replace(b"0,", b"true,") + b"\n")[2][0]


def test_results_must_tell_the_signed_verdicts_even_after_a_consistent_resign(bundle, keys):
    results = bundle / "results.json"

    def demote(data: dict[str, Any]) -> dict[str, Any]:
        data["verdict"] = "NO-GO"
        data["criteria"][0]["verdict"] = "NO-GO"
        return data

    edit_json(results, demote)

    def cover_it(v: dict[str, Any]) -> dict[str, Any]:
        v["run_files"]["results.json"] = sha256_file(results)
        return v

    edit_verdict(bundle, keys, cover_it)
    found = problems(bundle, keys)
    assert not any("sha256" in p for p in found), found  # every digest is right...
    said = [p for p in found if p.startswith(f"{results}:")]
    assert any("release verdict 'NO-GO'" in p for p in said), found  # ...the content is not
    assert any("the signed verdict says GO" in p for p in said), found


def _envelope(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "verdict.dsse.json").read_bytes())


def _write_envelope(bundle: Path, envelope: Any) -> None:
    (bundle / "verdict.dsse.json").write_text(dumps_json(envelope))


def _other_signature(bundle: Path, keys: dict[str, Path]) -> dict[str, str]:
    env = _envelope(bundle)
    forged = make_envelope(
        base64.b64decode(env["payload"]), VERDICT_TYPE, load_signer(keys["other_priv"])
    )
    return dict(forged["signatures"][0])


def _noncanonical_sig(sig: str) -> str:
    """The same 64 bytes, spelled differently (padding bits set)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert sig.endswith("==")
    last = sig[-3]
    return sig[:-3] + alphabet[alphabet.index(last) ^ 1] + "=="


ENVELOPE_ATTACKS: dict[str, Callable[[Path, dict[str, Path]], None]] = {
    "extra top-level key": lambda b, k: _write_envelope(b, {**_envelope(b), "note": "hidden"}),
    "extra key in a signature": lambda b, k: _write_envelope(
        b,
        {
            **_envelope(b),
            "signatures": [{**_envelope(b)["signatures"][0], "note": "hidden"}],
        },
    ),
    "a second signature by an unknown key": lambda b, k: _write_envelope(
        b, {**_envelope(b), "signatures": [*_envelope(b)["signatures"], _other_signature(b, k)]}
    ),
    "a second signature of random bytes": lambda b, k: _write_envelope(
        b,
        {
            **_envelope(b),
            "signatures": [
                *_envelope(b)["signatures"],
                {"keyid": "ab" * 32, "sig": base64.b64encode(b"hidden message" * 4).decode()},
            ],
        },
    ),
    "non-canonical base64 signature": lambda b, k: _write_envelope(
        b,
        {
            **_envelope(b),
            "signatures": [
                {
                    "keyid": _envelope(b)["signatures"][0]["keyid"],
                    "sig": _noncanonical_sig(_envelope(b)["signatures"][0]["sig"]),
                }
            ],
        },
    ),
    "compact bytes": lambda b, k: (b / "verdict.dsse.json").write_text(json.dumps(_envelope(b))),
    "trailing data after the JSON": lambda b, k: (b / "verdict.dsse.json").write_bytes(
        (b / "verdict.dsse.json").read_bytes() + b"  \n"
    ),
    "a duplicate key": lambda b, k: (b / "verdict.dsse.json").write_bytes(
        (b / "verdict.dsse.json").read_bytes().replace(b"{\n", b'{\n  "payloadType": "x",\n', 1)
    ),
}


@pytest.mark.parametrize("attack", list(ENVELOPE_ATTACKS), ids=list(ENVELOPE_ATTACKS))
def test_nothing_extra_can_hide_in_the_verdict_envelope(bundle, keys, attack):
    ENVELOPE_ATTACKS[attack](bundle, keys)
    found = problems(bundle, keys)
    assert found and found[0].startswith(f"{bundle / 'verdict.dsse.json'}:"), found


# --------------------------------------------------------------------------- finding 5


def _signed_project_run(project: Project, keys: dict[str, Path]) -> Path:
    project.contract("a", simple_contract())
    r = CliRunner().invoke(cli, ["run", "-j", "1", "--seed", "3", "--sign-key", str(keys["priv"])])
    assert r.exit_code == 0, r.output
    return next(p for p in (project.root / "evidence").iterdir() if p.name[0].isdigit())


def _plant_marker_command(run_dir: Path, marker: Path) -> Path:
    """Edit the stored contract: its check becomes a command that creates ``marker``."""
    (stored,) = (run_dir / "contracts").rglob("*.yaml")
    text = stored.read_text()
    command = json.dumps([sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"])
    edited = text.replace("python: demochecks:ok", f"command: {command}")
    assert edited != text
    stored.write_text(edited)
    return stored


def test_rerun_refuses_an_edited_stored_contract_and_runs_nothing(project, keys, tmp_path):
    run_dir = _signed_project_run(project, keys)
    marker = tmp_path / "MARKER"
    stored = _plant_marker_command(run_dir, marker)

    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir), "--key", str(keys["pub"])])
    assert r.exit_code == 1, r.output
    assert "rerun refused" in r.output and f"{stored}: sha256 differs" in r.output
    assert not marker.exists()
    # no key at all: a usage error, and still nothing runs
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir)])
    assert r.exit_code == 4 and "--key" in r.output and "--unverified" in r.output, r.output
    assert not marker.exists()
    # the attack is real: --unverified runs what the bundle holds
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir), "--unverified"])
    assert "was not verified" in r.output
    assert marker.exists()


def test_rerun_refuses_a_bundle_consistently_resigned_by_another_key(project, keys, tmp_path):
    run_dir = _signed_project_run(project, keys)
    marker = tmp_path / "MARKER"
    stored = _plant_marker_command(run_dir, marker)
    rel = stored.relative_to(run_dir).as_posix()

    attacker = load_signer(keys["other_priv"])
    envelopes = {}
    for folder in (run_dir / "criteria").iterdir():
        env = make_envelope((folder / "statement.json").read_bytes(), STATEMENT_TYPE, attacker)
        (folder / "statement.dsse.json").write_text(dumps_json(env))
        envelopes[folder.name] = sha256_file(folder / "statement.dsse.json")

    def cover_it(v: dict[str, Any]) -> dict[str, Any]:
        v["run_files"][rel] = sha256_file(stored)
        v["keyid"] = attacker.keyid
        for cid, digest in envelopes.items():
            v["criteria"][cid]["envelope_sha256"] = digest
        return v

    edit_verdict(run_dir, keys, cover_it, which="other_priv")
    assert problems(run_dir, keys, "other_pub") == []  # it verifies, under the wrong key
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir), "--key", str(keys["pub"])])
    assert r.exit_code == 1 and "no signature verifies" in r.output, r.output
    assert not marker.exists()


def test_rerun_refuses_an_added_contract(project, keys, tmp_path):
    run_dir = _signed_project_run(project, keys)
    marker = tmp_path / "MARKER"
    (stored,) = (run_dir / "contracts").rglob("*.yaml")
    original = stored.read_bytes()
    _plant_marker_command(run_dir, marker)
    evil = stored.rename(stored.with_name("evil.yaml"))  # the edited contract, added...
    stored.write_bytes(original)  # ...beside the one that was signed
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir), "--key", str(keys["pub"])])
    assert r.exit_code == 1 and f"{evil}: unexpected file" in r.output, r.output
    assert not marker.exists()


def test_rerun_verifies_a_signed_bundle_with_key_or_configured_keys(project, keys):
    run_dir = _signed_project_run(project, keys)
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir), "--key", str(keys["pub"])])
    assert r.exit_code == 0, r.output
    assert "verifies under 1 key(s)" in r.output and "rerun matches" in r.output
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + f'allowed-keys = ["{keys["pub"]}"]\n')
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        cli, ["rerun", "--here", str(run_dir), "--key", str(keys["pub"]), "--unverified"]
    )
    assert r.exit_code == 4 and "exclude each other" in r.output, r.output
    # an unsigned bundle is refused under any key, and says how to rerun it anyway
    (run_dir / "verdict.dsse.json").write_text(
        dumps_json(make_envelope((run_dir / "verdict.json").read_bytes(), VERDICT_TYPE, None))
    )
    r = CliRunner().invoke(cli, ["rerun", "--here", str(run_dir)])
    assert r.exit_code == 1 and "unsigned" in r.output and "--unverified" in r.output, r.output


# --------------------------------------------------------------------------- finding 6


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Any], Any]:
    def edit(doc: Any) -> Any:
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return doc

    return edit


def _drop(path: tuple[Any, ...]) -> Callable[[Any], Any]:
    def edit(doc: Any) -> Any:
        target = doc
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        return doc

    return edit


def _resigned(edit: Callable[[Any], Any]) -> Callable[[Path, dict[str, Path]], None]:
    return lambda b, k: edit_verdict(b, k, edit)


def _raw_payload(data: bytes) -> Callable[[Path, dict[str, Path]], None]:
    return lambda b, k: sign_verdict(b, k, data)


def _statement(edit: Callable[[Any], Any]) -> Callable[[Path, dict[str, Path]], None]:
    def attack(b: Path, k: dict[str, Path]) -> None:
        statement = json.loads((b / "criteria" / CID / "statement.json").read_bytes())
        sign_statement(b, k, canonical_json(edit(statement)))

    return attack


def _file(rel: str, data: bytes) -> Callable[[Path, dict[str, Path]], None]:
    return lambda b, k: (b / rel).write_bytes(data)


def _envelope_edit(edit: Callable[[Any], Any]) -> Callable[[Path, dict[str, Path]], None]:
    return lambda b, k: _write_envelope(b, edit(_envelope(b)))


def _results(edit: Callable[[Any], Any]) -> Callable[[Path, dict[str, Path]], None]:
    def attack(b: Path, k: dict[str, Path]) -> None:
        edit_json(b / "results.json", edit)
        edit_verdict(b, k, _set(("run_files", "results.json"), sha256_file(b / "results.json")))

    return attack


_b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731

# (attack, signature problem first?) -- re-signed attacks carry a valid signature
SHAPES: dict[str, tuple[Callable[[Path, dict[str, Path]], None], bool]] = {
    # the signed verdict, re-signed with the trusted key
    "verdict payload is a list": (_resigned(lambda v: []), False),
    "verdict payload is a string": (_resigned(lambda v: "GO"), False),
    "verdict payload is null": (_resigned(lambda v: None), False),
    "verdict key missing": (_resigned(_drop(("verdict",))), False),
    "criteria is a string": (_resigned(_set(("criteria",), CID)), False),
    "criteria is a list": (_resigned(_set(("criteria",), [CID])), False),
    "a criterion meta is a string": (_resigned(_set(("criteria", CID), "GO")), False),
    "a criterion meta without verdict": (_resigned(_drop(("criteria", CID, "verdict"))), False),
    "a criterion id that escapes": (
        _resigned(lambda v: {**v, "criteria": {**v["criteria"], "../..": v["criteria"][CID]}}),
        False,
    ),
    "run_files is a list": (_resigned(lambda v: {**v, "run_files": list(v["run_files"])}), False),
    "run_files digest is a number": (_resigned(_set(("run_files", "run.json"), 7)), False),
    "run_files escapes the bundle": (
        _resigned(_set(("run_files", "../../../../etc/hostname"), "0" * 64)),
        False,
    ),
    "run_files names an absolute path": (
        _resigned(_set(("run_files", "/dev/zero"), "0" * 64)),
        False,
    ),
    "git is a string": (_resigned(_set(("git",), "main")), False),
    "audit_count is a string": (_resigned(_set(("audit_count",), "12")), False),
    "audit_count is a float": (_resigned(_set(("audit_count",), 12.0)), False),
    "seed is true": (_resigned(_set(("seed",), True)), False),
    "payload is not JSON": (_raw_payload(b"\xff\xfe not json"), False),
    "payload is deeply nested": (_raw_payload(b"[" * 100_000 + b"]" * 100_000), False),
    "payload is nested 900 deep": (_raw_payload(b"[" * 900 + b"]" * 900), False),
    "payload has a lone surrogate": (_raw_payload(b'{"run_id": "\\ud800"}'), False),
    "payload is not canonical": (_raw_payload(b'{"verdict": "GO" }'), False),
    # the envelope, edited without the key
    "envelope is a list": (_file("verdict.dsse.json", b"[]\n"), True),
    "envelope is a string": (_file("verdict.dsse.json", b'"x"\n'), True),
    "envelope is null": (_file("verdict.dsse.json", b"null\n"), True),
    "envelope is not JSON": (_file("verdict.dsse.json", b"\x00\xff"), True),
    "envelope is empty": (_file("verdict.dsse.json", b""), True),
    "signatures is a string": (_envelope_edit(_set(("signatures",), "sig")), True),
    "a signature is a number": (_envelope_edit(_set(("signatures",), [1])), True),
    "a sig is a number": (_envelope_edit(_set(("signatures", 0, "sig"), 5)), True),
    "a keyid is a list": (_envelope_edit(_set(("signatures", 0, "keyid"), [])), True),
    "payload is a number": (_envelope_edit(_set(("payload",), 5)), True),
    "payloadType is a list": (_envelope_edit(_set(("payloadType",), [])), True),
    "payload replaced, not re-signed": (
        _envelope_edit(_set(("payload",), _b64(b'{"criteria": "x"}'))),
        True,
    ),
    "payload replaced by a list, not re-signed": (
        _envelope_edit(_set(("payload",), _b64(b"[]"))),
        True,
    ),
    # a criterion's statement, consistently re-signed
    "statement is a list": (_statement(lambda s: [s]), False),
    "statement subject is a string": (_statement(_set(("subject",), "x")), False),
    "statement predicate is a string": (_statement(_set(("predicate",), "PASSED")), False),
    "statement configuration holds numbers": (
        _statement(_set(("predicate", "configuration"), [1, 2])),
        False,
    ),
    "statement configuration digest is a list": (
        _statement(_set(("predicate", "configuration", 0, "digest"), [])),
        False,
    ),
    "statement subject digest holds a number": (
        _statement(_set(("subject", 0, "digest"), {"sha256": 1})),
        False,
    ),
    # files covered by digests, edited into other shapes
    "manifest is a list": (_file(f"criteria/{CID}/manifest.json", b"[]\n"), False),
    "manifest entry is a string": (
        _file(f"criteria/{CID}/manifest.json", b'{"verdict.json": "x"}\n'),
        False,
    ),
    "criterion verdict.json is a list": (_file(f"criteria/{CID}/verdict.json", b"[]"), False),
    # ... and consistently re-sealed with the trusted key: null is a document too
    "manifest is null, re-sealed": (lambda b, k: reseal_criterion(b, k, b"null\n"), False),
    "manifest is a list, re-sealed": (lambda b, k: reseal_criterion(b, k, b"[]\n"), False),
    "manifest entry has an extra key, re-sealed": (
        lambda b, k: reseal_criterion(
            b, k, b'{"verdict.json": {"sha256": "%s", "size": 1, "x": 1}}' % (b"0" * 64)
        ),
        False,
    ),
    "criterion verdict.json is null, re-sealed": (
        lambda b, k: (
            (b / "criteria" / CID / "verdict.json").write_bytes(b"null"),
            reseal_criterion(b, k),
        ),
        False,
    ),
    "results.json is null": (_results(lambda r: None), False),
    "results.json is a list": (_results(lambda r: []), False),
    "results criteria is a string": (_results(_set(("criteria",), "x")), False),
    "results criteria hold numbers": (_results(_set(("criteria",), [1])), False),
    "an audit line is a list": (_file("audit.jsonl", b"[1]\n"), False),
}


def test_the_resigning_helpers_alone_leave_a_bundle_that_verifies(bundle, keys):
    """So the attacks above fail for their shapes, not for a clumsy re-sign."""
    reseal_criterion(bundle, keys)
    edit_verdict(bundle, keys, lambda v: v)
    _results(lambda r: r)(bundle, keys)
    assert problems(bundle, keys) == []


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_a_malformed_shape_is_a_problem_never_a_crash(bundle, keys, tmp_path, shape):
    attack, signature_first = SHAPES[shape]
    attack(bundle, keys)
    found = problems(bundle, keys)
    assert found
    assert all(p.isprintable() for p in found), found
    if signature_first:
        assert found[0].startswith(f"{bundle / 'verdict.dsse.json'}:"), found
    r = CliRunner().invoke(cli, ["verify", str(bundle), "--key", str(keys["pub"])])
    assert r.exit_code == 1, r.output
    assert f"FAILED: {len(found)} problem" in r.output
    r = CliRunner().invoke(
        cli,
        [
            *("promote", str(bundle), "--to", "prod"),
            *("--allowed-key", str(keys["pub"]), "--sign-key", str(keys["priv"])),
        ],
    )
    assert r.exit_code == 1 and "promotion REFUSED" in r.output, r.output
    from harness.config import load_config

    registry = load_config().promotions
    assert registry is not None and not registry.exists()


def test_a_tampered_payload_lists_the_signature_problem_first(bundle, keys):
    edit = _set(("payload",), _b64(canonical_json({"criteria": {CID: "GO"}})))
    _write_envelope(bundle, edit(_envelope(bundle)))
    found = problems(bundle, keys)
    assert "verdict.dsse.json: no signature verifies" in found[0], found


# -- property-based: any JSON, validly signed, is problems and never a crash

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
KEYS = st.sampled_from(
    [
        "verdict",
        "criteria",
        "run_files",
        "severity",
        "envelope_sha256",
        "complete",
        "signed",
        "keyid",
        "git",
        "commit",
        "audit_head",
        "audit_count",
        "_type",
        "subject",
        "digest",
        "sha256",
        "predicate",
        "configuration",
        "result",
        "name",
        CID,
        "run.json",
    ]
) | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=5),
    max_leaves=25,
)


def _kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


def _paths(value: Any, depth: int) -> list[tuple[Any, ...]]:
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    out: list[tuple[Any, ...]] = []
    for key, child in items:
        out.append((key,))
        if depth > 1:
            out += [(key, *rest) for rest in _paths(child, depth - 1)]
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def seals(bundle: Path) -> list[Path]:
    folder = bundle / "criteria" / CID
    return [
        bundle / "verdict.json",
        bundle / "verdict.dsse.json",
        folder / "statement.json",
        folder / "statement.dsse.json",
    ]


def _never_crashes(bundle: Path, keys: dict[str, Path]) -> list[str]:
    found = problems(bundle, keys)
    assert found, "a re-signed payload of another shape verified"
    assert all(p.isprintable() for p in found)
    assert not any("verification stopped" in p for p in found), found
    return found


@HYPOTHESIS
@given(payload=JSON)
def test_any_signed_verdict_payload_is_problems(bundle, keys, seals, payload):
    with restored(*seals):
        sign_verdict(bundle, keys, canonical_json(payload))
        _never_crashes(bundle, keys)


@HYPOTHESIS
@given(data=st.data())
def test_a_signed_verdict_with_a_field_of_another_type_is_problems(bundle, keys, seals, data):
    verdict = json.loads((bundle / "verdict.json").read_bytes())
    paths = [p for p in _paths(verdict, 3) if not (p[0] == "git" and len(p) > 1)]
    path = data.draw(st.sampled_from(paths))
    old = _get(verdict, path)
    new = data.draw(JSON.filter(lambda v: _kind(v) != _kind(old)))
    with restored(*seals):
        edit_verdict(bundle, keys, _set(path, new))
        _never_crashes(bundle, keys)


@HYPOTHESIS
@given(payload=JSON)
def test_any_signed_statement_payload_is_problems(bundle, keys, seals, payload):
    with restored(*seals):
        sign_statement(bundle, keys, canonical_json(payload))
        _never_crashes(bundle, keys)


@HYPOTHESIS
@given(data=st.data())
def test_a_signed_statement_with_a_field_of_another_type_is_problems(bundle, keys, seals, data):
    statement = json.loads((bundle / "criteria" / CID / "statement.json").read_bytes())
    path = data.draw(st.sampled_from(_paths(statement, 5)))
    old = _get(statement, path)
    new = data.draw(JSON.filter(lambda v: _kind(v) != _kind(old)))
    with restored(*seals):
        sign_statement(bundle, keys, canonical_json(_set(path, new)(statement)))
        _never_crashes(bundle, keys)


@settings(HYPOTHESIS, max_examples=8)
@given(verdict=JSON, statement=JSON)
def test_any_signed_payloads_exit_1_from_the_command_line(bundle, keys, seals, verdict, statement):
    with restored(*seals):
        sign_statement(bundle, keys, canonical_json(statement))
        sign_verdict(bundle, keys, canonical_json(verdict))
        r = CliRunner().invoke(cli, ["verify", str(bundle), "--key", str(keys["pub"])])
        assert r.exit_code == 1, r.output


def test_a_hostile_promotion_ledger_is_problems_never_a_crash(bundle, keys, tmp_path):
    from harness.replay import promote, verify_ledger

    ledger = tmp_path / "promotions.jsonl"
    promote(bundle, "prod", [keys["pub"]], load_signer(keys["priv"]), ledger, "rm")
    pub = [load_public_key(keys["pub"])]
    assert verify_ledger(ledger, pub) == []
    good = ledger.read_bytes()
    entry = json.loads(good)
    for data in (
        good.replace(b"\n", b"\r"),
        good + b"[1]\n",
        good + b"\n",
        json.dumps({**entry, "envelope": [1]}).encode() + b"\n",
        json.dumps({**entry, "envelope": {**entry["envelope"], "x": 1}}).encode() + b"\n",
        json.dumps({**entry, "record": {**entry["record"], "name": "staging"}}).encode() + b"\n",
    ):
        ledger.write_bytes(data)
        assert verify_ledger(ledger, pub), data


def test_a_promotion_record_naming_another_key_than_its_signer_is_refused(
    bundle, keys, tmp_path, monkeypatch
):
    """Signed by key A, the record says promoted_by B: the payload matches the record,
    so only the keyid comparison names it."""
    from harness import replay

    real = replay.promotion_record
    monkeypatch.setattr(
        replay,
        "promotion_record",
        lambda *a: {**real(*a), "promoted_by": "0" * 64},
    )
    ledger = tmp_path / "promotions.jsonl"
    replay.promote(bundle, "prod", [keys["pub"]], load_signer(keys["priv"]), ledger, "rm")
    problems = replay.verify_ledger(ledger, [load_public_key(keys["pub"])])
    assert any("is not the key that signed the record" in p for p in problems), problems
