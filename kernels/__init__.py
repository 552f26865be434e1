"""The numba training and inference core (kernels/API.md)."""

from kernels._blas import load_cython_blas

load_cython_blas()  # before numba's first compilation: its BLAS without all of scipy.linalg
