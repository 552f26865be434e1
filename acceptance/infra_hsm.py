"""AC-INFRA-003: the harness signs through a key held in a PKCS#11 token.

The check makes a SoftHSM2 token of its own (its own SOFTHSM2_CONF and token
folder in the scratch dir), has the harness generate two Ed25519 keys in it
(``harness keygen --pkcs11`` calls the same ``harness.hsm.generate_token_key``),
then runs ``harness run --sign-key pkcs11:...`` on a one-criterion probe project
with the PIN in $HARNESS_PKCS11_PIN. It observes what an auditor would ask:

- the run ended GO and its bundle verifies under the exported public key, signed
  by that key's keyid, and does not verify under the token's other key;
- the key object says it was made in the token and has never been readable:
  CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE,
  CKA_LOCAL; the token refuses to hand out CKA_VALUE;
- no private key (PEM, PKCS#8 DER, or the raw value if the token gave it out) is
  in any file of the scratch dir or the bundle, and the PIN is in no file of it;
- the probe run's own check is a snoop: it looks for the PIN where a hostile check
  would (its environment, every ancestor's /proc/<pid>/environ and cmdline) and
  reports how often it saw it (``pin_seen_by_check``).

A key made in software and imported into the token can be marked sensitive and
non-extractable; CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE still
tell that it once lived outside, which is why they are observed too.

Skips (the criterion stays UNPROVEN) where softhsm2-util, the SoftHSM2 module or
python-pkcs11 is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.context import CheckContext

TOKEN = "harness-release"
#: the probe project's one criterion: its check hunts for the PIN as a hostile check would
PROBE_CONTRACT = """version: 1
contract: {{name: probe, title: a signed probe run whose check hunts for the PIN}}
criteria:
  - id: AC-PROBE-001
    title: the check cannot find the token PIN
    severity: blocker
    references: [AC-INFRA-003 probe]
    invariants: [INV-PROBE-001]
invariants:
  - id: INV-PROBE-001
    title: the PIN is in no environment or command line the check can read
    check:
      python: pinsnoop:snoop
      params: {{pin_reversed: "{pin_reversed}"}}
    expect: {{pin_seen: {{eq: 0}}}}
falsifiers:
  - id: FALSIFY-PROBE-001
    title: a snoop that finds the PIN is reported
    kind: mutant
    target: INV-PROBE-001
    mutant: {{patch: {{"pinsnoop:snoop": "pinsnoop:sees_the_pin"}}}}
"""
#: the probe's check (pinsnoop.py in the probe project). It gets the PIN reversed, so
#: that its own parameters never hold the needle it looks for.
SNOOP = '''"""Look for the token PIN wherever a check can look."""
import os
import pathlib


def snoop(ctx):
    pin = ctx.params["pin_reversed"][::-1]
    needle = pin.encode()
    seen = sum(name == "HARNESS_PKCS11_PIN" or pin in value for name, value in os.environ.items())
    pid = os.getpid()
    for _ in range(16):  # this process and every ancestor, up to init
        for what in ("environ", "cmdline"):
            try:
                data = pathlib.Path(f"/proc/{pid}/{what}").read_bytes()
            except OSError as exc:  # an undumpable coordinator's environ
                print(pid, what, "unreadable:", exc.strerror)
                continue
            seen += needle in data
            print(pid, what, len(data), "bytes read")
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            break
        if pid <= 1:
            break
    return {"pin_seen": seen}


def sees_the_pin(ctx):
    return {"pin_seen": 1}
'''
#: what a private key looks like in a file: PEM armour, or the PKCS#8 DER header of Ed25519
PRIVATE_MARKERS = (b"PRIVATE KEY-----", bytes.fromhex("302e020100300506032b657004220420"))


def _make_token(scratch: Path, pin: str, so_pin: str) -> dict[str, str]:
    """A fresh SoftHSM2 token store under ``scratch``; returns the environment for it."""
    tokens = scratch / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = scratch / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is first loaded here
    proc = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN]
        + ["--so-pin", so_pin, "--pin", pin],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {proc.stderr.strip()}")
    return {"SOFTHSM2_CONF": str(conf)}


def _probe_project(root: Path, pin: str) -> Path:
    project = root / "project"
    (project / "contracts").mkdir(parents=True, exist_ok=True)
    (project / "pinsnoop.py").write_text(SNOOP)
    (project / "pyproject.toml").write_text(
        '[tool.harness]\ncontracts = ["contracts"]\nevidence-dir = "evidence"\n'
    )
    (project / "contracts" / "probe.yaml").write_text(PROBE_CONTRACT.format(pin_reversed=pin[::-1]))
    return project


def _pin_seen(run_dir: Path) -> int:
    """What the probe run's snoop reported; -1 (never 0) if it reported nothing."""
    results = json.loads((run_dir / "results.json").read_text())
    for criterion in results["criteria"]:
        for inv in criterion["invariants"]:
            if inv["invariant_id"] == "INV-PROBE-001":
                return int(inv["observations"].get("pin_seen", -1))
    return -1


