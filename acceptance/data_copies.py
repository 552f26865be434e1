"""What the data checks plant and corrupt, always in a copy (acceptance/data*.py).

A private copy of datasets/ under ``ctx.scratch`` whose manifest a check edits or
re-records, a seeded generator per check, and realistic PII (and look-alikes that
are not PII) planted between the lines of a document or of the copied corpus.
datasets/ itself is never written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PII_KINDS = ("email", "phone", "card", "ipv4", "ssn")
SHIPPED = ("pystdlib", "digits", "tokenizer-1024")


# ------------------------------------------------------------------ copies
def copy_datasets(ctx: Any, name: str = "datasets") -> Path:
    """A private copy of datasets/ (files and manifest); returns the copied manifest."""
    from kernels.data.manifest import datasets_root

    dst = ctx.scratch / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(datasets_root(), dst)
    return dst / "manifest.yaml"


def edit_manifest(mpath: Path, edits: dict[str, dict[str, Any]]) -> None:
    """Update (or add, when the name is new) manifest entries in place."""
    doc = yaml.safe_load(mpath.read_text(encoding="utf-8"))
    by_name = {e["name"]: e for e in doc["datasets"]}
    for name, fields in edits.items():
        if name in by_name:
            by_name[name].update(fields)
        else:
            doc["datasets"].append({"name": name, **fields})
    mpath.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def rerecord(mpath: Path, name: str) -> str:
    """Record a dataset file's current sha256 and size in the (copied) manifest, as an
    owner who changed the data and rebuilt the manifest would."""
    from kernels.data.manifest import load_manifest, sha256_file

    entry = load_manifest(mpath).datasets[name]
    f = mpath.parent / entry.path
    digest = sha256_file(f)
    edit_manifest(mpath, {name: {"sha256": digest, "size_bytes": f.stat().st_size}})
    return digest


def one_line(msg: str) -> bool:
    return bool(msg) and "\n" not in msg


def seeded_rng(ctx: Any, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(ctx.seed) % (2**32), *[int(x) % (2**32) for x in extra]])


# -------------------------------------------------------------------- PII
_FIRST = ["anna", "jonas", "mei", "omar", "lucia", "piotr", "sven", "aiko", "raj", "zoe"]
_DOMAINS = ["mailbox.org", "corp-mail.net", "uni-hamburg.de", "gmail.com", "outlook.fr"]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _digits(rng: np.random.Generator, k: int) -> str:
    return "".join(str(int(x)) for x in rng.integers(0, 10, k))


def make_pii(kind: str, rng: np.random.Generator) -> str:
    """One realistic PII string of ``kind`` (a valid card passes Luhn)."""
    if kind == "email":
        a, b = rng.choice(_FIRST, 2)
        return f"{a}.{b}{int(rng.integers(1, 99))}@{rng.choice(_DOMAINS)}"
    if kind == "phone":
        a3 = f"{int(rng.integers(201, 989))}"
        b3, c4 = f"{int(rng.integers(200, 999))}", f"{int(rng.integers(0, 9999)):04d}"
        fmt = int(rng.integers(0, 4))
        if fmt == 0:
            return f"+1 {a3} {b3} {c4}"
        if fmt == 1:
            return f"({a3}) {b3}-{c4}"
        if fmt == 2:
            return f"{a3}-{b3}-{c4}"
        return f"+44 20 {int(rng.integers(1000, 9999))} {int(rng.integers(1000, 9999))}"
    if kind == "card":
        fmt = int(rng.integers(0, 4))
        if fmt == 3:  # Amex 4-6-5
            body = "37" + _digits(rng, 12)
            n = body + _luhn_digit(body)
            return f"{n[:4]} {n[4:10]} {n[10:]}"
        body = rng.choice(["4", "51", "55"]) + ""
        body = body + _digits(rng, 15 - len(body))
        n = body + _luhn_digit(body)
        if fmt == 0:
            return n
        sep = " " if fmt == 1 else "-"
        return sep.join(n[i : i + 4] for i in range(0, 16, 4))
    if kind == "ipv4":
        a = int(rng.choice([10, 23, 46, 81, 100, 145, 172, 185, 192, 213]))
        b, c, d = (int(x) for x in rng.integers(0, 256, 3))
        if (a, b, c) in ((192, 0, 2), (198, 51, 100), (203, 0, 113)):
            c = 1
        return f"{a}.{b}.{c}.{max(d, 1)}"
    if kind == "ssn":
        area = int(rng.integers(1, 900))
        area = 667 if area == 666 else area
        return f"{area:03d}-{int(rng.integers(1, 100)):02d}-{int(rng.integers(1, 10000)):04d}"
    raise ValueError(f"unknown PII kind {kind!r}")


def make_decoy(kind: str, rng: np.random.Generator) -> str:
    """A string that looks like ``kind`` but is not PII by the scanner's rules."""
    if kind == "card":  # fails Luhn
        body = "4" + _digits(rng, 14)
        bad = str((int(_luhn_digit(body)) + 1 + int(rng.integers(0, 8))) % 10)
        n = body + bad
        return " ".join(n[i : i + 4] for i in range(0, 16, 4))
    if kind == "ipv4":  # an octet above 255
        a, b, d = int(rng.integers(10, 200)), int(rng.integers(256, 999)), int(rng.integers(1, 255))
        return f"{a}.{b}.1.{d}"
    if kind == "ssn":  # area 000 / 666 / 9xx
        area = rng.choice(["000", "666", f"9{int(rng.integers(0, 99)):02d}"])
        return f"{area}-{int(rng.integers(1, 100)):02d}-{int(rng.integers(1, 10000)):04d}"
    if kind == "email":  # a reserved example domain
        return f"{rng.choice(_FIRST)}@example.com"
    if kind == "phone":  # a bare digit run is not a phone
        return _digits(rng, 7)
    raise ValueError(f"unknown PII kind {kind!r}")


def insert_at_newline(text: str, item: str, rng: np.random.Generator) -> tuple[str, int]:
    """``text`` with `` item `` inserted before a newline; returns (new text, offset)."""
    cands = [i for i, ch in enumerate(text) if ch == "\n"] or [len(text)]
    pos = int(cands[int(rng.integers(0, len(cands)))])
    new = text[:pos] + " " + item + " " + text[pos:]
    return new, pos + 1


def plant_in_corpus(mpath: Path, kinds: list[str], rng: np.random.Generator) -> list[str]:
    """Plant one PII item of each kind in the copied corpus (between lines); returns them."""
    from kernels.data.manifest import load_manifest

    f = mpath.parent / load_manifest(mpath).datasets["pystdlib"].path
    text = f.read_text(encoding="utf-8")
    items = []
    for kind in kinds:
        item = make_pii(kind, rng)
        text, _ = insert_at_newline(text, item, rng)
        items.append(item)
    f.write_text(text, encoding="utf-8")
    return items
