"""Lint warnings for what loads fine and can only go wrong at run time (issue 15,
item 10), and the loader's hints for the YAML that was meant differently: each
warning fires on a contract with the problem, names file:line and what to change,
and stays silent on the same contract without it."""

from __future__ import annotations

import math

import pytest
import yaml
from click.testing import CliRunner

from harness.cli import cli
from harness.errors import ContractError
from harness.lint import lint_paths
from harness.loader import load_contract
from harness.yamlsrc import load_yaml, number_spelling

from .conftest import simple_contract


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def warnings(project, resolve: bool = True) -> list[str]:
    _, diags = lint_paths([project.root / "contracts"], project.root, resolve=resolve)
    assert not [d for d in diags if d.severity == "error"], [d.format() for d in diags]
    return [d.format() for d in diags if d.severity == "warning"]


def mutant(patch: str = "", params: str = "", inv: str = "INV-DEMO-001", n: str = "001") -> str:
    block = ", ".join(x for x in (patch and f"patch: {patch}", params and f"params: {params}") if x)
    return f"""
  - id: FALSIFY-DEMO-{n}
    title: a mutant
    kind: mutant
    target: {inv}
    mutant: {{{block}}}
"""


def falsifiers(*items: str) -> str:
    return "\nfalsifiers:" + "".join(items)


PROPERTY = """
  - id: FALSIFY-DEMO-101
    title: a property search
    kind: property
    target: INV-DEMO-001
    property: {strategy: "demochecks:strategy_ints"}
"""
FAULT = """
  - id: FALSIFY-DEMO-102
    title: a fault
    kind: fault
    target: INV-DEMO-001
    fault: {injector: truncate_file}
"""


def test_the_plain_contract_has_no_warning(project):
    project.contract("c", simple_contract())
    assert warnings(project) == []


# --------------------------------------------------------------------------- never runs


SECOND = """  - id: INV-DEMO-002
    title: a second invariant
    check: {python: "demochecks:ok"}
    expect:
      value: {eq: 1}
"""
SECOND_MUTANT = mutant(
    '{"demochecks:ok": "demochecks:always_value_2"}', inv="INV-DEMO-002", n="002"
)


def test_an_invariant_no_criterion_lists_is_a_warning(project):
    unlisted = simple_contract().replace("\nfalsifiers:", SECOND + "falsifiers:" + SECOND_MUTANT)
    project.contract("c", unlisted)
    assert warnings(project) == [
        "contracts/c.yaml:18:5: warning: INV-DEMO-002 is listed by no criterion: it never runs "
        "[at INV-DEMO-002] (hint: add INV-DEMO-002 to a criterion's invariants: [...], or "
        "remove it and its falsifiers)"
    ]
    project.contract("c", unlisted.replace("[INV-DEMO-001]", "[INV-DEMO-001, INV-DEMO-002]"))
    assert warnings(project) == []


def test_an_invariant_listed_by_a_criterion_of_another_file_is_listed(project):
    project.contract(
        "c", simple_contract().replace("[INV-DEMO-001]", "[INV-DEMO-001, INV-DEMO-002]")
    )
    project.contract(
        "d", "version: 1\ncontract: {name: d, title: d}\ninvariants:\n" + SECOND
        + "falsifiers:" + SECOND_MUTANT,
    )  # fmt: skip
    assert warnings(project) == []


# --------------------------------------------------------------------------- never GO


@pytest.mark.parametrize(
    ("attacks", "kinds"),
    [((PROPERTY,), "property"), ((FAULT,), "fault"), ((PROPERTY, FAULT), "fault and property")],
)
def test_an_invariant_without_a_mutant_can_never_be_go(project, attacks, kinds):
    project.contract("c", simple_contract(falsifiers=falsifiers(*attacks)))
    assert warnings(project) == [
        f"contracts/c.yaml:11:5: warning: INV-DEMO-001 has no mutant, only {kinds} falsifiers: "
        "it can never be GO (no killed mutant shows its check can go red), so its criterion "
        "stays UNPROVEN [at INV-DEMO-001] (hint: add a falsifier with kind: mutant and target: "
        "INV-DEMO-001 (mutant: patch: known-bad code, or mutant: params: a refuting fixture))"
    ]
    with_mutant = falsifiers(*attacks, mutant(params="{value: 2}"))
    project.contract("c", simple_contract(falsifiers=with_mutant))
    assert warnings(project) == []


