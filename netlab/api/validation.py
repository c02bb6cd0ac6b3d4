"""The checker validators write into: problems in the API server's words, plus notes.

The API server does not stop at the first mistake; it returns every problem in an
object at once ("Required value", "Invalid value: 0: must be ...", "Unsupported
value", "Duplicate value", "Forbidden"). We collect the same way and raise one
error whose location is the first problem and whose text lists the rest, so a
user fixes a manifest in one round trip. Notes are the softer channel: fields we
accept but do not act on, and unknown fields we drop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from netlab.api.yamlsrc import MAX_DEPTH, FieldPath, format_path
from netlab.errors import LocatedError, ManifestError

LineOf = Callable[[FieldPath], int | None]

IGNORED = "ignored (netlab does not implement it)"
UNKNOWN = "unknown field, dropped"
SYSTEM = "ignored (set by netlab)"

_MAX_LISTED_PROBLEMS = 10


def show(value: Any) -> str:
    """A value as the API server prints it in "Invalid value: ..." (JSON-ish, short)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Checker:
    """Problems and notes for one object, with the source file and its line table."""

    def __init__(self, source: str, line_of: LineOf | None = None,
                 error: type[LocatedError] = ManifestError) -> None:
        self.source = source
        self.line_of = line_of
        self.error = error
        self.problems: list[tuple[FieldPath, str]] = []
        self.notes: list[str] = []

    # -- recording ---------------------------------------------------------------

    def problem(self, path: FieldPath, reason: str) -> None:
        self.problems.append((path, reason))

    def required(self, path: FieldPath, detail: str = "") -> None:
        self.problem(path, f"Required value: {detail}" if detail else "Required value")

    def invalid(self, path: FieldPath, value: Any, detail: str) -> None:
        self.problem(path, f"Invalid value: {show(value)}: {detail}")

    def unsupported(self, path: FieldPath, value: Any, supported: Iterable[str]) -> None:
        listed = ", ".join(f'"{s}"' for s in supported)
        self.problem(path, f"Unsupported value: {show(value)}: supported values: {listed}")

    def duplicate(self, path: FieldPath, value: Any) -> None:
        self.problem(path, f"Duplicate value: {show(value)}")

    def forbidden(self, path: FieldPath, detail: str) -> None:
        self.problem(path, f"Forbidden: {detail}")

    def names(self, path: FieldPath, value: str, problems: list[str]) -> bool:
        """Record each message of a `names.*` check as an Invalid value; True when clean."""
        for message in problems:
            self.invalid(path, value, message)
        return not problems

    def note(self, path: FieldPath, text: str) -> None:
        self.notes.append(str(LocatedError(text, file=self.source, field=format_path(path),
                                           line=self._line(path))))

    def _line(self, path: FieldPath) -> int | None:
        return self.line_of(path) if self.line_of else None

    def located(self, path: FieldPath, reason: str) -> LocatedError:
        return self.error(reason, file=self.source, field=format_path(path) or None,
                          line=self._line(path))

    def raise_if_any(self) -> None:
        """Raise one error for everything found: located at the first problem, listing all."""
        if not self.problems:
            return
        (path, reason), rest = self.problems[0], self.problems[1:]
        more = [f"  {self.located(p, r)}" for p, r in rest[:_MAX_LISTED_PROBLEMS]]
        if len(rest) > _MAX_LISTED_PROBLEMS:
            more.append(f"  ... and {len(rest) - _MAX_LISTED_PROBLEMS} more")
        raise self.error("\n".join([reason, *more]), file=self.source,
                         field=format_path(path) or None, line=self._line(path))

    # -- structure ---------------------------------------------------------------

    def fields(self, obj: dict, path: FieldPath, known: Collection[str],
               ignored: Mapping[str, str] | Collection[str] = ()) -> None:
        """Note fields we accept but ignore; note and drop fields Kubernetes does not have.

        `known` are the fields the caller validates; `ignored` are real Kubernetes
        fields kept in the object but without effect in netlab (a mapping gives
        each its own reason).
        """
        for key in list(obj):
            if key in known:
                continue
            if key in ignored:
                reason = ignored[key] if isinstance(ignored, Mapping) else IGNORED
                self.note((*path, key), reason)
            else:
                self.note((*path, key), UNKNOWN)
                del obj[key]

    def _get(self, obj: dict, key: str, path: FieldPath, required: bool | str,
             accept: Callable[[Any], bool], expected: str) -> Any:
        value = obj.get(key)
        if value is None:
            if required:
                self.required((*path, key), required if isinstance(required, str) else "")
            return None
        if not accept(value):
            self.invalid((*path, key), value, f"must be {expected}")
            return None
        return value

    def string(self, obj: dict, key: str, path: FieldPath,
               required: bool | str = False) -> str | None:
        value = self._get(obj, key, path, required, lambda v: isinstance(v, str), "a string")
        if required and value == "":
            self.required((*path, key), required if isinstance(required, str) else "")
            return None
        return value

    def integer(self, obj: dict, key: str, path: FieldPath,
                required: bool | str = False) -> int | None:
        return self._get(obj, key, path, required, is_int, "an integer")

    def boolean(self, obj: dict, key: str, path: FieldPath) -> bool | None:
        return self._get(obj, key, path, False, lambda v: isinstance(v, bool),
                         "a boolean (true or false)")

    def mapping(self, obj: dict, key: str, path: FieldPath,
                required: bool | str = False) -> dict | None:
        return self._get(obj, key, path, required, lambda v: isinstance(v, dict),
                         "a mapping (an object)")

    def sequence(self, obj: dict, key: str, path: FieldPath,
                 required: bool | str = False) -> list | None:
        value = self._get(obj, key, path, required, lambda v: isinstance(v, list), "a list")
        if required and value == []:
            self.required((*path, key), required if isinstance(required, str) else "")
            return None
        return value

    def string_list(self, obj: dict, key: str, path: FieldPath,
                    required: bool | str = False) -> list[str] | None:
        items = self.sequence(obj, key, path, required)
        if items is None:
            return None
        ok = True
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.invalid((*path, key, i), item, "must be a string")
                ok = False
        return items if ok else None

    def string_map(self, obj: dict, key: str, path: FieldPath) -> dict[str, str] | None:
        value = self.mapping(obj, key, path)
        if value is None:
            return None
        ok = True
        for k, v in value.items():
            if not isinstance(v, str):
                self.invalid((*path, key, k), v, "must be a string (quote numbers and booleans)")
                ok = False
        return value if ok else None

    def choice(self, obj: dict, key: str, path: FieldPath, allowed: Collection[str],
               default: str | None = None) -> str | None:
        """A string field with a closed set of values, defaulted when absent."""
        if obj.get(key) is None:
            if default is not None:
                obj[key] = default
            return default
        value = obj[key]
        if not isinstance(value, str) or value not in allowed:
            self.unsupported((*path, key), value, allowed)
            return None
        return value

    def port_number(self, path: FieldPath, value: Any) -> bool:
        """1..65535, worded as the API server words it."""
        if not is_int(value) or not 1 <= value <= 65535:
            self.invalid(path, value, "must be between 1 and 65535, inclusive")
            return False
        return True


def is_int(value: Any) -> bool:
    """An integer, not a boolean (YAML `yes` is a bool, and bool is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_plain(ck: Checker, value: Any, path: FieldPath = ()) -> bool:
    """True when `value` is JSON-shaped data (what a manifest can hold), else record why.

    Objects reach `validate_object` from YAML and from Python callers alike; this
    makes sure nothing exotic (tuples, bytes, cycles, non-string keys, NaN) gets
    stored or trips a later step.
    """
    if len(path) > MAX_DEPTH:
        ck.problem(path, f"nested deeper than {MAX_DEPTH} levels")
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        if math.isfinite(value):
            return True
        ck.invalid(path, str(value), "must be a finite number")
        return False
    if isinstance(value, dict):
        ok = True
        for key, item in value.items():
            if not isinstance(key, str):
                ck.invalid(path, str(key), "field names must be strings")
                ok = False
            elif not check_plain(ck, item, (*path, key)):
                ok = False
        return ok
    if isinstance(value, list):
        return all([check_plain(ck, item, (*path, i)) for i, item in enumerate(value)])
    ck.invalid(path, repr(value)[:40], f"a {type(value).__name__} cannot be part of an object")
    return False
