from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kernels.data.build_manifest import build_entries, render
from kernels.data.manifest import (
    REQUIRED,
    DatasetDigestError,
    DatasetMissingError,
    ManifestError,
    dataset_path,
    datasets_root,
    load_manifest,
    sha256_file,
    verify_all,
)

NAMES = {"pystdlib", "digits", "tokenizer-1024"}


def test_manifest_lists_every_shipped_dataset_with_required_fields():
    m = load_manifest()
    assert NAMES <= set(m.names())
    raw = yaml.safe_load(m.path.read_text())
    for entry in raw["datasets"]:
        for key in REQUIRED:
            assert key in entry, (entry["name"], key)
        assert entry["license"] and entry["source"]
        assert (m.root / entry["license_file"]).is_file()
        assert isinstance(entry["pii"], bool)


def test_every_file_matches_its_digest_and_size():
    m = load_manifest()
    assert verify_all(m) == {n: "ok" for n in m.names()}
    for e in m.datasets.values():
        p = m.root / e.path
        assert p.stat().st_size == e.size_bytes
        assert sha256_file(p) == e.sha256


def test_datasets_total_size_is_modest():
    total = sum(p.stat().st_size for p in datasets_root().rglob("*") if p.is_file())
    assert total < 5_000_000
    assert load_manifest()["pystdlib"].size_bytes >= 1_000_000


def test_manifest_is_up_to_date_with_the_files():
    root = datasets_root()
    assert render(build_entries(root)) == (root / "manifest.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(NAMES))
def test_digest_mismatch_is_refused_with_a_one_line_message(datasets_copy: Path, name: str):
    m = load_manifest(datasets_copy / "manifest.yaml")
    p = datasets_copy / m[name].path
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit
    p.write_bytes(bytes(data))
    with pytest.raises(DatasetDigestError) as ei:
        dataset_path(name, manifest=m)
    err = ei.value
    assert isinstance(err, ValueError)
    msg = str(err)
    assert "\n" not in msg
    assert str(p.resolve()) in msg
    assert m[name].sha256 in msg
    assert sha256_file(p) in msg and sha256_file(p) != m[name].sha256
    assert "build_manifest" in msg and "restore" in msg
    # verify=False hands the path out anyway (explicit opt-out)
    assert dataset_path(name, verify=False, manifest=m) == p.resolve()


def test_appended_bytes_are_refused(datasets_copy: Path):
    m = load_manifest(datasets_copy / "manifest.yaml")
    p = datasets_copy / m["pystdlib"].path
    with open(p, "ab") as f:
        f.write(b"\n# planted\n")
    with pytest.raises(DatasetDigestError):
        dataset_path("pystdlib", manifest=datasets_copy / "manifest.yaml")


def test_loaders_refuse_tampered_data(datasets_copy: Path):
    from kernels.data.digits import load_digits

    p = datasets_copy / "digits" / "digits.csv.gz"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DatasetDigestError, match="digits.csv.gz"):
        load_digits(manifest=datasets_copy / "manifest.yaml")


def test_missing_file_and_unknown_name(datasets_copy: Path):
    m = load_manifest(datasets_copy / "manifest.yaml")
    (datasets_copy / m["digits"].path).unlink()
    with pytest.raises(DatasetMissingError, match=r"digits\.csv\.gz is missing"):
        dataset_path("digits", manifest=m)
    with pytest.raises(DatasetMissingError, match="no dataset named 'nope'"):
        dataset_path("nope", manifest=m)


def test_malformed_manifest_names_the_field(tmp_path: Path):
    bad = tmp_path / "manifest.yaml"
    bad.write_text(
        "datasets:\n- {name: x, path: x.bin, source: s, license: MIT, sha256: abc,"
        " size_bytes: 1, splits: {}, pii: false}\n"
    )
    with pytest.raises(ManifestError, match="'sha256' must be 64 lowercase hex"):
        load_manifest(bad)
    bad.write_text("datasets:\n- {name: x}\n")
    with pytest.raises(ManifestError, match="missing 'path'"):
        load_manifest(bad)
    bad.write_text(
        "datasets:\n- {name: x, path: ../x.bin, source: s, license: MIT, sha256: '"
        + "0" * 64
        + "', size_bytes: 1, splits: {}, pii: false}\n"
    )
    with pytest.raises(ManifestError, match="relative inside datasets"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "absent.yaml")
    bad.write_text("datasets:\n- {name: x\n- [y\n")  # YAML that does not parse, libyaml or not
    with pytest.raises(ManifestError, match=r"manifest.yaml:3 does not parse: did not find") as e:
        load_manifest(bad)
    assert "\n" not in str(e.value)
    bad.write_bytes(b"datasets:\n- name: caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ManifestError, match=r"manifest.yaml:2 is not UTF-8 text"):
        load_manifest(bad)


def test_the_manifest_reads_as_yaml_safe_load_reads_it():
    """load_manifest parses with libyaml when PyYAML has it: the same document."""
    m = load_manifest()
    raw = yaml.safe_load(m.path.read_text(encoding="utf-8"))
    assert [d["name"] for d in raw["datasets"]] == list(m.datasets)
    for d in raw["datasets"]:
        e = m.datasets[d["name"]]
        assert (e.sha256, e.size_bytes, e.splits, e.pii) == (
            d["sha256"], d["size_bytes"], d["splits"], d["pii"])  # fmt: skip


def test_importing_kernels_and_the_data_layer_does_not_import_numba():
    code = (
        "import sys, kernels, kernels.data.manifest, kernels.data.tokenizer, "
        "kernels.data.pipeline, kernels.data.digits, kernels.data.pii; "
        "print('numba' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=datasets_root().parent,
    )
    assert out.stdout.strip() == "False"
