"""Known-bad variants of the data layer that differ only on a documented input form
the data checks did not plant before (issue 13, class 1: oracles narrower than the
spec). Each changes behaviour on one form only, so a generator that plants a few
forms stays green against it (contracts/data.yaml).
"""

from __future__ import annotations

import hashlib
import re

from kernels.data import pii as _pii

# ---------------------------------------------------------------------- PII

#: the phone pattern with the domestic 3-3-4 form written for dashes only: 415-555-0100
#: is a phone, 415.555.0100 is not (kernels.data.pii:_PHONE)
PHONE_DASHES_ONLY = re.compile(
    _pii._PHONE.pattern.replace(r"|\d{3}[.-]\d{3}[.-]\d{4}", r"|\d{3}-\d{3}-\d{4}")
)
assert PHONE_DASHES_ONLY.pattern != _pii._PHONE.pattern

#: the card pattern with the 4-6-x grouping written for Amex (4-6-5) only: a Diners
#: number grouped 4-6-4 is not a card (kernels.data.pii:_CARD)
CARD_WITHOUT_DINERS = re.compile(
    _pii._CARD.pattern.replace(r"\3\d{4,5}", r"\3\d{5}")
)  # fmt: skip
assert CARD_WITHOUT_DINERS.pattern != _pii._CARD.pattern

#: the IPv4 pattern without its guard against a longer dotted number: the first four
#: parts of a version string 1.2.3.4.5 are an address (kernels.data.pii:_IPV4)
IPV4_IN_VERSION_STRINGS = re.compile(_pii._IPV4.pattern.replace(r"(?![\w]|\.\d)", r"(?![\w])"))
assert IPV4_IN_VERSION_STRINGS.pattern != _pii._IPV4.pattern

#: reserved example domains matched as a bare suffix: an email at counterexample.com
#: counts as one under example.com and is skipped (the scanner's own bug until issue 13;
#: kernels.data.pii:_RESERVED_EMAIL_SUBDOMAINS)
RESERVED_EMAIL_SUFFIX_WITHOUT_DOT = _pii._RESERVED_EMAIL_DOMAINS


# ----------------------------------------------------------------- pipeline


def dedupe_key_spaces_only(text: str) -> str:
    """A dedupe key that collapses runs of spaces (what a copy-paste doubles), not every
    whitespace run: a copy with tabs for spaces or its lines re-wrapped is kept
    (kernels.data.pipeline:dedupe_key)."""
    return hashlib.sha256(re.sub(r" +", " ", text.strip()).encode("utf-8")).hexdigest()
