"""A signing key held in a PKCS#11 token (SoftHSM2): `--sign-key pkcs11:...`.

Real token, real module, real `harness` processes: the token is made with
softhsm2-util in a folder of its own (SOFTHSM2_CONF), its keys by `harness keygen
--pkcs11`. Skipped where SoftHSM2 or python-pkcs11 is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import softhsm

if softhsm.missing():
    pytest.skip(str(softhsm.missing()), allow_module_level=True)

from harness.errors import UsageError  # noqa: E402
from harness.hsm import parse_uri  # noqa: E402
from harness.signing import keyid_of, load_public_key  # noqa: E402
from harness.verify import verify_run  # noqa: E402

MODULE = softhsm.MODULE

PIN = "pin-0417-cafe"
TOKEN = "release"
CONTRACT = """version: 1
contract: {name: probe, title: a probe}
criteria:
  - id: AC-PROBE-001
    title: the probe file exists
    severity: blocker
    references: [test]
    invariants: [INV-PROBE-001]
invariants:
  - id: INV-PROBE-001
    title: probe.txt exists
    check:
      python: harness.checks.files:files_exist
      params: {paths: [probe.txt]}
    expect: {missing: {eq: 0}}
falsifiers:
  - id: FALSIFY-PROBE-001
    title: a missing file is reported
    kind: mutant
    target: INV-PROBE-001
    mutant: {params: {paths: [no-such-file.txt]}}
