from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.loader import load_contract_set
from harness.selection import compile_keyword, select

from .conftest import simple_contract


@pytest.mark.parametrize(
    "expr,hay,expected",
    [
        ("repro", "ac-repro-001 reproducible", True),
        ("REPRO", "ac-repro-001", True),
        ("repro and not slow", "ac-repro-001 fast", True),
        ("repro and not fast", "ac-repro-001 fast", False),
        ("a or b", "b", True),
        ("(a or b) and c", "b c", True),
        ("(a or b) and c", "b", False),
        ("not not a", "a", True),
    ],
)
def test_keyword_expressions(expr, hay, expected):
    assert compile_keyword(expr)(hay) is expected


@pytest.mark.parametrize("expr", ["", "a and", "(a", "a)", "and a", "a b"])
def test_bad_keyword_expressions(expr):
    with pytest.raises(UsageError):
        compile_keyword(expr)


@pytest.fixture
def two(project):
    project.contract(
        "train",
        simple_contract(
            cid="AC-TRAIN-001", inv="INV-TRAIN-001", tags="[training, slow]", title="loss goes down"
        ),
    )
    project.contract(
        "data",
        simple_contract(
            cid="AC-DATA-001", inv="INV-DATA-001", tags="[data]", title="manifest digests"
        ),
    )
    return load_contract_set([project.root / "contracts"])


def test_select_by_keyword_tag_and_id(two):
    assert [c.id for c in select(two, keyword="loss")] == ["AC-TRAIN-001"]
    assert [c.id for c in select(two, keyword="inv-data")] == ["AC-DATA-001"]
    assert [c.id for c in select(two, tags=["data"])] == ["AC-DATA-001"]
    assert [c.id for c in select(two, criterion_ids=["AC-TRAIN-001"])] == ["AC-TRAIN-001"]
    assert len(select(two)) == 2
    assert select(two, keyword="nothing-here") == []


def test_unknown_criterion_is_a_usage_error(two):
    with pytest.raises(UsageError, match="AC-NOPE-001"):
        select(two, criterion_ids=["AC-NOPE-001"])
