"""Our attack library: the attacks the shipped contracts make on our own core.

``mutants`` holds known-bad variants of the code under test that the shipped
contracts patch in by dotted name; ``strategies`` holds Hypothesis strategies
for property falsifiers; ``data_faults`` corrupts the training data a check
trains on. The machinery that runs them (patching, searching, injecting, the
generic injectors) is the tool's: ``harness.falsify``. This package may import
``harness`` and ``kernels``, never ``acceptance``.
"""
