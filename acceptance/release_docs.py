"""Release checks of the documents (AC-REL-003): they exist, their sections say
something, the install commands they give name extras pyproject.toml defines, the
license is declared, and the model card's front matter is valid and agrees with the
repository.

The documents are the product here, so their mutants are edits of the text
(``falsifiers.doc_edits``): with ``params.doc_edit`` a check copies the files it
reads into its scratch directory, applies the edit there and judges the copy.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import yaml

from harness.checks.files import files_exist
from harness.checks.markdown import front_matter_block
from harness.context import CheckContext

# phrases only the named license's text has (lower case, whitespace collapsed)
LICENSE_FINGERPRINTS = {
    "mit": (
        "permission is hereby granted, free of charge",
        "the above copyright notice and this permission notice shall be included",
    ),
    "apache-2.0": ("apache license", "version 2.0, january 2004"),
    "bsd-3-clause": (
        "redistribution and use in source and binary forms",
        "neither the name of",
    ),
    "bsd-2-clause": ("redistribution and use in source and binary forms",),
    "gpl-3.0": ("gnu general public license", "version 3, 29 june 2007"),
}


def docs_root(ctx: CheckContext, files: list[str]) -> tuple[Path, dict[str, Any]]:
    """Where the check reads the documents: the project root, or (with
    ``params.doc_edit``) a copy of ``files`` in the scratch directory with the edit
    applied. Returns (root, the edit's report)."""
    edit = ctx.params.get("doc_edit")
    if not edit:
        return ctx.root, {}
    from falsifiers.doc_edits import apply_doc_edit

    copy = ctx.scratch / "docs-copy"
    for rel in sorted(set(files)):
        src = ctx.root / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, copy / rel)
    report = apply_doc_edit(str(edit), copy)
    ctx.attach_json("doc-edit.json", report)
    return copy, report


def _at(ctx: CheckContext, root: Path) -> CheckContext:
    return CheckContext(
        ctx.params, ctx.seed, ctx.scratch, ctx.artifact_dir, ctx.check_id, root=root
    )


def markdown_sections(text: str) -> dict[str, str]:
    """{heading text (lower case): body up to the next heading of the same or a higher
    level}; headings inside fenced code blocks or the YAML front matter are not headings."""
    m = front_matter_block(text)
    lines = text[m.end() if m else 0 :].splitlines()
    heads: list[tuple[int, int, str]] = []  # (line, level, title)
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2).strip().lower()))
    sections: dict[str, str] = {}
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1 :] if lv <= level), len(lines))
        sections.setdefault(title, "\n".join(lines[i + 1 : end]))
    return sections


def front_matter(text: str) -> dict[str, Any] | None:
    """The YAML front matter of a Markdown file (between a first line ``---`` and the
    next ``---``), or None when it has none or it is not a YAML mapping."""
    m = front_matter_block(text)
    if not m:
        return None
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def read_doc(root: Path, rel: str, needed_for: str) -> str:
    """The text of ``root/rel``; a missing or unreadable file is one line naming it and
    what it is needed for (not a traceback through the check)."""
    path = root / rel
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; {needed_for}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); {needed_for}") from None


def read_project(root: Path, rel: str, needed_for: str) -> dict[str, Any]:
    """The ``[project]`` table of the pyproject.toml at ``root/rel`` (one-line errors)."""
    try:
        data = tomllib.loads(read_doc(root, rel, needed_for))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{root / rel}: not valid TOML ({exc}); {needed_for}") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise ValueError(f"{root / rel}: has no [project] table; {needed_for}")
    return project


def manifest_datasets(root: Path, rel: str) -> list[dict[str, Any]]:
    """The ``datasets`` entries of the dataset manifest at ``root/rel``, each a mapping
    with a name; anything else is one line naming the file and what it must hold."""
    needed = "the model card's datasets are checked against it"
    try:
        data = yaml.safe_load(read_doc(root, rel, needed))
    except yaml.YAMLError as exc:
        raise ValueError(f"{root / rel}: not valid YAML ({' '.join(str(exc).split())})") from None
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(d, dict) and d.get("name") for d in entries
    ):
        raise ValueError(
            f"{root / rel}: has no 'datasets' list of entries with a 'name'; {needed} "
            "(add the datasets, or point params.manifest at the dataset manifest)"
        )
    return entries


