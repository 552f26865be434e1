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


#: every form the scanner documents it finds (kernels/data/pii.py), per kind: a check
#: plants each at least once (issue 13, class 1: the generator plants every documented
#: form, not the four a first version happened to write)
PII_FORMS: dict[str, tuple[str, ...]] = {
    "email": (
        "dotted", "plus-tag", "underscore-percent", "subdomain", "upper-case", "long-tld",
        "near-reserved-domain",
    ),
    "phone": (
        "intl-spaces", "intl-dashes", "intl-dots", "intl-area-parens", "uk-spaces",
        "fr-pairs", "paren-space", "paren-no-space", "paren-dot", "dashes", "dots",
    ),
    "card": (
        "contiguous-13", "contiguous-15", "contiguous-16", "contiguous-19",
        "4-4-4-4-spaces", "4-4-4-4-dashes", "4-4-4-4-3-spaces", "4-4-4-4-3-dashes",
        "4-6-5-spaces", "4-6-5-dashes", "4-6-4-spaces", "4-6-4-dashes",
    ),
    "ipv4": ("private-10", "public", "one-digit-octets", "three-digit-octets", "octet-bounds"),
    "ssn": ("random", "bounds"),
}  # fmt: skip

#: every look-alike the scanner documents it skips (kernels/data/pii.py), per kind
DECOY_FORMS: dict[str, tuple[str, ...]] = {
    "email": (
        "example.com", "example.org", "example.net", "subdomain-of-example.com",
        "tld-example", "tld-invalid", "tld-test", "tld-localhost",
    ),
    "phone": ("bare-7", "bare-10"),
    "card": ("luhn-invalid", "one-digit-repeated", "too-short"),
    "ipv4": (
        "octet-above-255", "leading-zero", "loopback", "unspecified", "broadcast",
        "rfc5737-192.0.2", "rfc5737-198.51.100", "rfc5737-203.0.113", "version-string",
    ),
    "ssn": ("area-000", "area-666", "area-9xx", "group-00", "serial-0000"),
}  # fmt: skip


def _pick(rng: np.random.Generator, options: Any) -> Any:
    return options[int(rng.integers(0, len(options)))]


def _card_number(rng: np.random.Generator, prefix: str, length: int) -> str:
    body = prefix + _digits(rng, length - 1 - len(prefix))
    return body + _luhn_digit(body)


