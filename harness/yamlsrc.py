"""Safe YAML loading that keeps the source position of every node.

``load_yaml`` returns plain Python data plus a ``Positions`` table mapping a
key path (a tuple of keys and list indexes) to the line and column where its
value (and, for mapping entries, its key) starts.

The document is built straight from the parser's events, so the limits hold
while it is read, before anything big exists in memory:

- at most ``MAX_BYTES`` of text, ``MAX_NODES`` nodes (an alias counts as every
  node it repeats, so a "billion laughs" stops at the alias that crosses the
  line, without expanding it) and ``MAX_DEPTH`` levels of nesting;
- only plain values: strings, integers, floats, booleans, null (``!!binary``
  and ``!!timestamp`` are kept as their text); any other tag, merge keys,
  duplicate keys and duplicate anchors are errors;
- a value PyYAML cannot construct (``!!int abc``, ``!!timestamp 2001-99-99``,
  a number of ``MAX_NUMBER_CHARS`` characters or more) is an error at its line;
  an untagged date-like scalar (``title: 2001-13-45``) is text, as every
  date is;
- mapping keys are text: ``1:`` and ``on:`` give the keys ``"1"`` and ``"on"``;
- YAML 1.1 reads ``1e-6`` as text (a number with an exponent needs a dot and, for a
  positive exponent, a sign: ``1.0e-6``, ``1.0e+6``): each unquoted value read so is
  listed in ``Positions.number_texts``, and ``number_spelling`` says how to write it.

Every problem is a ``YamlSourceError`` with a line and a column: nothing else
leaves this module.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from harness.errors import HarnessError

MAX_BYTES = 1024 * 1024  # one contract file
MAX_NODES = 50_000  # scalars, lists and mappings, aliases counted as what they repeat
MAX_DEPTH = 64  # nested lists and mappings
MAX_NUMBER_CHARS = 100  # the text of one int or float

Path = tuple[Any, ...]

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _STR = _TAG + "map", _TAG + "seq", _TAG + "str"
_MERGE, _TIMESTAMP, _BINARY = _TAG + "merge", _TAG + "timestamp", _TAG + "binary"
_NUMBERS = {_TAG + "int", _TAG + "float"}
_SCALARS = {_TAG + "null", _TAG + "bool", _STR, _BINARY, _TIMESTAMP, *_NUMBERS}
_PLAIN_VALUES = "only plain YAML values (strings, numbers, booleans, null) are allowed"


class YamlSourceError(HarnessError):
    def __init__(self, message: str, line: int, col: int, hint: str = "") -> None:
        self.message, self.line, self.col, self.hint = message, line, col, hint
        super().__init__(message)


_EXPONENT_NUMBER = re.compile(r"([-+]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([eE])([-+]?)([0-9]+)")


def number_spelling(text: str) -> str | None:
    """How to write ``text`` so that YAML 1.1 (this loader) reads the number it looks
    like: ``1e-6`` -> ``1.0e-6``, ``1e6`` -> ``1.0e+6``; None when ``text`` is no
    number with an exponent that YAML 1.1 reads as text."""
    m = _EXPONENT_NUMBER.fullmatch(text.strip())
    if m is None:
        return None
    sign, mantissa, e, exp_sign, exponent = m.groups()
    if "." in mantissa and exp_sign:
        return None  # already a YAML 1.1 float
    if mantissa.startswith("."):
        mantissa = "0" + mantissa
    elif "." not in mantissa:
        mantissa += ".0"
    elif mantissa.endswith("."):
        mantissa += "0"
    return f"{sign}{mantissa}{e}{exp_sign or '+'}{exponent}"


@dataclass
class Positions:
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # unquoted values read as text that look like numbers (``1e-6``): path -> text
    number_texts: dict[Path, str] = field(default_factory=dict)

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


def _mark(event: Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _Composer:
    """Builds plain data from parser events, counting nodes and depth as it goes."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.positions = Positions()
        self.count = 0
        self.anchors: dict[str, tuple[Any, int]] = {}  # name -> (value, nodes it holds)

    def document(self) -> Any:
        self._expect(StreamStartEvent)
        if self.loader.check_event(StreamEndEvent):
            return None
        self._expect(DocumentStartEvent)
        data = self.node((), 0)
        self._expect(DocumentEndEvent)
        if not self.loader.check_event(StreamEndEvent):
            raise YamlSourceError(
                "expected a single document, found another one",
                *_mark(self.loader.peek_event()),
                hint="one contract per file: remove the second '---'",
            )
        return data

    def _expect(self, kind: type[Event]) -> Event:
        event = self.loader.get_event()
        if not isinstance(event, kind):  # the parser guarantees the order; never trust it
            raise YamlSourceError(f"invalid YAML: unexpected {type(event).__name__}", *_mark(event))
        return event

    def _add(self, n: int, event: Event) -> None:
        self.count += n
        if self.count > MAX_NODES:
            raise YamlSourceError(
                f"document has more than {MAX_NODES} nodes (the limit of one contract file)",
                *_mark(event),
                hint="split the contract, or remove anchors/aliases that repeat large parts",
            )

    def node(self, path: Path, depth: int) -> Any:
        event = self.loader.get_event()
        if isinstance(event, AliasEvent):
            if event.anchor not in self.anchors:
                raise YamlSourceError(f"undefined alias *{event.anchor}", *_mark(event))
            value, size = self.anchors[event.anchor]
            self._add(size, event)  # counted as what it repeats, before it is copied
            self.positions.values[path] = _mark(event)
            return copy.deepcopy(value)
        anchor = getattr(event, "anchor", None)
        if anchor is not None and anchor in self.anchors:
            raise YamlSourceError(f"duplicate anchor &{anchor}", *_mark(event))
        before = self.count
        self._add(1, event)
        self.positions.values[path] = _mark(event)
        if isinstance(event, ScalarEvent):
            value = self._scalar(event)
            if not event.style and event.tag is None and isinstance(value, str):
                if number_spelling(value) is not None:
                    self.positions.number_texts[path] = value
        elif isinstance(event, (SequenceStartEvent, MappingStartEvent)):
            if depth >= MAX_DEPTH:
                raise YamlSourceError(
                    f"document nests deeper than {MAX_DEPTH} levels",
                    *_mark(event),
                    hint="a contract needs a handful of levels; flatten the structure",
                )
            if isinstance(event, SequenceStartEvent):
                value = self._sequence(event, path, depth)
            else:
                value = self._mapping(event, path, depth)
        else:
            raise YamlSourceError(f"invalid YAML: unexpected {type(event).__name__}", *_mark(event))
        if anchor is not None:
            self.anchors[anchor] = (value, self.count - before)
        return value

    def _collection_tag(self, event: Any, default: str) -> None:
        tag = event.tag
        if tag not in (None, "!", default):
            raise YamlSourceError(
                f"unsupported YAML tag {_tag_name(tag)!r}", *_mark(event), hint=_PLAIN_VALUES
            )

    def _sequence(self, event: SequenceStartEvent, path: Path, depth: int) -> list[Any]:
        self._collection_tag(event, _SEQ)
        out: list[Any] = []
        while not self.loader.check_event(SequenceEndEvent):
            out.append(self.node(path + (len(out),), depth + 1))
        self.loader.get_event()
        return out

    def _mapping(self, event: MappingStartEvent, path: Path, depth: int) -> dict[str, Any]:
        self._collection_tag(event, _MAP)
        out: dict[str, Any] = {}
        while not self.loader.check_event(MappingEndEvent):
            key_event = self.loader.get_event()
            if not isinstance(key_event, ScalarEvent):
                raise YamlSourceError(
                    "mapping keys must be plain scalars",
                    *_mark(key_event),
                    hint="write the key as text: 'name: value'",
                )
            self._add(1, key_event)
            if self._resolve(key_event) == _MERGE:
                raise YamlSourceError(
                    "merge keys ('<<') are not supported",
                    *_mark(key_event),
                    hint="write the keys out in full",
                )
            self._scalar(key_event)  # a key must be a valid plain value; it is kept as text
            key = str(key_event.value)
            if key in out:
                raise YamlSourceError(
                    f"duplicate key {key!r}",
                    *_mark(key_event),
                    hint="each key may appear once per mapping",
                )
            if key_event.anchor is not None:
                if key_event.anchor in self.anchors:
                    raise YamlSourceError(
                        f"duplicate anchor &{key_event.anchor}", *_mark(key_event)
                    )
                self.anchors[key_event.anchor] = (key, 1)
            self.positions.keys[path + (key,)] = _mark(key_event)
            out[key] = self.node(path + (key,), depth + 1)
        self.loader.get_event()
        return out

    def _resolve(self, event: ScalarEvent) -> str:
        if event.tag is None or event.tag == "!":
            tag: str = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            return tag
        return str(event.tag)

    def _scalar(self, event: ScalarEvent) -> Any:
        tag = self._resolve(event)
        text = event.value
        explicit = event.tag not in (None, "!")
        if tag == _STR:
            return text
        if tag == _TIMESTAMP and not explicit:
            return text  # a date-like string is text, valid date or not
        if tag not in _SCALARS:
            raise YamlSourceError(
                f"unsupported YAML tag {_tag_name(tag)!r}", *_mark(event), hint=_PLAIN_VALUES
            )
        if tag in _NUMBERS and len(text) >= MAX_NUMBER_CHARS:
            raise YamlSourceError(
                f"number {_short(text)} is {len(text)} characters long "
                f"(at most {MAX_NUMBER_CHARS - 1})",
                *_mark(event),
                hint="quote it if it is meant as text",
            )
        node = yaml.ScalarNode(tag, text, None, None, style=event.style)
        try:
            value = type(self.loader).yaml_constructors[tag](self.loader, node)
        except Exception as exc:  # PyYAML raises ValueError, KeyError, AttributeError...
            raise YamlSourceError(
                f"invalid {_tag_name(tag)} value {_short(text)}",
                *_mark(event),
                hint="fix the value, or quote it to keep it as text",
            ) from exc
        if tag in (_BINARY, _TIMESTAMP):
            return text  # checked, and kept as written
        return value


def load_yaml(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document safely, returning (data, positions)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YamlSourceError(
            f"file is larger than {MAX_BYTES} bytes ({size} bytes; the limit of one contract file)",
            1,
            1,
            hint="split the contract into several files",
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        composer = _Composer(loader)
        try:
            data = composer.document()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            raise YamlSourceError(f"invalid YAML: {_one_line(problem)}", line, col) from exc
        except yaml.reader.ReaderError as exc:
            at = max(0, min(int(exc.position), len(text)))
            line, col = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
            char = exc.character
            what = f"character {chr(char)!r}" if isinstance(char, int) else "byte"
            raise YamlSourceError(
                f"invalid YAML: unacceptable {what}: {_one_line(exc.reason)}",
                line,
                col,
                hint="remove control characters; write them as escapes in a quoted string",
            ) from exc
        except yaml.YAMLError as exc:
            raise YamlSourceError(f"invalid YAML: {_one_line(str(exc))}", 1, 1) from exc
        except RecursionError as exc:  # the depth limit keeps this away; never a crash
            raise YamlSourceError(f"document nests deeper than {MAX_DEPTH} levels", 1, 1) from exc
        return data, composer.positions
    finally:
        loader.dispose()
