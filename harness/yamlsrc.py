"""Safe YAML loading that keeps the source position of every node.

``load_yaml`` returns plain Python data plus a ``Positions`` table mapping a
key path (a tuple of keys and list indexes) to the line and column where its
value (and, for mapping entries, its key) starts. Only the safe YAML tags are
accepted; duplicate keys, merge keys and oversized documents are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.errors import HarnessError

MAX_BYTES = 1024 * 1024
MAX_NODES = 200_000

Path = tuple[Any, ...]


class YamlSourceError(HarnessError):
    def __init__(self, message: str, line: int, col: int, hint: str = "") -> None:
        self.message, self.line, self.col, self.hint = message, line, col, hint
        super().__init__(message)


@dataclass
class Positions:
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of the node at ``path``, or of its nearest ancestor."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.positions = Positions()
        self.count = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlSourceError(
                f"document has more than {MAX_NODES} nodes",
                *_mark(node),
                hint="remove anchors/aliases that expand recursively",
            )
        self.positions.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise YamlSourceError(f"unsupported tag {node.tag!r}", *_mark(node))
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlSourceError(
                        "merge keys ('<<') are not supported",
                        *_mark(key_node),
                        hint="write the keys out in full",
                    )
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlSourceError("mapping keys must be plain scalars", *_mark(key_node))
                key = self._scalar(key_node)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise YamlSourceError(
                        f"unsupported key type {type(key).__name__}", *_mark(key_node)
                    )
                if key in out:
                    raise YamlSourceError(
                        f"duplicate key {key!r}",
                        *_mark(key_node),
                        hint="each key may appear once per mapping",
                    )
                self.positions.keys[path + (key,)] = _mark(key_node)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise YamlSourceError(f"unsupported tag {node.tag!r}", *_mark(node))
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlSourceError(
                f"unsupported YAML tag {node.tag!r}",
                *_mark(node),
                hint="only plain YAML values (strings, numbers, booleans, null) are allowed",
            ) from exc
        if isinstance(value, (bytes, bytearray)) or type(value).__name__ in ("date", "datetime"):
            return str(node.value)
        return value


def load_yaml(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document safely, returning (data, positions)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlSourceError(
            f"file is larger than {MAX_BYTES} bytes",
            1,
            1,
            hint="split the contract into several files",
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            raise YamlSourceError(f"invalid YAML: {problem}", line, col) from exc
        except yaml.YAMLError as exc:
            raise YamlSourceError(f"invalid YAML: {exc}", 1, 1) from exc
        if node is None:
            return None, Positions()
        builder = _Builder(loader)
        try:
            data = builder.build(node, ())
        except RecursionError as exc:
            raise YamlSourceError("document nests too deeply", *_mark(node)) from exc
        return data, builder.positions
    finally:
        loader.dispose()
