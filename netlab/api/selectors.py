"""Labels and label selectors: syntax checks and matching.

Two selector shapes exist in Kubernetes and both appear here. Deployments (and
ReplicaSets) use a LabelSelector, `{matchLabels: {...}, matchExpressions: [...]}`;
Services use a plain map where every pair must be equal. They are kept apart
(`matches` and `matches_map`) because a plain map may legally contain a label
called `matchLabels`.

Semantics follow apimachinery: a missing LabelSelector selects nothing, an empty
one selects everything; `NotIn` and `!=` also match objects without the key.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from netlab.api import names
from netlab.api.validation import Checker, check_plain
from netlab.api.yamlsrc import FieldPath
from netlab.errors import LocatedError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SET_OPERATORS = ("In", "NotIn")


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Does a (validated) LabelSelector select an object with these labels?"""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_requirement_matches(req, labels)
               for req in selector.get("matchExpressions") or [])


def _requirement_matches(req: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = req["key"], req["operator"]
    values = req.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {operator!r}")


def matches_map(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Does a Service-style selector (every pair equal) select these labels?

    A missing selector selects nothing: a Service without one has no managed
    endpoints. Validation drops an empty selector, as JSON's omitempty would.
    """
    if selector is None:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


_KEY = r"(?P<key>[^\s!=()]+)"
_SET_REQUIREMENT = re.compile(rf"^{_KEY}\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY_REQUIREMENT = re.compile(rf"^{_KEY}\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=()]*)$")


def parse_selector(text: str) -> dict[str, Any]:
    """A kubectl `-l` selector string (`app=web,tier!=db,env in (a,b),!canary`) as a
    LabelSelector, so the same `matches` serves flags and manifests."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for raw in _split_requirements(text):
        req = raw.strip()
        if not req:
            raise _parse_error(text, "empty requirement")
        if m := _SET_REQUIREMENT.match(req):
            values = [v.strip() for v in m["values"].split(",")]
            operator = "In" if m["op"] == "in" else "NotIn"
            expressions.append({"key": _key(m["key"], text), "operator": operator,
                                "values": [_value(v, text) for v in values]})
        elif m := _EQUALITY_REQUIREMENT.match(req):
            key, value = _key(m["key"], text), _value(m["value"], text)
            if m["op"] == "!=":
                expressions.append({"key": key, "operator": "NotIn", "values": [value]})
            else:
                match_labels[key] = value
        elif req.startswith("!"):
            expressions.append({"key": _key(req[1:].strip(), text), "operator": "DoesNotExist"})
        else:
            expressions.append({"key": _key(req, text), "operator": "Exists"})
    selector: dict[str, Any] = {}
    if match_labels:
        selector["matchLabels"] = match_labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def _split_requirements(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two requirements)."""
    if not text.strip():
        return []
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_error(text: str, reason: str) -> LocatedError:
    return LocatedError(f"unable to parse requirement in {text!r}: {reason}", field="selector")


def _key(key: str, text: str) -> str:
    if problems := names.qualified_name(key):
        raise _parse_error(text, f"invalid label key {key!r}: {problems[0]}")
    return key


def _value(value: str, text: str) -> str:
    if problems := names.label_value(value):
        raise _parse_error(text, f"invalid label value {value!r}: {problems[0]}")
    return value


def check_labels(ck: Checker, obj: dict, key: str, path: FieldPath) -> dict[str, str] | None:
    """A labels-shaped map (labels, nodeSelector, Service selector): keys and values."""
    labels = ck.string_map(obj, key, path)
    if labels is None:
        return None
    ok = True
    for label_key, label_value in labels.items():
        here = (*path, key, label_key)
        ok = ck.names(here, label_key, names.qualified_name(label_key)) and ok
        ok = ck.names(here, label_value, names.label_value(label_value)) and ok
    return labels if ok else None


def check_label_selector(ck: Checker, obj: dict, key: str, path: FieldPath,
                         required: bool = False) -> dict[str, Any] | None:
    """A LabelSelector at obj[key]; returns it only when it is entirely valid."""
    selector = ck.mapping(obj, key, path, required)
    if selector is None:
        return None
    here = (*path, key)
    before = len(ck.problems)
    ck.fields(selector, here, ("matchLabels", "matchExpressions"))
    check_labels(ck, selector, "matchLabels", here)
    expressions = ck.sequence(selector, "matchExpressions", here) or []
    for i, req in enumerate(expressions):
        _check_requirement(ck, req, (*here, "matchExpressions", i))
    return selector if len(ck.problems) == before else None


def _check_requirement(ck: Checker, req: Any, path: FieldPath) -> None:
    if not isinstance(req, dict):
        ck.invalid(path, req, "must be a mapping with key, operator and values")
        return
    ck.fields(req, path, ("key", "operator", "values"))
    key = ck.string(req, "key", path, required=True)
    if key is not None:
        ck.names((*path, "key"), key, names.qualified_name(key))
    if req.get("operator") is None:
        ck.required((*path, "operator"))
        return
    operator = ck.choice(req, "operator", path, OPERATORS)
    raw_values = req.get("values")
    values = ck.string_list(req, "values", path)
    if operator in _SET_OPERATORS and (raw_values is None or raw_values == []):
        ck.required((*path, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
    elif operator in ("Exists", "DoesNotExist") and raw_values:
        ck.forbidden((*path, "values"),
                     "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
    for i, value in enumerate(values or []):
        ck.names((*path, "values", i), value, names.label_value(value))


def validate_selector(selector: Any, *, plain: bool = False, source: str = "<selector>",
                      field: str = "selector") -> None:
    """Check a selector given outside a manifest (a script, a test); raises ManifestError.

    `plain=True` checks the Service form (a label map), otherwise a LabelSelector.
    """
    ck = Checker(source)
    if check_plain(ck, selector, (field,)):
        holder = {field: copy.deepcopy(selector)}
        if plain:
            if selector is None:
                ck.required((field,))
            check_labels(ck, holder, field, ())
        else:
            check_label_selector(ck, holder, field, (), required=True)
    ck.raise_if_any()
