from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernels.data.manifest import datasets_root


@pytest.fixture()
def datasets_copy(tmp_path: Path) -> Path:
    """A private copy of datasets/ (manifest and files) that a test may corrupt."""
    dst = tmp_path / "datasets"
    shutil.copytree(datasets_root(), dst)
    return dst


@pytest.fixture(scope="session")
def shipped_tok():
    from kernels.data.pipeline import shipped_tokenizer

    return shipped_tokenizer()


@pytest.fixture(scope="session")
def corpus_result(shipped_tok):
    from kernels.data.pipeline import run_pipeline

    return run_pipeline(tokenizer=shipped_tok)
