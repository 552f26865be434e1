"""Model families (importing this package imports numba)."""
