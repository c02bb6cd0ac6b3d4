"""YAML documents as plain data, with the line of every mapping key and list item.

Validators work on plain dicts (what we store and print), but a good error names
the line. PyYAML's composer gives a node tree with marks; we turn that tree into
plain data ourselves and keep a side table `path -> line`, so a validator that
finds a problem at `spec.ports[1].port` can look its line up afterwards.

Scalars follow PyYAML's safe (YAML 1.1) resolution, like kubectl's YAML reader:
`yes` is a boolean, `0x10` an integer. Timestamps and binary stay strings (JSON,
which Kubernetes objects are, has neither), mapping keys are always strings
(as in JSON), and other tags are refused. Empty documents are skipped, as
kubectl skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from netlab.errors import LocatedError

PathPart = str | int
FieldPath = tuple[PathPart, ...]

MAX_DEPTH = 64
MAX_NODES = 200_000

_TAG = "tag:yaml.org,2002:"
_STRING_TAGS = {_TAG + "str", _TAG + "timestamp", _TAG + "binary"}
_MAPPING_TAGS = {_TAG + "map"}
_SEQUENCE_TAGS = {_TAG + "seq"}

# libyaml's parser when PyYAML was built with it: the same nodes and marks, 15x faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Scalar construction and merge-key flattening are stateless; one instance serves all.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def format_path(path: FieldPath) -> str:
    """`("spec", "ports", 1, "port")` -> `spec.ports[1].port`, the API server's notation."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Document:
    """One YAML document: its plain data and where each piece of it was written."""

    data: Any
    source: str
    index: int
    lines: dict[FieldPath, int] = field(repr=False)

    @property
    def line(self) -> int:
        """The line the document's content starts on."""
        return self.lines[()]

    def line_of(self, path: FieldPath) -> int:
        """Line of `path`, or of its nearest written ancestor when the field is missing."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return self.line


def read_source(path: str | Path, error: type[LocatedError]) -> str:
    """Read a UTF-8 text file, turning OS and decoding failures into `error`.

    Only regular files: a FIFO or a device (`/dev/zero`) would block or never end.
    """
    source = str(path)
    try:
        path = Path(path)
        if path.is_dir():
            raise error("is a directory, expected a YAML file", file=source)
        if not path.exists():
            raise error("no such file", file=source)
        if not path.is_file():
            raise error("not a regular file", file=source)
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"not valid UTF-8 text (byte {exc.start})", file=source) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", file=source) from None
    except ValueError as exc:
        raise error(f"invalid path: {exc}", file=source) from None


def load_documents(path: str | Path, error: type[LocatedError] = LocatedError) -> list[Document]:
    """Every non-empty document in the YAML file at `path` (see `parse_documents`)."""
    return parse_documents(read_source(path, error), str(path), error)


def parse_documents(text: str, source: str,
                    error: type[LocatedError] = LocatedError) -> list[Document]:
    """Every non-empty document of a YAML stream, each a mapping.

    Raises `error` (a LocatedError subclass, so the caller decides whether it is a
    lab file or a manifest that is wrong) for YAML syntax errors, duplicate keys,
    unsupported tags, and documents that are not mappings.
    """
    documents = []
    for index, node in enumerate(_compose(text, source, error)):
        builder = _Builder(source, error)
        data = builder.build(node, ())
        if data is None:
            continue
        if not isinstance(data, dict):
            raise error(f"document {index + 1} is {_describe(data)}, expected a mapping",
                        file=source, line=node.start_mark.line + 1)
        documents.append(Document(data, source, index, builder.lines))
    return documents


def _compose(text: str, source: str, error: type[LocatedError]) -> Iterator[Node]:
    """The node tree of each document, with YAML errors turned into `error`."""
    try:
        _check_depth(text, source, error)
        loader = _LOADER(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source, error) from None
    except UnicodeError:
        raise error("invalid YAML: text that cannot be encoded as UTF-8", file=source) from None
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, text, source, error) from None
            if node is not None:
                yield node
    finally:
        loader.dispose()


def _check_depth(text: str, source: str, error: type[LocatedError]) -> None:
    """Refuse deep nesting before composing: libyaml composes recursively in C, where
    `[[[[...` a few ten thousand deep overflows the stack instead of raising. Its
    event stream is iterative, so counting depth there is safe."""
    parser = _LOADER(text)
    try:
        depth = 0
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise error(f"nested deeper than {MAX_DEPTH} levels", file=source,
                                line=event.start_mark.line + 1)
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    finally:
        parser.dispose()


def _yaml_error(exc: yaml.YAMLError, text: str, source: str,
                error: type[LocatedError]) -> LocatedError:
    line = None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line = mark.line + 1
        reason = exc.problem or "invalid YAML"
        if exc.context:
            reason = f"{reason} ({exc.context})"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        reason = f"unacceptable character #x{exc.character:04x}" if isinstance(
            exc.character, int) else "unacceptable character"
    else:
        reason = str(exc)
    return error(f"invalid YAML: {reason}", file=source, line=line)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__} scalar"


class _Builder:
    """Turns one document's node tree into plain data, recording lines as it goes."""

    def __init__(self, source: str, error: type[LocatedError]) -> None:
        self.source = source
        self.error = error
        self.lines: dict[FieldPath, int] = {}
        self._count = 0
        self._active: set[int] = set()

    def _fail(self, reason: str, node: Node) -> LocatedError:
        return self.error(reason, file=self.source, line=node.start_mark.line + 1)

    def build(self, node: Node, path: FieldPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self._count += 1
        if self._count > MAX_NODES:
            raise self._fail(f"document too large (more than {MAX_NODES} values, "
                             "counting each use of an alias)", node)
        if len(path) > MAX_DEPTH:
            raise self._fail(f"nested deeper than {MAX_DEPTH} levels", node)
        if id(node) in self._active:
            raise self._fail("recursive alias: a node that contains itself", node)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                if node.tag not in _SEQUENCE_TAGS:
                    raise self._fail(f"unsupported YAML tag {node.tag}", node)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))
        raise self._fail("unsupported YAML node", node)

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag in _STRING_TAGS:
            return node.value
        try:
            if node.tag == _TAG + "null":
                return None
            if node.tag == _TAG + "bool":
                return _CONSTRUCTOR.construct_yaml_bool(node)
            if node.tag == _TAG + "int":
                return _CONSTRUCTOR.construct_yaml_int(node)
            if node.tag == _TAG + "float":
                return _CONSTRUCTOR.construct_yaml_float(node)
        except (ValueError, yaml.YAMLError):
            raise self._fail(f"invalid {node.tag.removeprefix(_TAG)} value {node.value!r}",
                             node) from None
        raise self._fail(f"unsupported YAML tag {node.tag}", node)

    def _mapping(self, node: MappingNode, path: FieldPath) -> dict[str, Any]:
        if node.tag not in _MAPPING_TAGS:
            raise self._fail(f"unsupported YAML tag {node.tag}", node)
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise self.error(f"duplicate key {key!r} (first on line {seen[key]})",
                                 file=self.source, field=format_path((*path, key)), line=line)
            seen[key] = line
        try:
            _CONSTRUCTOR.flatten_mapping(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or node.start_mark
            raise self.error(f"invalid merge key: {getattr(exc, 'problem', exc)}",
                             file=self.source, line=mark.line + 1) from None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self._fail("mapping keys must be plain scalars, not lists or mappings", node)
        return node.value