def _norm_extra(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()  # PEP 685


def license_of_text(text: str) -> str:
    """The license id a LICENSE file's text is, by phrases only it has; else unknown."""
    flat = " ".join(text.lower().split())
    for spdx, phrases in LICENSE_FINGERPRINTS.items():
        if all(p in flat for p in phrases):
            return spdx
    return "unknown"


def pyproject_license(project: dict[str, Any]) -> str:
    """The license pyproject.toml declares (a PEP 639 SPDX string, or the old table)."""
    lic = project.get("license")
    if isinstance(lic, dict):
        lic = lic.get("text") or lic.get("file") or ""
    return str(lic or "").strip().lower()


def release_documents(ctx: CheckContext) -> dict[str, Any]:
    """params: paths, min_bytes, contains (as ``harness.checks.files:files_exist``);
    sections: {file: [headings that must have a body]}, min_section_words;
    install_docs: [files whose ``pip install '.[extras]'`` commands must name only extras
    pyproject.toml defines]; pyproject; license_file (must be in pyproject's license-files)."""
    p = ctx.params
    pyproject = str(p.get("pyproject", "pyproject.toml"))
    license_file = str(p.get("license_file", "LICENSE"))
    sections: dict[str, list[str]] = dict(p.get("sections", {}))
    install_docs = list(p.get("install_docs", []))
    files = [*p.get("paths", []), *p.get("contains", {}), *sections, *install_docs]
    root, edit = docs_root(ctx, [*files, pyproject, license_file])
    observed = files_exist(_at(ctx, root))

    min_words = int(p.get("min_section_words", 20))
    thin = []
    for rel, headings in sections.items():
        path = root / rel
        found = {}
        if path.is_file():  # a missing file is counted by files_exist
            found = markdown_sections(read_doc(root, rel, "its sections are checked"))
        for heading in headings:
            body = found.get(heading.lower())
            words = len(re.findall(r"\w+", body or ""))
            if body is None or words < min_words:
                what = "missing" if body is None else f"{words} words"
                thin.append(f"{rel}: '{heading}' ({what})")

    project = read_project(
        root, pyproject, "the install commands' extras and the license files are checked against it"
    )
    defined = {_norm_extra(e) for e in project.get("optional-dependencies", {})}
    commands, undefined = 0, []
    for rel in install_docs:
        path = root / rel
        text = read_doc(root, rel, "its install commands are checked") if path.is_file() else ""
        for m in re.finditer(r"pip install[^\n`]*?\.\[([^\]]*)\]", text):
            commands += 1
            undefined += [f"{rel}: {e.strip()}" for e in m.group(1).split(",")
                          if _norm_extra(e) not in defined]  # fmt: skip
    declared = [str(f) for f in project.get("license-files", [])]
    return {
        **observed,
        "thin_sections": len(thin),
        "thin_section_list": thin,
        "install_commands": commands,
        "undefined_extras": len(undefined),
        "undefined_extra_list": undefined,
        "license_file_declared": license_file in declared and (root / license_file).is_file(),
        "doc_edit": edit.get("edit", ""),
    }


def model_card_metadata(ctx: CheckContext) -> dict[str, Any]:
    """The model card's YAML front matter is valid against ``params.schema`` and agrees
    with the repository: its license is the license of pyproject.toml, of the LICENSE
    text and of the card's own License section; every dataset it names is a dataset
    (not a tokenizer) of the manifest, and every such dataset is named."""
    from jsonschema import Draft202012Validator

    p = ctx.params
    card = str(p.get("card", "MODEL_CARD.md"))
    schema_file = str(p.get("schema", "contracts/model-card.schema.json"))
    license_file = str(p.get("license_file", "LICENSE"))
    pyproject = str(p.get("pyproject", "pyproject.toml"))
    manifest = str(p.get("manifest", "datasets/manifest.yaml"))
    root, edit = docs_root(ctx, [card, schema_file, license_file, pyproject, manifest])

    text = read_doc(root, card, "it is the model card this check reads")
    meta = front_matter(text)
    try:
        schema = json.loads(read_doc(root, schema_file, "the front matter is validated against it"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{root / schema_file}: not valid JSON ({exc})") from None
    errors = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in Draft202012Validator(schema).iter_errors(meta if meta is not None else {})
    )
    license_id = str((meta or {}).get("license", "")).strip().lower()
    project = read_project(root, pyproject, "the card's license is checked against it")
    body = markdown_sections(text).get("license", "")
    sources = {
        pyproject: pyproject_license(project),
        license_file: license_of_text(
            read_doc(root, license_file, "the card's license is checked against its text")
        ),
        f"{card} License section": (
            license_id
            if license_id and re.search(rf"\b{re.escape(license_id)}\b", body, re.I)
            else "not named"
        ),
    }
    disagree = [f"{src}: {lic}" for src, lic in sources.items() if lic != license_id]

    entries = manifest_datasets(root, manifest)
    known = {str(d["name"]) for d in entries if d.get("kind") != "tokenizer"}
    named = [str(d) for d in (meta or {}).get("datasets", []) or []]
    unknown = sorted(set(named) - known)
    unlisted = sorted(known - set(named))
    return {
        "front_matter": meta is not None,
        "schema_errors": len(errors),
        "schema_error_list": errors[:10],
        "license": license_id,
        "license_sources": sources,
        "license_disagreements": len(disagree),
        "license_disagreement_list": disagree,
        "datasets_named": len(named),
        "datasets_unknown": len(unknown),
        "datasets_unknown_list": unknown,
        "datasets_unlisted": len(unlisted),
        "datasets_unlisted_list": unlisted,
        "doc_edit": edit.get("edit", ""),
    }
