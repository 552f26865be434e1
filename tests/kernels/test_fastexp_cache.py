"""The vectorized exp and the numba cache guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kernels import _jitcache
from kernels.ops.fastexp import exp


def test_fast_exp_within_one_ulp_over_its_range():
    x = np.linspace(-87.0, 88.0, 200_001, dtype=np.float32)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(exp(x).astype(np.float64) - ref) / ref
    assert rel.max() < 2.0**-23


def test_fast_exp_clamps_instead_of_overflowing():
    y = exp(np.array([-1e30, -100.0, 0.0, 100.0, 1e30], np.float32))
    assert np.isfinite(y).all()
    assert y[2] == 1.0 and 0 < y[0] < 1e-37 and y[4] > 1e38


def test_float64_exp_uses_libm():
    x = np.linspace(-700, 700, 1001)
    np.testing.assert_allclose(exp(x), np.exp(x), rtol=1e-15)


def test_source_digest_is_stable_and_refresh_is_idempotent():
    assert _jitcache.source_digest() == _jitcache.source_digest()
    _jitcache.refresh()
    assert _jitcache.refresh() is False


def test_import_kernels_does_not_import_numba():
    code = "import sys, kernels, kernels.config, kernels.reference; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_grads_byte_identical_across_processes():
    code = textwrap.dedent("""
        import hashlib, numpy as np
        from kernels.config import tiny_config
        from kernels.models.registry import build_model
        h = hashlib.sha256()
        for fam in ("gpt2", "llama"):
            m = build_model(tiny_config(fam, 128))
            p = m.init_params(3)
            tok = np.random.default_rng(1).integers(0, 128, (4, 33)).astype(np.int32)
            loss, g = m.loss_and_grads(p, tok)
            h.update(np.float64(loss).tobytes())
            for name in sorted(p):
                h.update(p[name].tobytes())
                h.update(g[name].tobytes())
        print(h.hexdigest())
    """)
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].strip()) == 64


def test_nan_propagates_through_exp_and_cross_entropy():
    from kernels.ops import cross_entropy, cross_entropy_backward

    assert np.isnan(exp(np.array([np.nan], np.float32))[0])
    z = np.zeros((2, 5), np.float32)
    z[1, 2] = np.nan
    assert np.isnan(cross_entropy(z, np.array([0, 1])))
    loss, dz = cross_entropy_backward(z, np.array([0, 1]))
    assert np.isnan(loss) and np.isnan(dz[1]).all() and np.isfinite(dz[0]).all()
