"""Each injector in the library injects for real, and says so when it cannot."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys

import pytest

from harness.falsify.faults import INJECTORS, InjectionFailed, make_injector


def data_file(tmp_path, n=100):
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(n)))
    return p


def test_truncate(tmp_path):
    p = data_file(tmp_path)
    inj = make_injector("truncate_file", {"keep_fraction": 0.25}, 1)
    inj.inject(path=p)
    assert p.stat().st_size == 25 and inj.injected


def test_flip_bytes_changes_exactly_the_reported_offsets(tmp_path):
    p = data_file(tmp_path)
    inj = make_injector("flip_bytes", {"count": 3}, 7)
    inj.inject(path=p)
    data = p.read_bytes()
    changed = [i for i in range(100) if data[i] != i]
    assert sorted(set(inj.report["offsets"])) == changed


def test_remove(tmp_path):
    p = data_file(tmp_path)
    make_injector("remove_file", {}, 1).inject(path=p)
    assert not p.exists()


def test_unreadable_really_cannot_be_read_and_loses_nothing(tmp_path):
    p = data_file(tmp_path)
    inj = make_injector("unreadable", {}, 1)
    inj.inject(path=p)
    with pytest.raises(OSError):
        p.read_bytes()
    if "directory" in inj.report["method"]:  # running as root
        assert (tmp_path / "f.bin.unreadable-orig").read_bytes() == bytes(range(100))


def test_sigkill_kills_a_running_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    inj = make_injector("sigkill", {"between": [3, 9]}, 5)
    assert 3 <= inj.step <= 9
    inj.inject(process=proc)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_of_a_finished_process_cannot_inject():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    inj = make_injector("sigkill", {}, 1)
    with pytest.raises(InjectionFailed, match="already exited"):
        inj.inject(process=proc)
    assert not inj.injected and "already exited" in inj.failure


def test_fill_disk_makes_large_writes_fail(tmp_path):
    inj = make_injector("fill_disk", {"limit_bytes": 1000}, 1)
    limit = inj.inject()
    code = "open('big', 'wb').write(b'x' * 100000)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, preexec_fn=limit, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "File too large" in proc.stderr


def test_set_metadata_rewrites_a_safetensors_stamp(tmp_path):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    p = tmp_path / "m.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32)}, str(p), metadata={"architecture": "gpt2"})
    inj = make_injector("set_metadata", {"key": "architecture", "value": "llama"}, 1)
    inj.inject(path=p)
    (n,) = struct.unpack("<Q", p.read_bytes()[:8])
    header = json.loads(p.read_bytes()[8 : 8 + n])
    assert header["__metadata__"]["architecture"] == "llama"
    assert load_file(str(p))["w"].tolist() == [0, 1, 2, 3]
    assert inj.report["before"] == "gpt2"


@pytest.mark.parametrize("name", sorted(set(INJECTORS) - {"sigkill", "fill_disk"}))
def test_file_injectors_refuse_a_missing_file(tmp_path, name):
    inj = make_injector(name, {"key": "k", "value": "v"}, 1)
    with pytest.raises(InjectionFailed):
        inj.inject(path=tmp_path / "nope")
    assert not inj.injected


def test_unknown_injector():
    with pytest.raises(KeyError, match="known:"):
        make_injector("no_such", {}, 1)
