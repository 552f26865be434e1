"""INV-REL-010: every file of a sealed bundle, attacked, is named by verify; and the
realistic verify bugs it must catch."""

from __future__ import annotations

import pytest

import harness.verify as verify
from acceptance.release_evidence import bundle_tampering_named
from falsifiers.mutants import release_evidence as mutants
from harness.context import CheckContext


def _run(tmp_path):
    return bundle_tampering_named(CheckContext({}, 1, tmp_path / "s", tmp_path / "a", "INV"))


def test_every_attacked_file_is_named(tmp_path):
    obs = _run(tmp_path)
    assert obs["files"] >= 10 and obs["additions"] >= 9 and obs["clean_problems"] == 0
    assert obs["flips_unnamed"] == obs["deletions_unnamed"] == obs["additions_unnamed"] == 0


@pytest.mark.parametrize(
    ("name", "mutant"),
    [
        ("build_manifest", mutants.build_manifest_skipping_seals_and_dotfiles),
        ("_check_run_files", mutants.check_run_files_exist_only),
        ("_check_manifest", mutants.check_manifest_listed_only),
    ],
)
def test_verify_bugs_are_caught(tmp_path, monkeypatch, name, mutant):
    monkeypatch.setattr(verify, name, mutant)
    obs = _run(tmp_path)
    assert obs["flips_unnamed"] + obs["deletions_unnamed"] + obs["additions_unnamed"] > 0
