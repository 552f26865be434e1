"""Shipped datasets and the data layer: manifest, tokenizer, pipeline, digits, PII scan.

Importing this package does not import numba; only ``pipeline`` (n-gram hashing)
does, and only when its kernel is first called, and ``drift`` (PSI/KS kernels) when
it is imported. ``governance`` (the training gate) and ``audit`` do not.
"""
