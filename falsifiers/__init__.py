"""Attacks on invariants: property search, fault injection, mutants.

``engine`` runs a declared falsifier in a worker; ``faults`` is the injector
library; ``mutants`` holds known-bad variants of the code under test that the
shipped contracts patch in by dotted name; ``strategies`` holds Hypothesis
strategies for property falsifiers.
"""
