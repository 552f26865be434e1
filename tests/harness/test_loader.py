from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import ContractError
from harness.loader import load_contract, load_contract_set
from harness.yamlsrc import MAX_BYTES

from .conftest import simple_contract

MALFORMED = sorted((Path(__file__).parent.parent / "fixtures" / "malformed").glob("*.yaml"))


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_each_malformed_contract_is_refused_at_its_line(path: Path) -> None:
    want = int(re.search(r"expect-line:\s*(\d+)", path.read_text()).group(1))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    diags = info.value.diagnostics
    assert diags, "a refusal must carry at least one diagnostic"
    assert want in [d.line for d in diags], [d.format() for d in diags]
    for d in diags:
        text = d.format()
        assert text.startswith(f"{d.file}:{d.line}:{d.col}: error: ")
        assert "\n" not in text


def test_unknown_key_names_the_key_and_suggests(project) -> None:
    path = project.contract("c", simple_contract().replace("severity: blocker", "severty: blocker"))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    text = str(info.value)
    assert "unknown key 'severty'" in text and "did you mean 'severity'" in text
    assert "c.yaml:6:5:" in text


def test_bad_enum_message_lists_choices(project) -> None:
    path = project.contract(
        "c", simple_contract().replace("severity: blocker", "severity: critical")
    )
    with pytest.raises(
        ContractError,
        match=r"'severity' must be one of blocker, warn "
        r"\(got 'critical'\)",
    ):
        load_contract(path)


def test_valid_contract_keeps_locations(project) -> None:
    path = project.contract("c", simple_contract())
    k = load_contract(path)
    assert k.criteria[0].id == "AC-DEMO-001"
    assert k.criteria[0].location.line == 4
    assert k.invariants[0].location.line == 11
    assert k.falsifiers[0].target == "INV-DEMO-001"
    assert len(k.sha256) == 64


def test_duplicate_ids_across_files_are_refused(project) -> None:
    project.contract("a", simple_contract())
    project.contract(
        "b", simple_contract(cid="AC-DEMO-002").replace("name: ac-demo-002", "name: other")
    )
    with pytest.raises(ContractError, match="duplicate ID INV-DEMO-001"):
        load_contract_set([project.root / "contracts"])


def test_unresolved_reference_is_refused_with_hint(project) -> None:
    project.contract(
        "a", simple_contract().replace("invariants: [INV-DEMO-001]", "invariants: [INV-DEMO-01]")
    )
    with pytest.raises(ContractError, match="refers to INV-DEMO-01.*did you mean INV-DEMO-001"):
        load_contract_set([project.root / "contracts"])


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_BYTES + "\nversion: 1\n")
    with pytest.raises(ContractError, match="larger than"):
        load_contract(path)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match="more than"):
        load_contract(path)


def test_missing_path_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no such file"):
        load_contract_set([tmp_path / "nope"])


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"version: 1\ncontract: {name: x, title: \xe9}\n")
    with pytest.raises(ContractError, match="UTF-8"):
        load_contract(path)


yamlish = st.text(
    alphabet=st.sampled_from(list("abcdefINV-AC:{}[],'\"&*!|>#\n\t -0123456789.")), max_size=300
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=yamlish)
def test_fuzz_loader_raises_only_contract_errors_with_location(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_text(text)
    try:
        load_contract(path)
    except ContractError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.line >= 1 and d.col >= 1 and d.file


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.sampled_from(["version: 1\n", "version: 1\ncontract: {name: a, title: b}\n"]),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=6),
        st.one_of(
            st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=3)
        ),
        max_size=3,
    ),
)
def test_fuzz_structured_documents(tmp_path_factory, prefix, extra) -> None:
    import yaml

    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_text(prefix + (yaml.safe_dump(extra) if extra else ""))
    try:
        load_contract(path)
    except ContractError as exc:
        assert all(d.line >= 1 for d in exc.diagnostics)
