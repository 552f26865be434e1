"""Each injector in the library injects for real, and says so when it cannot."""

from __future__ import annotations

import inspect
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


# --------------------------------------------------------------------------- custom injectors

ZERO_FILE = '''
from pathlib import Path

from harness.falsify import InjectionFailed, Injector


class ZeroFile(Injector):
    """Written the documented way: it overrides inject, and sets nothing by hand."""

    name = "zero_file"

    def inject(self, path):
        p = Path(path)
        keep = int(self.params.get("keep", 0))
        data = p.read_bytes()
        p.write_bytes(data[:keep] + bytes(len(data) - keep))
        if p.read_bytes()[keep:].strip(b"\\0"):
            raise InjectionFailed(f"{p} still holds data")
        self.report = {"path": str(p), "zeroed": len(data) - keep}
        return p


class Refuses(Injector):
    def inject(self, **target):
        raise InjectionFailed("the target is read-only")


class OldStyle(Injector):
    """The older spelling: _inject, as the generic injectors do."""

    def _inject(self, **target):
        Path(target["path"]).write_bytes(b"")


class ZeroingMixin:
    """inject defined on a mixin that is no Injector; the injector inherits it."""

    def inject(self, path):
        Path(path).write_bytes(bytes(len(Path(path).read_bytes())))
        return path


class MixedIn(ZeroingMixin, Injector):
    name = "mixed_in"


class StaticZero(Injector):
    @staticmethod
    def inject(path):
        Path(path).write_bytes(bytes(len(Path(path).read_bytes())))
        return path


class ClassZero(Injector):
    @classmethod
    def inject(cls, path):
        assert issubclass(cls, Injector)
        Path(path).write_bytes(bytes(len(Path(path).read_bytes())))
        return path
'''


@pytest.fixture
def custom(project):
    (project.root / "demoinjectors.py").write_text(ZERO_FILE)
    return project


def test_an_injector_that_overrides_inject_records_that_it_injected(custom, tmp_path):
    p = data_file(tmp_path)
    inj = make_injector("demoinjectors:ZeroFile", {"keep": 10}, 1)
    assert inj.inject(path=p) == p
    assert inj.injected and not inj.failure
    assert p.read_bytes() == bytes(range(10)) + bytes(90)
    assert inj.report == {"path": str(p), "zeroed": 90}


def test_an_overriding_inject_that_raises_records_why(custom, tmp_path):
    inj = make_injector("demoinjectors:Refuses", {}, 1)
    with pytest.raises(InjectionFailed):
        inj.inject(path=tmp_path)
    assert not inj.injected and inj.failure == "the target is read-only"


def test_the_older_inject_spelling_still_records(custom, tmp_path):
    p = data_file(tmp_path)
    inj = make_injector("demoinjectors:OldStyle", {}, 1)
    inj.inject(path=p)
    assert inj.injected and p.read_bytes() == b""


@pytest.mark.parametrize("name", ["MixedIn", "StaticZero", "ClassZero"])
def test_an_inherited_static_or_class_inject_records_that_it_injected(custom, tmp_path, name):
    p = data_file(tmp_path)
    inj = make_injector(f"demoinjectors:{name}", {}, 1)
    assert inj.inject(path=p) == p
    assert inj.injected and not inj.failure and p.read_bytes() == bytes(100)
    assert not make_injector(f"demoinjectors:{name}", {}, 1).injected  # per instance


def test_an_inject_is_wrapped_once_and_a_mixin_is_left_alone(custom):
    mixed, static, klass = (
        type(make_injector(f"demoinjectors:{n}", {}, 1))
        for n in ("MixedIn", "StaticZero", "ClassZero")
    )
    mixin = mixed.__mro__[1]
    assert not getattr(mixin.inject, "_records_injection", False)  # untouched
    for cls in (mixed, static, klass):
        wrapped = vars(cls)["inject"]
        assert wrapped._records_injection and inspect.isfunction(wrapped.__wrapped__)
        assert not hasattr(wrapped.__wrapped__, "__wrapped__")

    class Again(mixed):
        pass

    assert "inject" not in vars(Again)  # it inherits the wrapped one: no second wrapper


def test_a_subclass_of_a_custom_injector_calling_super_records_once(tmp_path):
    from harness.falsify import Injector

    class Base(Injector):
        def inject(self, path):
            path.write_bytes(b"x")

    class Child(Base):
        def inject(self, path):
            self.report = {"child": True}
            return super().inject(path)

    p = data_file(tmp_path)
    inj = Child({}, 1)
    inj.inject(p)
    assert inj.injected and p.read_bytes() == b"x" and inj.report == {"child": True}
    assert not Child({}, 1).injected  # per instance, not per class


def test_an_injector_with_no_injection_says_what_to_override():
    from harness.falsify import Injector

    class Empty(Injector):
        pass

    inj = Empty({}, 1)
    with pytest.raises(InjectionFailed, match=r"override inject\(self, \*\*target\) in"):
        inj.inject(path="x")
    assert not inj.injected and "no injection" in inj.failure


@pytest.mark.parametrize("injector", ["MixedIn", "StaticZero", "ClassZero"])
def test_an_inherited_static_or_class_inject_runs_end_to_end(custom, injector):
    """An inject inherited from a mixin, a staticmethod or a classmethod: REFUTED, never
    ERROR for "the check never called ctx.fault.inject()"."""
    from harness.loader import load_contract_set
    from harness.model import FalsifierOutcome
    from harness.runner import run_contracts

    from .conftest import simple_contract

    fault = f"""
falsifiers:
  - id: FALSIFY-DEMO-001
    title: zeros in the file must be noticed
    kind: fault
    target: INV-DEMO-001
    fault: {{injector: "demoinjectors:{injector}"}}
"""
    custom.contract(
        "c",
        simple_contract(
            check="demochecks:reads_file", expect="intact: {eq: true}", falsifiers=fault
        ),
    )
    contracts = load_contract_set([custom.root / "contracts"])
    result = run_contracts(contracts, contracts.criteria, jobs=1, seed=3, root=custom.root)
    f = result.criteria[0].falsifiers[0]
    assert f.outcome is FalsifierOutcome.REFUTED, f.message
    assert f.detail["injected"] is True


def test_a_custom_injector_written_the_documented_way_runs_end_to_end(custom):
    """The check calls ctx.fault.inject(path=...); the fault is REFUTED (it broke the
    invariant), never ERROR for "the check never called ctx.fault.inject()"."""
    from harness.loader import load_contract_set
    from harness.model import FalsifierOutcome
    from harness.runner import run_contracts

    from .conftest import simple_contract

    fault = """
falsifiers:
  - id: FALSIFY-DEMO-001
    title: zeros in the file must be noticed
    kind: fault
    target: INV-DEMO-001
    fault: {injector: "demoinjectors:ZeroFile", params: {keep: 4}}
"""
    custom.contract(
        "c",
        simple_contract(
            check="demochecks:reads_file", expect="intact: {eq: true}", falsifiers=fault
        ),
    )
    contracts = load_contract_set([custom.root / "contracts"])
    result = run_contracts(contracts, contracts.criteria, jobs=1, seed=3, root=custom.root)
    f = result.criteria[0].falsifiers[0]
    assert f.outcome is FalsifierOutcome.REFUTED, f.message
    assert f.detail["injected"] is True
    assert f.detail["report"] == {"path": f.detail["report"]["path"], "zeroed": 96}
