"""Build ``datasets/pystdlib/``: a text corpus from CPython's standard library.

Deterministic selection: the top-level ``*.py`` files of the given Python install
(default: this interpreter's ``lib/python3.X``), sorted by name, each at most
64 KiB, taken in order until the total reaches 1.5 MB. Every file is decoded as
UTF-8, its PII findings (author emails, IPv4-like numbers; see ``pii.py``) are
replaced by ``<kind>`` placeholders, and it is written as one document
``<|doc|> NAME\\n<text>`` in ``corpus.txt``. ``FILES.tsv`` records each source
file's name, size and sha256 and how many spans were redacted; the PSF license
of the source is copied to ``LICENSE``.

Run: ``python -m kernels.data.build_corpus [--stdlib DIR] [--out DIR]``;
then ``python -m kernels.data.build_tokenizer`` and
``python -m kernels.data.build_manifest``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sysconfig
from pathlib import Path

from kernels.data.pii import scan_text, summarize

DOC_MARK = "<|doc|> "
MAX_FILE_BYTES = 64 * 1024
TARGET_BYTES = 1_500_000
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "datasets" / "pystdlib"


def select_files(stdlib: Path) -> list[Path]:
    """Top-level .py files sorted by name, each <= 64 KiB, until 1.5 MB in total."""
    chosen: list[Path] = []
    total = 0
    for p in sorted(stdlib.glob("*.py"), key=lambda q: q.name):
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            continue
        chosen.append(p)
        total += size
        if total >= TARGET_BYTES:
            break
    return chosen


def build(stdlib: Path, out: Path) -> dict[str, object]:
    files = select_files(stdlib)
    out.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    rows = ["name\tbytes\tsha256\tredacted_spans"]
    redacted_total = {k: 0 for k in ("email", "phone", "card", "ipv4", "ssn")}
    for p in files:
        raw = p.read_bytes()
        text = raw.decode("utf-8").replace("\r\n", "\n")
        if DOC_MARK.strip() in text:
            raise ValueError(f"{p} contains the document marker {DOC_MARK.strip()!r}")
        findings = scan_text(text)
        for k, v in summarize(findings).items():
            redacted_total[k] += v
        # replace from the end so earlier offsets stay valid
        for f in sorted(findings, key=lambda f: f.offset, reverse=True):
            text = text[: f.offset] + f"<{f.kind}>" + text[f.offset + f.length :]
        if not text.endswith("\n"):
            text += "\n"
        parts.append(f"{DOC_MARK}{p.name}\n{text}")
        rows.append(f"{p.name}\t{len(raw)}\t{hashlib.sha256(raw).hexdigest()}\t{len(findings)}")
    (out / "corpus.txt").write_text("".join(parts), encoding="utf-8", newline="\n")
    (out / "FILES.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8", newline="\n")
    lic = stdlib / "LICENSE.txt"
    shutil.copyfile(lic, out / "LICENSE")
    return {"files": len(files), "redacted": redacted_total}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    info = build(args.stdlib, args.out)
    print(f"wrote {args.out}/corpus.txt from {info['files']} files; redacted {info['redacted']}")


if __name__ == "__main__":
    main()
