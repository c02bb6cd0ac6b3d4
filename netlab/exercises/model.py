"""An exercise as written in its folder's exercise.yaml, validated before anything runs.

The format (docs/exercises.md has the full reference) is a mapping:

    id, title, lab, story, symptom, hints          what the learner reads
    difficulty, tags, solution, explanation        optional text and metadata
    setup, break, solve, reset, teardown           steps: lists of actions
    check                                          checks that pass on a healthy lab
    symptom_checks                                 checks that still pass while broken
    alternatives                                   other correct fixes, each a step list

A step or a check is a one-key mapping (`exec: {...}`, `http: {...}`), optionally
with a `title`. Every problem is reported with the file, the line and the field, and
every file a step names must exist, so an author finds mistakes when the catalog is
loaded (`knetlab exercise list`), not halfway through breaking a lab.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.api.yamlsrc import Document, FieldPath, format_path, load_documents
from netlab.errors import LocatedError

EXERCISE_FILE = "exercise.yaml"
ERRORS = ("refused", "timeout")  # how a request may be expected to fail
ID_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ExerciseError(LocatedError):
    """An exercise file is invalid, or an exercise step failed while running."""


@dataclass(frozen=True)
class Step:
    """One action (apply, exec, restart, ...) or check (http, udp, ...): kind and arguments."""

    kind: str
    args: Any
    title: str | None
    where: str  # "file:line: field", for errors found while running

    def describe(self) -> str:
        return self.title or f"{self.kind} {_short(self.args)}"


@dataclass(frozen=True)
class Alternative:
    """Another correct fix: the checker must accept it too (the tests run each one)."""

    title: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    folder: Path
    lab: Path
    story: str
    symptom: str
    hints: tuple[str, ...]
    checks: tuple[Step, ...]
    break_steps: tuple[Step, ...]
    solve_steps: tuple[Step, ...]
    reset_steps: tuple[Step, ...]
    setup_steps: tuple[Step, ...] = ()
    teardown_steps: tuple[Step, ...] = ()
    symptom_checks: tuple[Step, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    solution: str = ""
    explanation: str = ""
    difficulty: int = 1
    tags: tuple[str, ...] = ()

    def path(self, name: str) -> Path:
        """A file named by a step, relative to the exercise's folder."""
        return self.folder / name


def _short(value: Any) -> str:
    def show(item: Any) -> str:
        return f"({item.describe()})" if isinstance(item, Step) else str(item)

    text = show(value) if not isinstance(value, dict) else ", ".join(
        f"{k}={show(v)}" for k, v in value.items())
    return text if len(text) <= 70 else text[:67] + "..."


# -- argument schemas ---------------------------------------------------------------------

# Checks a step's arguments; may return them converted (None: keep them as written).
Validator = Callable[["_Reader", Any, FieldPath], Any]