def test_a_property_only_invariant_is_unproven_when_it_runs(project):
    """What the warning predicts: the search survives, and the criterion is UNPROVEN."""
    project.contract(
        "c",
        simple_contract(
            check="demochecks:square_is_nonneg",
            expect="square: {ge: 0}",
            falsifiers=falsifiers(PROPERTY),
        ),
    )
    assert any("can never be GO" in w for w in warnings(project))
    r = invoke("run", "-j", "1")
    assert r.exit_code == 1
    assert "INV-DEMO-001: no killed mutant or refuting fixture" in r.output


# --------------------------------------------------------------------------- mutants


def test_a_mutant_that_patches_a_name_with_itself_is_a_warning(project):
    same = falsifiers(mutant('{"demochecks:ok": "demochecks:ok"}'))
    project.contract("c", simple_contract(falsifiers=same))
    assert warnings(project) == [
        "contracts/c.yaml:20:5: warning: FALSIFY-DEMO-001 patches demochecks:ok with itself: the "
        "mutant changes nothing and can never be KILLED [at FALSIFY-DEMO-001.mutant.patch] "
        '(hint: replace it with a known-bad variant: "demochecks:ok": '
        '"your_mutants_module:bad_ok")'
    ]
    assert warnings(project, resolve=False) != []  # read from the text: no import needed
    project.contract("c", simple_contract())
    assert warnings(project) == []


def test_a_mutant_that_patches_with_the_same_object_under_another_name(project):
    (project.root / "aliases.py").write_text("from demochecks import ok as same_ok\n")
    alias = falsifiers(mutant('{"demochecks:ok": "aliases:same_ok"}'))
    project.contract("c", simple_contract(falsifiers=alias))
    (w,) = warnings(project)
    assert w.startswith(
        "contracts/c.yaml:20:5: warning: FALSIFY-DEMO-001 patches demochecks:ok with "
        "aliases:same_ok, the same object: the mutant changes nothing and can never be KILLED"
    )
    assert warnings(project, resolve=False) == []  # only lint that imports can tell


def test_a_patch_with_params_says_only_the_params_can_kill(project):
    both = falsifiers(mutant('{"demochecks:ok": "demochecks:ok"}', params="{value: 2}"))
    project.contract("c", simple_contract(falsifiers=both))
    (w,) = warnings(project)
    assert "patches demochecks:ok with itself: the patch changes nothing (only its params" in w


COMMAND = simple_contract(expect="exit_code: {eq: 0}").replace(
    "      python: demochecks:ok\n      params: {}\n", "      command: [echo, hello]\n"
)


def test_a_patch_mutant_of_a_command_check_is_a_warning(project):
    project.contract("c", COMMAND)  # simple_contract's mutant patches demochecks:ok
    assert warnings(project) == [
        "contracts/c.yaml:19:5: warning: FALSIFY-DEMO-001 patches demochecks:ok, but "
        "INV-DEMO-001's check is a command: a patch changes the worker's Python, never the "
        "command's process, so the mutant can never be KILLED [at FALSIFY-DEMO-001.mutant.patch] "
        "(hint: attack a command check with known-bad params (mutant: params: {...}, passed as "
        "HARNESS_PARAMS), or bind the check as python: module:function)"
    ]
    r = invoke("run", "-j", "1")  # what the warning predicts
    assert r.exit_code == 1 and "mutant FALSIFY-DEMO-001 survived" in r.output
    with_params = COMMAND.split("\nfalsifiers:")[0] + falsifiers(mutant(params="{x: 1}"))
    project.contract("c", with_params)
    assert warnings(project) == []


# --------------------------------------------------------------------------- 1e-6


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("1e-6", "1.0e-6"),
        ("1e6", "1.0e+6"),
        ("1.0e6", "1.0e+6"),
        ("-2E-3", "-2.0E-3"),
        (".5e3", "0.5e+3"),
        ("3.e2", "3.0e+2"),
        ("1.0e-6", None),
        ("1.0e+6", None),
        ("12", None),
        ("1e", None),
        ("version 1e6", None),
    ],
)
def test_number_spelling_gives_what_yaml_11_reads_as_the_number(text, fixed):
    assert number_spelling(text) == fixed
    if fixed is not None:
        assert isinstance(yaml.safe_load(f"x: {text}")["x"], str)  # the trap
        value = yaml.safe_load(f"x: {fixed}")["x"]
        assert isinstance(value, float) and math.isclose(value, float(text))


