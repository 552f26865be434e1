"""Hypothesis strategies for the shipped property falsifiers, one module per area.

Each strategy function returns a strategy of params dicts merged into the
invariant's params. Keep the values JSON-able so counterexamples can be saved
and replayed.
"""
