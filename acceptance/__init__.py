"""The executable checks the shipped contracts bind to, one module per area.

A check is ``def name(ctx: CheckContext) -> dict`` returning observations. It
runs the real core (``kernels``) on the shipped data; thresholds live in the
contracts' ``expect:`` blocks, never here.
"""