def test_only_unquoted_values_are_noted():
    _, pos = load_yaml("a: 1e-6\nb: '1e-6'\nc: [1e5, \"2e5\"]\nd: 1.0e-6\n1e3: x\n")
    assert pos.number_texts == {("a",): "1e-6", ("c", 0): "1e5"}


def test_a_number_read_as_text_is_a_warning_where_no_schema_catches_it(project):
    body = simple_contract(expect="value: {eq: 1e-6}", params="{lr: 1e-3}")
    project.contract("c", body)
    assert warnings(project) == [
        "contracts/c.yaml:15:20: warning: 1e-3 is read as the text '1e-3', not a number (YAML "
        "1.1 needs a dot and a signed exponent) [at invariants[0].check.params.lr] (hint: write "
        "1.0e-3 for the number, or quote it ('1e-3') if text is meant)",
        "contracts/c.yaml:17:19: warning: 1e-6 is read as the text '1e-6', not a number (YAML "
        "1.1 needs a dot and a signed exponent) [at invariants[0].expect.value.eq] (hint: write "
        "1.0e-6 for the number, or quote it ('1e-6') if text is meant)",
    ]
    for fixed in ("value: {eq: 1.0e-6}", "value: {eq: '1e-6'}"):
        project.contract("c", simple_contract(expect=fixed, params="{lr: 1.0e-3}"))
        assert warnings(project) == []


def test_a_number_read_as_text_where_a_number_is_required_gets_the_spelling(project):
    path = project.contract("c", simple_contract(expect="value: {le: 1e-6}"))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    (d,) = err.value.diagnostics
    assert d.format() == (
        "contracts/c.yaml:17:19: error: 'le' must be of type number (got str '1e-6') "
        "[at invariants[0].expect.value.le] (hint: YAML 1.1 reads 1e-6 as text: write 1.0e-6 "
        "(a dot in the number, a sign in the exponent))"
    )


# --------------------------------------------------------------------------- {eq: 0}


@pytest.mark.parametrize(
    ("expect", "hint"),
    [
        ("value: 0", "write a comparison mapping: value: {eq: 0} (comparators: eq ne le lt ge "
                     "gt approx in matches)"),
        ("value: true", "write a comparison mapping: value: {eq: true} (comparators:"),
        ("value: alpha", 'write a comparison mapping: value: {eq: "alpha"} (comparators:'),
        ("value: 1e-6", "write a comparison mapping: value: {eq: 1.0e-6} (comparators:"),
        ('value: "<= 0.5"', "write a comparison mapping: value: {le: 0.5})"),
        ('value: ">=3"', "write a comparison mapping: value: {ge: 3})"),
        ("value: [1, 2]", "write a comparison mapping: value: {eq: VALUE} (comparators:"),
    ],
)  # fmt: skip
def test_a_scalar_where_a_comparison_was_meant_gets_a_hint(project, expect, hint):
    path = project.contract("c", simple_contract(expect=expect))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    (d,) = err.value.diagnostics
    assert d.format().startswith("contracts/c.yaml:17:14: error: 'value' must be of type object")
    assert f"(hint: {hint}" in d.format()


def test_expect_that_is_not_a_mapping_gets_a_hint(project):
    path = project.contract(
        "c", simple_contract(expect="").replace("    expect:\n      \n", "    expect: 0\n")
    )
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert any(
        "'expect' must be of type object" in d.format()
        and "expect maps each observation to comparisons: expect: {loss: {le: 0.5}}" in d.format()
        for d in err.value.diagnostics
    ), [d.format() for d in err.value.diagnostics]


# --------------------------------------------------------------------------- the command


def test_warnings_never_change_lint_s_exit_code(project):
    project.contract(
        "c", simple_contract(expect="value: {eq: 1e-6}", falsifiers=falsifiers(PROPERTY))
    )
    r = invoke("lint")
    assert r.exit_code == 0, r.output
    assert "0 errors, 2 warnings" in r.output
    assert "contracts/c.yaml:17:19: warning: 1e-6 is read as the text" in r.output