class _Reader:
    """Reads one document, raising ExerciseError with file, line and field on a problem."""

    def __init__(self, document: Document, folder: Path) -> None:
        self.document = document
        self.folder = folder

    def fail(self, path: FieldPath, reason: str) -> ExerciseError:
        return ExerciseError(reason, file=self.document.source,
                             line=self.document.line_of(path), field=format_path(path) or None)

    def where(self, path: FieldPath) -> str:
        return f"{self.document.source}:{self.document.line_of(path)}: {format_path(path)}"

    def text(self, data: Mapping[str, Any], key: str, path: FieldPath,
             required: bool = True) -> str:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail((*path, key), "Required value")
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail((*path, key), "must be a non-empty string")
        return value

    def string(self, value: Any, path: FieldPath) -> None:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "must be a non-empty string")

    def strings(self, value: Any, path: FieldPath) -> list[str]:
        """A string or a list of strings, as a list."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(path, "must not be empty")
        for i, item in enumerate(items):
            self.string(item, (*path, i) if isinstance(value, list) else path)
        return items

    def number(self, value: Any, path: FieldPath, minimum: float = 0) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(path, f"must be a number >= {minimum:g}")

    def integer(self, value: Any, path: FieldPath, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be an integer from {low} to {high}")

    def files(self, value: Any, path: FieldPath) -> None:
        for i, name in enumerate(self.strings(value, path)):
            where = (*path, i) if isinstance(value, list) else path
            if not (self.folder / name).is_file():
                raise self.fail(where, f"no such file in {self.folder}: {name}")

    def fields(self, value: Any, path: FieldPath, required: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping with {', '.join(required + optional)}")
        for key in value:
            if key not in required + optional:
                raise self.fail((*path, key), "unknown field (expected one of: "
                                f"{', '.join(required + optional)})")
        for key in required:
            if key not in value:
                raise self.fail((*path, key), "Required value")
        return value


def _files_or_object(r: _Reader, value: Any, path: FieldPath) -> None:
    if isinstance(value, dict):
        args = r.fields(value, path, ("kind",), ("name", "selector", "namespace"))
        if ("name" in args) == ("selector" in args):
            raise r.fail(path, "give exactly one of name and selector")
        for key in args:
            r.string(args[key], (*path, key))
    else:
        r.files(value, path)


def _scale(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("deployment", "replicas"))
    r.string(args["deployment"], (*path, "deployment"))
    r.integer(args["replicas"], (*path, "replicas"), 0, 100)


def _exec(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("on", "run"), ("expect_output", "timeout"))
    r.strings(args["on"], (*path, "on"))
    r.string(args["run"], (*path, "run"))
    if "expect_output" in args:
        r.string(args["expect_output"], (*path, "expect_output"))
        try:
            re.compile(args["expect_output"])
        except re.error as exc:
            raise r.fail((*path, "expect_output"), f"not a regular expression: {exc}") from None
    if "timeout" in args:
        r.number(args["timeout"], (*path, "timeout"), 0.1)


def _agent_config(r: _Reader, value: Any, path: FieldPath) -> None:
    from netlab.node import agentconfig

    args = r.fields(value, path, ("nodes",), ("set", "unset"))
    r.strings(args["nodes"], (*path, "nodes"))
    if "set" not in args and "unset" not in args:
        raise r.fail(path, "give set, unset or both")
    if "set" in args:
        try:
            agentconfig.parse(args["set"], r.document.source)
        except agentconfig.AgentConfigError as exc:
            raise r.fail((*path, "set", *((exc.field,) if exc.field else ())),
                         exc.reason) from None
    if "unset" in args:
        r.strings(args["unset"], (*path, "unset"))


def _wait(r: _Reader, value: Any, path: FieldPath) -> Any:
    if value in ("ready", "rollout"):
        return None
    if not isinstance(value, dict):
        raise r.fail(path, "must be `ready`, `rollout`, {seconds: N} or "
                     "{for: CHECK, timeout: N}")
    if "seconds" in value:
        r.fields(value, path, ("seconds",))
        r.number(value["seconds"], (*path, "seconds"))
        return None
    args = r.fields(value, path, ("for",), ("timeout",))
    if "timeout" in args:
        r.number(args["timeout"], (*path, "timeout"), 0.1)
    return {**args, "for": _step(r, args["for"], (*path, "for"), CHECKS)}


def _save(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("name", "value"))
    r.string(args["name"], (*path, "name"))
    r.string(args["value"], (*path, "value"))


def _http(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("from", "to"),
                    ("port", "path", "count", "timeout", "echo", "expect"))
    _traffic(r, args, path)
    if "path" in args:
        r.string(args["path"], (*path, "path"))
    if "echo" in args:
        r.integer(args["echo"], (*path, "echo"), 1, 60000)


def _udp(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("from", "to", "port"),
                    ("source_port", "message", "count", "timeout", "expect"))
    _traffic(r, args, path)
    if "source_port" in args:
        r.integer(args["source_port"], (*path, "source_port"), 1, 65535)
    if "message" in args:
        r.string(args["message"], (*path, "message"))


def _traffic(r: _Reader, args: dict[str, Any], path: FieldPath) -> None:
    r.string(args["from"], (*path, "from"))
    r.string(args["to"], (*path, "to"))
    if "port" in args:
        r.integer(args["port"], (*path, "port"), 1, 65535)
    if "count" in args:
        r.integer(args["count"], (*path, "count"), 1, 1000)
    if "timeout" in args:
        r.number(args["timeout"], (*path, "timeout"), 0.1)
    if "expect" in args:
        expect = r.fields(args["expect"], (*path, "expect"), (), ("body", "pods", "error"))
        if len(expect) != 1:
            raise r.fail((*path, "expect"), "give one of body, pods and error")
        for key, item in expect.items():
            r.string(item, (*path, "expect", key))
        if expect.get("error", "refused") not in ERRORS:
            raise r.fail((*path, "expect", "error"), f"must be one of: {', '.join(ERRORS)}")


def _names(r: _Reader, value: Any, path: FieldPath) -> None:
    r.strings(value, path)


def _resolve(r: _Reader, value: Any, path: FieldPath) -> None:
    args = r.fields(value, path, ("from", "name"), ("expect", "timeout"))
    r.string(args["from"], (*path, "from"))
    r.string(args["name"], (*path, "name"))
    if "expect" in args:
        r.string(args["expect"], (*path, "expect"))
    if "timeout" in args:
        r.number(args["timeout"], (*path, "timeout"), 0.1)


ACTIONS: dict[str, Validator] = {
    "apply": lambda r, v, p: r.files(v, p),
    "delete": _files_or_object,
    "recreate": lambda r, v, p: r.files(v, p),
    "scale": _scale,
    "exec": _exec,
    "script": lambda r, v, p: r.files(v, p),
    "agent-config": _agent_config,
    "restart": lambda r, v, p: _names(r, v, p),
    "wait": _wait,
    "save": _save,
}
CHECKS: dict[str, Validator] = {
    "http": _http,
    "udp": _udp,
    "resolve": _resolve,
    "exec": _exec,
    "script": lambda r, v, p: r.files(v, p),
}


def _step(r: _Reader, item: Any, path: FieldPath, kinds: dict[str, Validator]) -> Step:
    if not isinstance(item, dict):
        raise r.fail(path, f"must be a mapping with one of: {', '.join(kinds)}")
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise r.fail((*path, "title"), "must be a string")
    keys = [k for k in item if k != "title"]
    if len(keys) != 1 or keys[0] not in kinds:
        unknown = next((k for k in keys if k not in kinds), None)
        where = (*path, unknown) if unknown else path
        raise r.fail(where, f"expected exactly one of: {', '.join(kinds)}")
    kind = keys[0]
    converted = kinds[kind](r, item[kind], (*path, kind))
    args = item[kind] if converted is None else converted
    return Step(kind, args, title, r.where((*path, kind)))


def _steps(r: _Reader, data: Mapping[str, Any], key: str, kinds: dict[str, Validator],
           required: bool) -> tuple[Step, ...]:
    value = data.get(key)
    if value is None:
        if required:
            raise r.fail((key,), "Required value")
        return ()
    if not isinstance(value, list) or (required and not value):
        raise r.fail((key,), "must be a list of steps")
    return tuple(_step(r, item, (key, i), kinds) for i, item in enumerate(value))


def _alternatives(r: _Reader, data: Mapping[str, Any]) -> tuple[Alternative, ...]:
    value = data.get("alternatives") or []
    if not isinstance(value, list):
        raise r.fail(("alternatives",), "must be a list of {title, steps}")
    found = []
    for i, item in enumerate(value):
        args = r.fields(item, ("alternatives", i), ("title", "steps"))
        r.string(args["title"], ("alternatives", i, "title"))
        steps = args["steps"]
        if not isinstance(steps, list) or not steps:
            raise r.fail(("alternatives", i, "steps"), "must be a non-empty list of steps")
        found.append(Alternative(args["title"], tuple(
            _step(r, s, ("alternatives", i, "steps", j), ACTIONS) for j, s in enumerate(steps))))
    return tuple(found)


KNOWN_KEYS = ("id", "title", "difficulty", "tags", "lab", "story", "symptom", "hints", "setup",
              "break", "check", "symptom_checks", "solve", "solution", "alternatives", "reset",
              "teardown", "explanation")


def load_exercise(folder: Path) -> Exercise:
    """The exercise in `folder`/exercise.yaml; raises ExerciseError naming file, line, field."""
    source = folder / EXERCISE_FILE
    documents = load_documents(source, ExerciseError)
    if len(documents) != 1:
        raise ExerciseError("must hold exactly one YAML document", file=str(source))
    document = documents[0]
    data = document.data
    r = _Reader(document, folder)
    for key in data:
        if key not in KNOWN_KEYS:
            raise r.fail((key,), f"unknown field (expected one of: {', '.join(KNOWN_KEYS)})")
    ident = r.text(data, "id", ())
    if not ID_PATTERN.fullmatch(ident) or ident != folder.name:
        raise r.fail(("id",), f"must be lower-case letters, digits and dashes, and the same as "
                     f"the folder's name ({folder.name})")
    lab = r.text(data, "lab", ())
    if not (folder / lab).is_file():
        raise r.fail(("lab",), f"no such lab file: {folder / lab}")
    hints = data.get("hints")
    if not isinstance(hints, list) or not hints:
        raise r.fail(("hints",), "must be a non-empty list of texts, from gentle to telling")
    for i, hint in enumerate(hints):
        r.string(hint, ("hints", i))
    tags = data.get("tags") or []
    if tags:
        r.strings(tags, ("tags",))
    difficulty = data.get("difficulty", 1)
    r.integer(difficulty, ("difficulty",), 1, 3)
    return Exercise(
        id=ident, title=r.text(data, "title", ()), folder=folder, lab=(folder / lab).resolve(),
        story=r.text(data, "story", ()), symptom=r.text(data, "symptom", ()),
        hints=tuple(hints), difficulty=difficulty, tags=tuple(tags),
        checks=_steps(r, data, "check", CHECKS, True),
        symptom_checks=_steps(r, data, "symptom_checks", CHECKS, False),
        setup_steps=_steps(r, data, "setup", ACTIONS, False),
        break_steps=_steps(r, data, "break", ACTIONS, True),
        solve_steps=_steps(r, data, "solve", ACTIONS, True),
        reset_steps=_steps(r, data, "reset", ACTIONS, True),
        teardown_steps=_steps(r, data, "teardown", ACTIONS, False),
        alternatives=_alternatives(r, data),
        solution=r.text(data, "solution", (), required=False),
        explanation=r.text(data, "explanation", (), required=False),
    )
