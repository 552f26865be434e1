"""Exit codes, one documented enum (they follow pytest's)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    #: the gate passed: no selected blocker criterion is as bad as ``--fail-on`` (by
    #: default: none is NO-GO or UNPROVEN; a fast run's UNPROVEN-FAST passes)
    GO = 0
    NOT_GO = 1  #: a blocker criterion is NO-GO or UNPROVEN (or as ``--fail-on`` says)
    INTERRUPTED = 2  #: Ctrl-C or a signal stopped the run
    INTERNAL_ERROR = 3  #: a bug in the harness itself
    USAGE_ERROR = 4  #: bad command line, configuration or contract
    NO_SELECTION = 5  #: the selection matched nothing
