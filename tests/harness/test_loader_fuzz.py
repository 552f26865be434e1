"""Fuzz the loader with mutations of the shipped contracts (finding 7).

A generated contract, however broken, either loads or is refused with a
contract error (exit 4) whose every line points into the file: never another
exception, never a crash. The mutations are those a generator, an editor or an
attacker makes: lines deleted, duplicated, swapped or re-indented; random YAML
tokens and tags inserted; the file cut short; scalars replaced by huge
numbers, bad dates, tags, anchors and aliases.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.exitcodes import ExitCode
from harness.loader import cross_check, load_contract

CONTRACTS = sorted((Path(__file__).parents[2] / "contracts").glob("*.yaml"))
TEXTS = [p.read_text("utf-8") for p in CONTRACTS]

TOKENS = [
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "?",
    "? ",
    "|",
    ">",
    "#",
    "'",
    '"',
    "\t",
    "&a ",
    "*a",
    "*a ",
    "&b [1, 2]",
    "*nope",
    "<<: *a",
    "!!int ",
    "!!float ",
    "!!timestamp ",
    "!!binary ",
    "!!bool ",
    "!!str ",
    "!!null ",
    "!!set ",
    "!!omap ",
    "!!python/object:os.system ",
    "!!python/object/apply:os.system ",
    "!local ",
    "! ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "@",
    "`",
    "\\",
    "\x00",
    "\ufeff",
    "\u2028",
    "~",
    "null",
    "yes",
    "on",
    "=",
    "0x",
    "1_0",
    "1:2:3",
    ".inf",
    ".nan",
    "2001-13-45",
    "9" * 5000,
]

SCALARS = [
    "9" * 4301,
    "-" + "9" * 5000,
    "0x" + "f" * 5000,
    "0o" + "7" * 5000,
    "1" + ":59" * 2000,
    "123456789012345678901234567890",
    "1e400",
    "1.0e400",
    "-.inf",
    ".nan",
    "2001-13-45",
    "2001-02-29",
    "2001-12-14t21:59:43.10-05:00",
    "2001-01-01 25:61:00",
    "!!int abc",
    "!!int ''",
    "!!int 0x",
    "!!float x",
    "!!float ''",
    "!!timestamp 2001-99-99",
    "!!timestamp x",
    "!!bool maybe",
    "!!binary x",
    "!!binary QUJD",
    "!!null x",
    "!!str [1]",
    "!!python/object:os.system x",
    "!!python/name:os.system ''",
    "&a value",
    "&a [1, 2, 3]",
    "&a {x: 1}",
    "*a",
    "*undefined",
    "[*a, *a, *a]",
    "{}",
    "[]",
    "~",
    "yes",
    "on",
    "'quoted'",
    '"\\x00\\uffff"',
    "|\n  block",
    "TODO",
    "AC-X-001",
    "INV-NOPE-999",
]

LAUGHS = "\n".join(
    ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 8)]
)

# each kind twice, the alias bomb once: most examples should get past the limits
KINDS = 2 * ["delete", "duplicate", "swap", "insert", "indent", "truncate", "scalar"] + ["laughs"]

SCALAR_AT = re.compile(r"(:\s+|-\s+)([^\s\[\]{},#][^#]*?)\s*$")


@st.composite
def mutation(draw: st.DrawFn, lines: list[str]) -> list[str]:
    n = len(lines)
    kind = draw(st.sampled_from(KINDS))
    i = draw(st.integers(0, max(n - 1, 0)))
    if not lines:
        return [draw(st.sampled_from(TOKENS))]
    if kind == "delete":
        return lines[:i] + lines[i + 1 :]
    if kind == "duplicate":
        return lines[: i + 1] + [lines[i]] + lines[i + 1 :]
    if kind == "swap":
        j = draw(st.integers(0, n - 1))
        out = list(lines)
        out[i], out[j] = out[j], out[i]
        return out
    if kind == "insert":
        token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)))
        col = draw(st.integers(0, len(lines[i])))
        return lines[:i] + [lines[i][:col] + token + lines[i][col:]] + lines[i + 1 :]
    if kind == "indent":
        delta = draw(st.sampled_from([-4, -2, -1, 1, 2, 4]))
        line = lines[i]
        line = " " * delta + line if delta > 0 else line[min(-delta, len(line)) :]
        return lines[:i] + [line] + lines[i + 1 :]
    if kind == "truncate":
        text = "\n".join(lines)
        cut = draw(st.integers(0, len(text)))
        return text[:cut].split("\n")
    if kind == "scalar":
        m = SCALAR_AT.search(lines[i])
        if not m:
            return lines
        new = draw(st.sampled_from(SCALARS))
        return lines[:i] + [lines[i][: m.start(2)] + new] + lines[i + 1 :]
    return LAUGHS.split("\n") + lines  # kind == "laughs"


@st.composite
def mutated_contract(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(TEXTS)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        lines = draw(mutation(lines))
    return "\n".join(lines)


@pytest.mark.slow  # ~20 s: 2,000 examples
@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=mutated_contract())
def test_a_mutated_contract_loads_or_is_a_contract_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz" / "mutated.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, "utf-8", errors="surrogatepass")
    try:
        contract = load_contract(path)
    except HarnessError as exc:
        assert exc.exit_code == ExitCode.USAGE_ERROR == 4, exc
        lines = exc.report_lines()
        assert len(lines) <= 22, lines  # 20 problems, "... and N more", the summary
        for diag in getattr(exc, "diagnostics", []):
            assert diag.file and diag.line >= 1 and diag.col >= 1, diag
            assert "\n" not in diag.format() and len(diag.format()) < 2000, diag
        return
    cross_check([contract])  # a contract that loads can be checked as part of a set


def test_every_shipped_contract_still_loads() -> None:
    assert len(CONTRACTS) >= 5
    for p in CONTRACTS:
        load_contract(p)
