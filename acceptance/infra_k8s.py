"""AC-INFRA-004 (Kubernetes part): the shipped manifests validate, offline.

Every resource in ``deploy/k8s/*.yaml`` is validated in-process by
``kubernetes_validate`` (the ``dev`` extra; it bundles the Kubernetes JSON
schemas, so nothing is fetched) against the declared Kubernetes version, in
strict mode (unknown fields are errors). A kind/apiVersion with no schema for
that version (``batch/v1beta1`` CronJob on 1.25+) is an error here, where the
``kubernetes-validate`` CLI only warns and exits 0. Two rules the schemas cannot
express are counted beside: a memory quantity without a unit (``memory: 8`` is
8 bytes, which the schema's string-or-number accepts) and a container with no
memory limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.context import CheckContext

_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)$")


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def resource_problems(resource: dict[str, Any]) -> dict[str, list[str]]:
    """What the schemas let through: memory quantities without a unit, containers
    without a memory limit. ``{"memory_without_unit": [...], "no_memory_limit": [...]}``."""
    no_unit, no_limit = [], []
    for c in _containers(resource):
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            mem = (res.get(part) or {}).get("memory")
            if mem is not None and not (isinstance(mem, str) and _MEMORY.match(mem)):
                no_unit.append(f"{c.get('name')}: resources.{part}.memory={mem!r}")
        if (res.get("limits") or {}).get("memory") is None:
            no_limit.append(str(c.get("name")))
    return {"memory_without_unit": no_unit, "no_memory_limit": no_limit}


def _files(root: Path, paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = root / p
        out += sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    return out


def manifests_validate(ctx: CheckContext) -> dict[str, Any]:
    """params: paths (files or directories, relative to the project root),
    kubernetes_version. observations: files, resources, valid, schema_errors,
    unknown_kinds, parse_errors, memory_without_unit, containers_without_memory_limit,
    kinds, problems (the first messages)."""
    try:
        from kubernetes_validate import utils as kv
    except ImportError:
        ctx.skip("needs kubernetes-validate (the dev extra: pip install -e '.[dev]')")
    version = str(ctx.params.get("kubernetes_version", "1.30"))
    files = _files(Path(ctx.root), [str(p) for p in ctx.params.get("paths", ["deploy/k8s"])])
    resources = valid = schema_errors = unknown = parse_errors = no_unit = no_limit = 0
    kinds: list[str] = []
    problems: list[str] = []
    for f in files:
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            parse_errors += 1
            problems.append(f"{f.name}: {exc}")
            continue
        for doc in docs:
            resources += 1
            where = f"{f.name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            kinds.append(f"{doc.get('apiVersion')} {doc.get('kind')}")
            try:
                kv.validate(doc, version, strict=True)
                valid += 1
            except kv.ValidationError as exc:
                schema_errors += 1
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                unknown += 1
                problems.append(f"{where}: {exc.message}")
            extra = resource_problems(doc)
            no_unit += len(extra["memory_without_unit"])
            no_limit += len(extra["no_memory_limit"])
            problems += [
                f"{where}: memory without a unit: {m}" for m in extra["memory_without_unit"]
            ]
            problems += [f"{where}: no memory limit: {m}" for m in extra["no_memory_limit"]]
    for line in problems:
        print(line)
    return {
        "kubernetes_version": version,
        "files": len(files),
        "resources": resources,
        "valid": valid,
        "schema_errors": schema_errors,
        "unknown_kinds": unknown,
        "parse_errors": parse_errors,
        "memory_without_unit": no_unit,
        "containers_without_memory_limit": no_limit,
        "kinds": sorted(set(kinds)),
        "problems": problems[:10],
    }