"""
SNOOP = '''
import os, pathlib

def cmdlines(ctx):
    """Count the ancestors whose command line shows the (reversed) needle."""
    needle = ctx.params["needle_reversed"][::-1].encode()
    seen, pid = 0, os.getpid()
    for _ in range(8):
        try:
            seen += needle in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            break
        if pid <= 1:
            break
    print("looked at the ancestors' command lines")
    return {"seen": seen}

def never(ctx):
    return {"seen": 1}
'''


def uri(label: str = "signing", **extra: str) -> str:
    return softhsm.uri(extra.pop("token", TOKEN), label, **extra)


@dataclass
class Token:
    root: Path
    env: dict[str, str]
    pub: Path
    other_pub: Path

    def harness(self, *args: str, pin: str | None = PIN, cwd: Path | None = None):
        env = dict(self.env)
        if pin is not None:
            env["HARNESS_PKCS11_PIN"] = pin
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            cwd=cwd or self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> Token:
    root = tmp_path_factory.mktemp("softhsm")
    env = softhsm.make_token(root, TOKEN, PIN, ("signing", "retired"))
    t = Token(root, env, root / "keys" / "signing.pub", root / "keys" / "retired.pub")
    # a P-256 key beside them: a key of the wrong type
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import pkcs11, sys; from pkcs11 import Attribute, KeyType\n"
            f"t = pkcs11.lib({MODULE!r}).get_token(token_label={TOKEN!r})\n"
            f"with t.open(rw=True, user_pin={PIN!r}) as s:\n"
            "    s.generate_keypair(KeyType.EC, store=True, label='p256', id=b'p2',"
            " public_template={Attribute.EC_PARAMS: bytes.fromhex('06082a8648ce3d030107')})\n",
        ],
        env=env,
        check=True,
    )
    return t


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "probe.yaml").write_text(CONTRACT)
    (tmp_path / "probe.txt").write_text("present\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.harness]\ncontracts = ["contracts"]\nevidence-dir = "evidence"\n'
    )
    return tmp_path


def run_dirs(project: Path) -> list[Path]:
    return sorted(p.parent for p in (project / "evidence").glob("*/verdict.json"))


def test_a_run_signed_in_the_token_verifies_under_the_exported_key(token, probe):
    r = token.harness("run", "-j", "1", "--sign-key", uri(), cwd=probe)
    assert r.returncode == 0, r.stderr
    (run_dir,) = run_dirs(probe)
    ok = token.harness("verify", str(run_dir), "--key", str(token.pub), pin=None)
    assert ok.returncode == 0 and "verifies" in ok.stdout, ok.stdout + ok.stderr
    other = token.harness("verify", str(run_dir), "--key", str(token.other_pub), pin=None)
    assert other.returncode == 1 and "none of the given keys" in other.stdout
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["signed"] and verdict["keyid"] == keyid_of(load_public_key(token.pub))
    # neither the PIN nor any private key is anywhere in the bundle
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PIN.encode() not in data and b"PRIVATE KEY" not in data, path


def test_pubkey_exports_what_keygen_wrote(token, tmp_path):
    r = token.harness("pubkey", uri(), "-o", str(tmp_path / "p.pem"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.pem").read_bytes() == token.pub.read_bytes()
    # the PIN from a file named by pin-source= instead of the environment
    (tmp_path / "pin").write_text(PIN + "\n")
    r = token.harness("pubkey", uri(**{"pin-source": str(tmp_path / "pin")}), pin=None)
    assert r.returncode == 0 and r.stdout.encode() == token.pub.read_bytes(), r.stderr


def test_keygen_refuses_a_label_the_token_already_has(token, tmp_path):
    r = token.harness("keygen", "--pkcs11", uri("signing"), "-o", str(tmp_path / "again"))
    assert r.returncode == 4
    assert "already has a key object='signing'" in r.stderr
    assert not (tmp_path / "again.pub").exists()


@pytest.mark.parametrize(
    "key, pin, message",
    [
        (
            uri(module="/nonexistent/libp11.so"),
            PIN,
            "PKCS#11 module /nonexistent/libp11.so not found",
        ),
        (uri(module="/etc/hostname"), PIN, "cannot load the PKCS#11 module /etc/hostname"),
        (uri(token="nosuch"), PIN, "no token matches token='nosuch'"),
        (uri("nokey"), PIN, "token 'release' has no private key object='nokey'"),
        (uri(), "wrong-pin", "wrong PIN for token 'release'"),
        (uri(), None, "needs its user PIN: set $HARNESS_PKCS11_PIN"),
        (uri("p256"), PIN, "object='p256' in token 'release' is not an Ed25519 key (it is EC)"),
        (uri().replace("object=", "label="), PIN, "unsupported attribute 'label'"),
    ],
    ids=[
        "module-missing",
        "not-a-module",
        "token",
        "object",
        "wrong-pin",
        "no-pin",
        "not-ed25519",
        "typo",
    ],
)
def test_an_unusable_token_key_stops_the_run_with_one_line(token, probe, key, pin, message):
    r = token.harness("run", "-j", "1", "--sign-key", key, cwd=probe, pin=pin)
    assert r.returncode == 4, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: signing key pkcs11:"), lines
    assert message in lines[0]
    assert "wrong-pin" not in r.stderr and PIN not in r.stderr
    assert not run_dirs(probe)  # stopped before any check ran


def test_without_python_pkcs11_a_token_key_is_refused_with_the_fix(token, probe):
    code = "import sys; sys.modules['pkcs11'] = None; from harness.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "run", "--sign-key", uri()],
        cwd=probe,
        env={**token.env, "HARNESS_PKCS11_PIN": PIN},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 4
    assert r.stderr.strip().endswith(
        "needs the python-pkcs11 library (pip install 'ml-contract-harness[hsm]')"
    )


def test_a_pin_in_the_uri_is_wiped_from_the_command_line_checks_can_read(token, probe):
    (probe / "pinsnoop.py").write_text(SNOOP)
    (probe / "contracts" / "probe.yaml").write_text(
        CONTRACT.replace("harness.checks.files:files_exist", "pinsnoop:cmdlines")
        .replace("params: {paths: [probe.txt]}", f"params: {{needle_reversed: {PIN[::-1]!r}}}")
        .replace("expect: {missing: {eq: 0}}", "expect: {seen: {eq: 0}}")
        .replace(
            "mutant: {params: {paths: [no-such-file.txt]}}",
            'mutant: {patch: {"pinsnoop:cmdlines": "pinsnoop:never"}}',
        )
    )
    key = uri(**{"pin-value": PIN})
    token.env["PYTHONPATH"] = str(probe)
    try:
        # with --no-evidence nothing is signed, and the PIN is wiped all the same
        unsigned = token.harness("run", "-j", "1", "--no-evidence", "--sign-key", key, cwd=probe)
        r = token.harness("run", "-j", "1", "--sign-key", key, cwd=probe, pin=None)
    finally:
        del token.env["PYTHONPATH"]
    assert unsigned.returncode == 0, unsigned.stdout + unsigned.stderr
    assert r.returncode == 0, r.stdout + r.stderr  # seen == 0 and the mutant KILLED
    (run_dir,) = run_dirs(probe)
    assert token.harness("verify", str(run_dir), "--key", str(token.pub)).returncode == 0
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert PIN.encode() not in path.read_bytes(), path


DAMAGE = '''
import pathlib, shutil, struct

def damage(ctx):
    """Damage the signing key's token: the check runs as the token owner's user."""
    tokens, what = pathlib.Path(ctx.params["tokens"]), ctx.params["what"]
    (folder,) = tokens.iterdir()
    if what == "removed":
        shutil.rmtree(folder)
        return {"damaged": 1}
    # SoftHSM2 object files: an 8-byte generation, then per attribute its type (8 bytes),
    # its kind (8; 3 = bytes) and, for bytes, the length (8) and value. A private
    # object's CKA_LABEL (3) and CKA_VALUE (0x11) are encrypted under the token key.
    attr = {"label": 0x03, "value": 0x11}[what]
    for path in folder.glob("*.object"):
        data = bytearray(path.read_bytes())
        at = data.find(struct.pack(">QQ", attr, 3), 8)
        if path.name == "token.object" or at < 0 or data.find(struct.pack(">QQ", 0x11, 3)) < 0:
            continue  # not the private key
        (size,) = struct.unpack(">Q", data[at + 16 : at + 24])
        # value: a bit of the IV, so the key decrypts to another key; label: a bit of the
        # last block, so it does not decrypt at all (the module fails to search it)
        data[at + 24 + (2 if what == "value" else size - 1)] ^= 0x01
        generation = int.from_bytes(data[:8], "big") + 1  # so the module reloads it
        data[:8] = generation.to_bytes(8, "big")
        path.write_bytes(bytes(data))
        return {"damaged": 1}
    return {"damaged": 0}
'''


@pytest.mark.parametrize("what", ["label", "value", "removed"])
def test_a_token_damaged_by_a_check_leaves_the_bundle_sealed_unsigned(tmp_path, probe, what):
    """A check damages the token's files (it runs as the token owner). At signing
    time the token then fails: a PKCS#11 error while finding the key ("label"), a
    signature that does not verify ("value"), or no token ("removed"). Each is one
    line and exit 4, and the bundle is sealed unsigned with the INCOMPLETE marker
    saying why, as for any key that fails at signing time: no traceback (exit 3),
    no half-written bundle."""
    env = softhsm.make_token(tmp_path / "hsm", "damaged", PIN, ("signing",))
    pub = load_public_key(tmp_path / "hsm" / "keys" / "signing.pub")
    (probe / "damage.py").write_text(DAMAGE)
    (probe / "contracts" / "probe.yaml").write_text(
        CONTRACT.replace("harness.checks.files:files_exist", "damage:damage")
        .replace(
            "params: {paths: [probe.txt]}",
            f"params: {{tokens: {str(tmp_path / 'hsm' / 'tokens')!r}, what: {what}}}",
        )
        .replace("expect: {missing: {eq: 0}}", "expect: {damaged: {eq: 1}}")
        .split("falsifiers:")[0]
    )
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "-j", "1"]
        + ["--sign-key", softhsm.uri("damaged", "signing")],
        cwd=probe,
        env={**env, "HARNESS_PKCS11_PIN": PIN, "PYTHONPATH": str(probe)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 4, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: signing key pkcs11:"), lines
    assert "Traceback" not in r.stderr and PIN not in r.stderr
    (run_dir,) = run_dirs(probe)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["criteria"][0]["invariants"][0]["observations"] == {"damaged": 1}
    marker = (run_dir / "INCOMPLETE").read_text()
    assert marker == f"not signed: {lines[0].removeprefix('harness: error: ')}\n"
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["signed"] is False and verdict["keyid"] is None
    envelopes = [run_dir / "verdict.dsse.json", *run_dir.glob("criteria/*/statement.dsse.json")]
    assert len(envelopes) == 2
    for envelope in envelopes:
        assert json.loads(envelope.read_text())["signatures"] == [], envelope
    events = [json.loads(x)["event"] for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert "sign_failed" in events and events[-1] == "verdict"
    # sealed: every file is in a manifest; what is wrong is only that nothing is signed
    problems = verify_run(run_dir, [pub])
    assert problems and all("unsigned" in p or "incomplete" in p for p in problems), problems


def test_the_key_is_used_only_as_checked_at_start(token, monkeypatch):
    """In this process: TokenKey.check() keeps the public key; a different key in
    the token by sign time is refused, not silently used."""
    from harness.hsm import TokenKey

    monkeypatch.setenv("SOFTHSM2_CONF", token.env["SOFTHSM2_CONF"])
    key = TokenKey(uri(), PIN)
    key.check()
    assert key.keyid == keyid_of(load_public_key(token.pub))
    before = set(sys.modules)
    signer = key()
    signer.sign(b"warm-up")
    assert set(sys.modules) == before  # nothing is imported after the checks
    assert signer.keyid == key.keyid
    load_public_key(token.pub).verify(signer.sign(b"data"), b"data")
    del signer  # closes its session (and logs out)
    key.public = bytes(32)
    with pytest.raises(UsageError, match="not the one checked at the start"):
        key()


def test_uri_parsing():
    u = parse_uri("pkcs11:token=My%20Token;object=k%3B1;id=%01%02?module-path=/m.so&pin-value=1234")
    assert (u.token, u.label, u.key_id, u.module, u.pin_value) == (
        {"token": "My Token"},
        "k;1",
        b"\x01\x02",
        "/m.so",
        "1234",
    )
    assert "1234" not in u.shown and "pin-value=***" in u.shown and "1234" not in repr(u)
    for bad, why in [
        ("pkcs11:token=t;object=k", "module-path"),
        ("pkcs11:token=t?module-path=/m.so", "object=LABEL"),
        ("pkcs11:token=t;object=k;type=public?module-path=/m.so", "a signing key is private"),
        ("pkcs11:token=t;token=u;object=k?module-path=/m.so", "token is given twice"),
        ("pkcs11:token=t;object=k?module-path=/m.so&module-name=softhsm2", "unsupported"),
    ]:
        with pytest.raises(UsageError, match=why):
            parse_uri(bad)


def test_a_pin_in_pyproject_is_refused(tmp_path, monkeypatch):
    from harness.config import load_config

    (tmp_path / "pyproject.toml").write_text(
        f'[tool.harness]\nsign-key = "{uri(**{"pin-value": "1234"})}"\n'
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="keep the PIN out of pyproject.toml"):
        load_config()
    (tmp_path / "pyproject.toml").write_text(f'[tool.harness]\nsign-key = "{uri()}"\n')
    assert load_config().sign_key == uri()