def _groups(n: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for k in sizes:
        out.append(n[i : i + k])
        i += k
    return sep.join(out)


def make_pii(kind: str, rng: np.random.Generator, form: str | None = None) -> str:
    """One realistic PII string of ``kind`` in ``form`` (one of ``PII_FORMS[kind]``; a
    random one when None). A card passes Luhn; every value is one the scanner documents
    it reports."""
    forms = PII_FORMS.get(kind)
    if forms is None:
        raise ValueError(f"unknown PII kind {kind!r}")
    form = _pick(rng, forms) if form is None else form
    if form not in forms:
        raise ValueError(f"unknown {kind} form {form!r}; known: {', '.join(forms)}")
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    if kind == "email":
        a, b = (str(x) for x in rng.choice(_FIRST, 2))
        dom = str(rng.choice(_DOMAINS))
        return {
            "dotted": f"{a}.{b}{r(1, 99)}@{dom}",
            "plus-tag": f"{a}+newsletter{r(1, 9)}@{dom}",
            "underscore-percent": f"{a}_{b}%{r(1, 9)}@{dom}",
            "subdomain": f"{a}@{_pick(rng, ['cs', 'mail', 'lists.dev'])}.{dom}",
            "upper-case": f"{a.title()}.{b.upper()}@{dom.upper()}",
            "long-tld": f"{a}@{b}-design.photography",
            "near-reserved-domain": f"{a}@{_pick(rng, _NEAR_RESERVED)}",
        }[form]
    if kind == "phone":
        a3, b3, c4 = f"{r(201, 989)}", f"{r(200, 999)}", f"{r(0, 10000):04d}"
        return {
            "intl-spaces": f"+1 {a3} {b3} {c4}",
            "intl-dashes": f"+1-{a3}-{b3}-{c4}",
            "intl-dots": f"+1.{a3}.{b3}.{c4}",
            "intl-area-parens": f"+1 ({a3}) {b3}-{c4}",
            "uk-spaces": f"+44 20 {r(1000, 10000)} {r(1000, 10000)}",
            "fr-pairs": f"+33 {r(1, 10)} " + " ".join(f"{r(0, 100):02d}" for _ in range(4)),
            "paren-space": f"({a3}) {b3}-{c4}",
            "paren-no-space": f"({a3}){b3}-{c4}",
            "paren-dot": f"({a3}) {b3}.{c4}",
            "dashes": f"{a3}-{b3}-{c4}",
            "dots": f"{a3}.{b3}.{c4}",
        }[form]
    if kind == "card":
        if form.startswith("contiguous-"):
            length = int(form.split("-")[1])
            prefix = {13: "4", 15: _pick(rng, ["34", "37"]), 16: _pick(rng, ["4", "51", "55"]),
                      19: _pick(rng, ["4", "62"])}[length]  # fmt: skip
            return _card_number(rng, prefix, length)
        sep = " " if form.endswith("spaces") else "-"
        if form.startswith("4-4-4-4-3"):
            return _groups(_card_number(rng, "4", 19), (4, 4, 4, 4, 3), sep)
        if form.startswith("4-4-4-4"):
            return _groups(_card_number(rng, _pick(rng, ["4", "51", "55"]), 16), (4,) * 4, sep)
        if form.startswith("4-6-5"):  # Amex
            return _groups(_card_number(rng, _pick(rng, ["34", "37"]), 15), (4, 6, 5), sep)
        return _groups(_card_number(rng, _pick(rng, ["300", "305", "36"]), 14), (4, 6, 4), sep)
    if kind == "ipv4":
        if form == "private-10":
            return f"10.{r(0, 256)}.{r(0, 256)}.{r(1, 255)}"
        if form == "one-digit-octets":
            return f"{r(1, 10)}.{r(0, 10)}.{r(0, 10)}.{r(1, 10)}"
        if form == "three-digit-octets":
            a = _pick(rng, [100, 145, 185, 213, 223])
            return f"{a}.{r(100, 256)}.{r(100, 256)}.{r(100, 255)}"
        if form == "octet-bounds":
            return f"{_pick(rng, [1, 23, 126, 128, 254])}.0.255.{_pick(rng, [0, 255])}"
        a = int(rng.choice([23, 46, 81, 100, 145, 172, 185, 192, 213]))
        b, c, d = (int(x) for x in rng.integers(0, 256, 3))
        if (a, b, c) in ((192, 0, 2), (198, 51, 100), (203, 0, 113)):
            c = 1
        return f"{a}.{b}.{c}.{max(d, 1)}"
    if form == "bounds":  # ssn: the edges of the SSA rules
        area = _pick(rng, [1, 665, 667, 899])
        return f"{area:03d}-{_pick(rng, [1, 99]):02d}-{_pick(rng, [1, 9999]):04d}"
    area = r(1, 900)
    area = 667 if area == 666 else area
    return f"{area:03d}-{r(1, 100):02d}-{r(1, 10000):04d}"


#: real domains that end in a reserved name without being under it
_NEAR_RESERVED = ("counterexample.com", "bestexample.org", "myexample.net")


def make_decoy(kind: str, rng: np.random.Generator, form: str | None = None) -> str:
    """A string that looks like ``kind`` but is not PII by the scanner's documented rules,
    in ``form`` (one of ``DECOY_FORMS[kind]``; a random one when None)."""
    forms = DECOY_FORMS.get(kind)
    if forms is None:
        raise ValueError(f"unknown PII kind {kind!r}")
    form = _pick(rng, forms) if form is None else form
    if form not in forms:
        raise ValueError(f"unknown {kind} decoy form {form!r}; known: {', '.join(forms)}")
    r = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    name = str(rng.choice(_FIRST))
    if kind == "card":
        if form == "luhn-invalid":
            body = "4" + _digits(rng, 14)
            bad = str((int(_luhn_digit(body)) + 1 + r(0, 8)) % 10)
            return _groups(body + bad, (4,) * 4, " ")
        if form == "one-digit-repeated":  # Luhn-valid, but all one digit
            d = _pick(rng, [c for c in "0123456789" if _luhn_digit(c * 15) == c])
            return _groups(d * 16, (4,) * 4, " ")
        return _card_number(rng, "4", 12)  # 12 digits: shorter than any card
    if kind == "ipv4":
        return {
            "octet-above-255": f"{r(10, 200)}.{r(256, 999)}.1.{r(1, 255)}",
            "leading-zero": f"{r(10, 200)}.0{r(1, 10)}.{r(0, 256)}.{r(1, 255)}",
            "loopback": f"127.{r(0, 256)}.{r(0, 256)}.{r(1, 255)}",
            "unspecified": f"0.{r(0, 256)}.{r(0, 256)}.{r(0, 256)}",
            "broadcast": "255.255.255.255",
            "rfc5737-192.0.2": f"192.0.2.{r(1, 255)}",
            "rfc5737-198.51.100": f"198.51.100.{r(1, 255)}",
            "rfc5737-203.0.113": f"203.0.113.{r(1, 255)}",
            "version-string": f"{r(1, 10)}.{r(0, 20)}.{r(0, 20)}.{r(0, 20)}.{r(0, 20)}",
        }[form]
    if kind == "ssn":
        area, group, serial = f"{r(1, 900):03d}", f"{r(1, 100):02d}", f"{r(1, 10000):04d}"
        area = "667" if area == "666" else area
        if form == "area-000":
            area = "000"
        elif form == "area-666":
            area = "666"
        elif form == "area-9xx":
            area = f"9{r(0, 100):02d}"
        elif form == "group-00":
            group = "00"
        else:
            serial = "0000"
        return f"{area}-{group}-{serial}"
    if kind == "email":
        return {
            "example.com": f"{name}@example.com",
            "example.org": f"{name}@example.org",
            "example.net": f"{name}@EXAMPLE.NET",
            "subdomain-of-example.com": f"{name}@mail.example.com",
            "tld-example": f"{name}@corp.example",
            "tld-invalid": f"{name}@host.invalid",
            "tld-test": f"{name}@shop.test",
            "tld-localhost": f"{name}@app.localhost",
        }[form]
    return _digits(rng, 7 if form == "bare-7" else 10)  # phone: a bare digit run


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
