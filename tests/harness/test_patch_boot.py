"""The sitecustomize that carries mutant patches into Python child processes: a patch
reaches the module when it is imported (and only then), a module run with ``-m``
that imports itself gets it, and a patch that cannot be applied ends the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.falsify.patching import patch_environment

MOD = """
def value():
    return "real"


def main():
    import bootdemo  # the imported module, not this __main__ copy
    print(bootdemo.value())


if __name__ == "__main__":
    main()
"""


def run(tmp_path: Path, code: list[str], patches: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "bootdemo.py").write_text(MOD)
    (tmp_path / "bootmutants.py").write_text('def value():\n    return "mutant"\n')
    env = patch_environment(patches, os.environ, root=tmp_path)
    return subprocess.run([sys.executable, *code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_a_patch_applies_when_its_module_is_first_imported_and_never_before(tmp_path):
    patch = {"bootdemo:value": "bootmutants:value"}
    probe = "import sys; print('bootdemo' in sys.modules); import bootdemo; print(bootdemo.value())"
    out = run(tmp_path, ["-c", probe], patch)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "mutant"]  # not imported until asked for


def test_a_module_run_with_m_that_imports_itself_gets_the_patch(tmp_path):
    out = run(tmp_path, ["-m", "bootdemo"], {"bootdemo:value": "bootmutants:value"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mutant"


def test_a_patch_that_cannot_be_applied_ends_the_process_with_70(tmp_path):
    out = run(
        tmp_path, ["-c", "import bootdemo; print('ran')"], {"bootdemo:nope": "bootmutants:value"}
    )
    assert out.returncode == 70 and "ran" not in out.stdout
    assert "cannot apply mutant patches" in out.stderr and "nope" in out.stderr
