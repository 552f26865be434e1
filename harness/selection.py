"""Choose criteria: ``-k`` keyword expressions, ``--tag``, ``--criterion``.

``-k`` works like pytest's: words matched case-insensitively as substrings of
a criterion's ID, title, tags, contract name and invariant IDs, combined with
``and``, ``or``, ``not`` and parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from harness.errors import UsageError
from harness.model import ContractSet, Criterion

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def compile_keyword(expr: str) -> Callable[[str], bool]:
    """Compile a -k expression into a predicate over a haystack string."""
    tokens = _TOKEN.findall(expr)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise UsageError(f"-k {expr!r}: expression ends too early")
        pos += 1
        return tokens[pos - 1]

    def parse_or() -> Callable[[str], bool]:
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda h: a(h) or b(h))(left, right)
        return left

    def parse_and() -> Callable[[str], bool]:
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda h: a(h) and b(h))(left, right)
        return left

    def parse_not() -> Callable[[str], bool]:
        if peek() == "not":
            take()
            inner = parse_not()
            return lambda h: not inner(h)
        tok = take()
        if tok == "(":
            inner = parse_or()
            if take() != ")":
                raise UsageError(f"-k {expr!r}: missing ')'")
            return inner
        if tok in (")", "and", "or"):
            raise UsageError(f"-k {expr!r}: unexpected {tok!r}")
        word = tok.lower()
        return lambda h: word in h

    if not tokens:
        raise UsageError("-k needs an expression")
    pred = parse_or()
    if pos != len(tokens):
        raise UsageError(f"-k {expr!r}: unexpected {tokens[pos]!r}")
    return pred


def haystack(contracts: ContractSet, c: Criterion) -> str:
    k = contracts.contract_of(c.id)
    parts = [c.id, c.title, k.name, *c.tags, *c.invariants]
    return " ".join(parts).lower()


def select(
    contracts: ContractSet,
    keyword: str | None = None,
    tags: Sequence[str] = (),
    criterion_ids: Sequence[str] = (),
) -> list[Criterion]:
    known = {c.id for c in contracts.criteria}
    unknown = [i for i in criterion_ids if i not in known]
    if unknown:
        raise UsageError(
            f"--criterion {', '.join(unknown)}: no such criterion (see `harness list`)"
        )
    pred = compile_keyword(keyword) if keyword else None
    chosen = []
    for c in contracts.criteria:
        if criterion_ids and c.id not in criterion_ids:
            continue
        if tags and not set(tags) & set(c.tags):
            continue
        if pred is not None and not pred(haystack(contracts, c)):
            continue
        chosen.append(c)
    return chosen
