"""The training child runs the code of ``kernels.service.child`` as imported, so a name
replaced there at interpreter start (a mutant's patch) is the one the run uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.falsify.patching import patch_environment

REPO = Path(__file__).resolve().parents[2]


def marker_run(run_dir: Path, resume: bool = False) -> int:
    (Path(run_dir) / "patched").write_text("yes")
    return 0


def test_a_patch_of_the_child_module_reaches_the_running_child(tmp_path):
    patches = {"kernels.service.child:run": "tests.service.test_child:marker_run"}
    env = patch_environment(patches, os.environ, root=REPO)
    out = subprocess.run([sys.executable, "-m", "kernels.service.child", str(tmp_path)],
                         env=env, cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "patched").read_text() == "yes"
