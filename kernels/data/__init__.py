"""Shipped datasets and the data layer: manifest, tokenizer, pipeline, digits, PII scan.

Importing this package does not import numba; only ``pipeline`` (n-gram hashing)
does, and only when its kernel is first called.
"""
