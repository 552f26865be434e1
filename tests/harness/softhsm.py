"""A SoftHSM2 token of a test's own, with Ed25519 keys made by `harness keygen --pkcs11`.

Importing this never skips; ``require()`` skips the calling test where SoftHSM2 or
python-pkcs11 is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def missing() -> str | None:
    if importlib.util.find_spec("pkcs11") is None:
        return "needs python-pkcs11 (pip install '.[hsm]')"
    if shutil.which("softhsm2-util") is None or not Path(MODULE).is_file():
        return "needs SoftHSM2 (Debian package softhsm2)"
    return None


def require() -> None:
    why = missing()
    if why:
        pytest.skip(why)


def uri(token: str, label: str = "signing", **extra: str) -> str:
    query = "&".join(
        [f"module-path={extra.pop('module', MODULE)}"] + [f"{k}={v}" for k, v in extra.items()]
    )
    return f"pkcs11:token={token};object={label}?{query}"


def make_token(root: Path, token: str, pin: str, labels: tuple[str, ...] = ()) -> dict[str, str]:
    """Initialise a token under ``root/tokens`` and make a key per label (its public
    key in ``root/keys/LABEL.pub``). Returns the environment that reaches it (no
    HARNESS_* variables)."""
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", token]
        + ["--pin", pin, "--so-pin", "so-pin-0000"],
        env=env,
        check=True,
        capture_output=True,
    )
    for label in labels:
        r = subprocess.run(
            [sys.executable, "-m", "harness.cli", "keygen", "--pkcs11", uri(token, label)]
            + ["-o", str(root / "keys" / label)],
            env={**env, "HARNESS_PKCS11_PIN": pin},
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert "keyid:" in r.stdout and pin not in r.stdout
    return env
