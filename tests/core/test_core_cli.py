"""The `core` click group through CliRunner: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kernels import checkpoint as ck
from kernels.cli import core
from tests.core.helpers import MICRO

TRAIN_ARGS = [
    "--family", "gpt2", "--model", json.dumps(MICRO), "--steps", "4", "--batch-size", "4",
    "--eval-every", "2", "--ckpt-every", "2", "--eval-windows", "8", "--warmup", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(core, ["train", "--out", str(run), *TRAIN_ARGS])
    assert result.exit_code == 0, result.output
    return run, result


def assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_prints_summary_and_no_progress_bar_off_tty(trained):
    run, result = trained
    assert "ablation (not for release): 4 steps" in result.output
    assert "ckpt-000004" in result.output and "sha256" in result.output
    assert "training" not in result.output  # no bar when stderr is not a TTY
    assert (run / "latest").read_text().strip() == "ckpt-000004"


def test_inspect_text_and_json(trained):
    run, _ = trained
    out = CliRunner().invoke(core, ["inspect", str(run)])
    assert out.exit_code == 0, out.output
    assert "architecture: gpt2" in out.output and "completeness:" in out.output
    assert "tokenizer: <embedded" in out.output
    js = CliRunner().invoke(core, ["inspect", str(run), "--json"])
    report = json.loads(js.output)
    assert report["tensor_family"] == "gpt2" and report["identity"] == "consistent"
    assert report["completeness"] == sum(i["points"] for i in report["breakdown"].values())


def test_eval_recomputes_stamped_val_loss(trained):
    run, _ = trained
    out = CliRunner().invoke(core, ["eval", str(run), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["matches_stamp"] is True and report["perplexity"] > 1


def test_generate_uses_embedded_tokenizer(trained):
    run, _ = trained
    out = CliRunner().invoke(
        core, ["generate", str(run), "--prompt", "def ", "--max-new-tokens", "5"]
    )
    assert out.exit_code == 0, out.output
    assert out.output.startswith("def ")


def test_stamp_then_refuse_then_repair(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "m.safetensors"
    out = CliRunner().invoke(core, ["stamp", str(run), "--architecture", "llama", "-o", str(copy)])
    assert out.exit_code == 0, out.output
    assert f"sha256 {ck.sha256_file(copy)}" in out.output
    bad = CliRunner().invoke(core, ["train", "--out", str(tmp_path / "ft"), *TRAIN_ARGS,
                                    "--init", str(copy)])  # fmt: skip
    assert_one_line_error(bad, "architecture='llama'", "'gpt2'")
    fix = CliRunner().invoke(core, ["stamp", str(copy), "--architecture", "gpt2"])
    assert fix.exit_code == 0
    ok = CliRunner().invoke(core, ["inspect", str(copy), "--json"])
    assert json.loads(ok.output)["identity"] == "consistent"


def test_errors_are_one_line(tmp_path, trained):
    run, _ = trained
    missing = CliRunner().invoke(core, ["inspect", str(tmp_path / "nope.safetensors")])
    assert_one_line_error(missing, "nope.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((run / "ckpt-000004" / "model.safetensors").read_bytes()[:1000])
    assert_one_line_error(CliRunner().invoke(core, ["eval", str(cut)]), "cut.safetensors")
    again = CliRunner().invoke(core, ["train", "--out", str(run), *TRAIN_ARGS])
    assert_one_line_error(again, "already holds a run")
    ship = CliRunner().invoke(core, ["train", "--out", str(tmp_path / "s"), *TRAIN_ARGS,
                                     "--purpose", "ship"])  # fmt: skip
    assert_one_line_error(ship, "20 training tokens per parameter")
    bad_model = CliRunner().invoke(core, ["train", "--out", str(tmp_path / "b"), *TRAIN_ARGS,
                                          "--model", '{"n_head": 3}'])  # fmt: skip
    assert_one_line_error(bad_model, "divisible")


def test_resume_finishes_a_run(tmp_path):
    run = tmp_path / "r"
    args = ["train", "--out", str(run), *TRAIN_ARGS]
    assert CliRunner().invoke(core, args).exit_code == 0
    full = (run / "ckpt-000004" / "model.safetensors").read_bytes()
    ck.write_latest(run, "ckpt-000002")
    out = CliRunner().invoke(core, ["resume", str(run)])
    assert out.exit_code == 0, out.output
    assert (run / "ckpt-000004" / "model.safetensors").read_bytes() == full


def test_progress_bar_draws_on_a_tty(monkeypatch):
    import io

    import kernels.cli as cli

    class TTY(io.StringIO):
        def isatty(self):
            return True

    stream = TTY()
    monkeypatch.setattr(cli.sys, "stderr", stream)
    update, close = cli.progress_reporter(4)
    for step in range(1, 5):
        update(step, 4, {"loss": 1.5})
    close()
    assert "4/4" in stream.getvalue() and "loss 1.500" in stream.getvalue()