def _signed_run(project: Path, uri: str, pin: str) -> tuple[int, Path | None]:
    """``harness run --sign-key URI`` in this process (so a mutant's patch reaches the
    signer), the PIN in $HARNESS_PKCS11_PIN; returns (exit code, run dir)."""
    from harness.cli import cli
    from harness.signing import PIN_ENV

    os.environ[PIN_ENV] = pin  # taken out of the environment again by `harness run`
    os.chdir(project)
    code = cli.main(
        ["run", "--sign-key", uri, "-j", "1", "--seed", "1", str(project / "contracts")],
        prog_name="harness",
        standalone_mode=False,
    )
    runs = sorted(p.parent for p in (project / "evidence").glob("*/verdict.json"))
    return int(code), (runs[-1] if runs else None)


def _key_attributes(uri: str, pin: str) -> dict[str, Any]:
    """The private key object's attributes, read straight from the token."""
    import pkcs11
    from pkcs11 import Attribute

    from harness import hsm

    parsed = hsm.parse_uri(uri)
    token = hsm.find_token(hsm.load_module(parsed), parsed)
    with hsm.open_session(token, pin, parsed) as session:
        key = hsm.private_key(session, parsed)
        out: dict[str, Any] = {
            name: bool(key[attr])
            for name, attr in (
                ("key_sensitive", Attribute.SENSITIVE),
                ("key_extractable", Attribute.EXTRACTABLE),
                ("key_always_sensitive", Attribute.ALWAYS_SENSITIVE),
                ("key_never_extractable", Attribute.NEVER_EXTRACTABLE),
                ("key_generated_in_token", Attribute.LOCAL),
                ("key_on_token", Attribute.TOKEN),
            )
        }
        try:
            value = bytes(key[Attribute.VALUE])
        except pkcs11.PKCS11Error:  # AttributeSensitive: what a token must answer
            value = b""
    out["private_value_readable"] = bool(value)
    out["_value"] = value
    return out


def _files_holding(
    folders: list[Path], needles: list[bytes], skip: Path | None = None
) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if skip is not None and path.is_relative_to(skip):
                continue
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(n and n in data for n in needles):
                    found.append(str(path))
    return found


def token_signing(ctx: CheckContext) -> dict[str, Any]:
    """params: module (the SoftHSM2 PKCS#11 module), reason (for the skip).
    observations: run_exit_code, verify_problems, signed_by_token_key,
    other_key_problems, key_* attributes, private_value_readable,
    private_key_files, pin_in_evidence, pin_seen_by_check."""
    module = str(ctx.params.get("module", "/usr/lib/softhsm/libsofthsm2.so"))
    missing = []
    if shutil.which("softhsm2-util") is None:
        missing.append("softhsm2-util (Debian package softhsm2)")
    if not os.path.isfile(module):
        missing.append(module)
    if importlib.util.find_spec("pkcs11") is None:
        missing.append("python-pkcs11 (pip install '.[hsm]')")
    if missing:
        ctx.skip(
            f"{ctx.params.get('reason', 'needs a PKCS#11 token')}: "
            f"{', '.join(missing)} not available on this machine"
        )
    from harness import hsm
    from harness.signing import keyid_of, load_public_key
    from harness.verify import verify_run

    pin = f"pin-{ctx.rng.getrandbits(64):016x}"
    _make_token(ctx.scratch, pin, so_pin=f"so-{ctx.rng.getrandbits(64):016x}")
    keys = ctx.scratch / "keys"
    keys.mkdir()
    public: dict[str, Path] = {}
    for label in ("release", "retired"):  # two keys: the URI must pick the one it names
        raw = hsm.generate_token_key(
            f"pkcs11:token={TOKEN};object={label}?module-path={module}", pin
        )
        public[label] = keys / f"{label}.pub"
        public[label].write_bytes(hsm.public_key_pem(raw))
    uri = f"pkcs11:token={TOKEN};object=release?module-path={module}"
    project = _probe_project(ctx.scratch, pin)
    code, run_dir = _signed_run(project, uri, pin)
    if run_dir is None:
        raise RuntimeError(f"the signed probe run (exit {code}) wrote no bundle")
    release_pub = load_public_key(public["release"])
    verify_problems = verify_run(run_dir, [release_pub])
    other_problems = verify_run(run_dir, [load_public_key(public["retired"])])
    verdict = json.loads((run_dir / "verdict.json").read_text())
    attrs = _key_attributes(uri, pin)
    value = attrs.pop("_value")
    private_files = _files_holding(
        [ctx.scratch], [*PRIVATE_MARKERS, value], skip=ctx.scratch / "tokens"
    )
    pin_files = _files_holding([run_dir], [pin.encode()])
    pin_seen = _pin_seen(run_dir)
    for p in verify_problems:
        print("verify:", p)
    print("private key material in:", private_files)
    print("PIN in:", pin_files)
    print("the probe's check saw the PIN:", pin_seen)
    ctx.attach(public["release"], "release.pub")
    ctx.attach_json(
        "token-key.json",
        {"uri": uri, "keyid": keyid_of(release_pub), "attributes": attrs, "run": run_dir.name},
    )
    return {
        "run_exit_code": code,
        "verify_problems": len(verify_problems),
        "signed_by_token_key": bool(verdict.get("signed"))
        and verdict.get("keyid") == keyid_of(release_pub),
        "other_key_problems": len(other_problems),
        **attrs,
        "private_key_files": len(private_files),
        "pin_in_evidence": len(pin_files),
        "pin_seen_by_check": pin_seen,
    }
