"""Exit codes, one documented enum (they follow pytest's)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    GO = 0  #: every selected blocker criterion is GO
    NOT_GO = 1  #: at least one blocker criterion is NO-GO or UNPROVEN
    INTERRUPTED = 2  #: Ctrl-C or a signal stopped the run
    INTERNAL_ERROR = 3  #: a bug in the harness itself
    USAGE_ERROR = 4  #: bad command line, configuration or contract
    NO_SELECTION = 5  #: the selection matched nothing
