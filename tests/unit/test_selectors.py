"""Label selectors match as apimachinery's do, in both the Deployment and Service forms."""

from __future__ import annotations

import pytest

from netlab.api.selectors import matches, matches_map, parse_selector, validate_selector
from netlab.errors import LocatedError, ManifestError

WEB = {"app": "web", "tier": "front"}


def expr(key: str, operator: str, *values: str) -> dict:
    req = {"key": key, "operator": operator}
    if values:
        req["values"] = list(values)
    return {"matchExpressions": [req]}


def test_match_labels_needs_every_pair():
    assert matches({"matchLabels": {"app": "web"}}, WEB)
    assert not matches({"matchLabels": {"app": "web", "tier": "back"}}, WEB)


def test_empty_selector_selects_everything_and_missing_selects_nothing():
    assert matches({}, WEB) and matches({}, {})
    assert not matches(None, WEB)


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    (expr("tier", "In", "front", "back"), WEB, True),
    (expr("tier", "In", "back"), WEB, False),
    (expr("zone", "In", "a"), WEB, False),
    (expr("tier", "NotIn", "back"), WEB, True),
    (expr("tier", "NotIn", "front"), WEB, False),
    (expr("zone", "NotIn", "a"), WEB, True),
    (expr("tier", "Exists"), WEB, True),
    (expr("zone", "Exists"), WEB, False),
    (expr("zone", "DoesNotExist"), WEB, True),
    (expr("tier", "DoesNotExist"), WEB, False),
])
def test_match_expressions(selector, labels, expected):
    assert matches(selector, labels) is expected


def test_match_labels_and_expressions_are_anded():
    selector = {"matchLabels": {"app": "web"}, **expr("tier", "In", "back")}
    assert not matches(selector, WEB)


def test_service_selector_form():
    assert matches_map({"app": "web"}, WEB)
    assert not matches_map({"app": "web", "tier": "back"}, WEB)
    assert not matches_map(None, WEB)
    assert not matches_map({"app": "web"}, None)


def test_a_plain_map_may_hold_a_label_called_match_labels():
    assert matches_map({"matchLabels": "x"}, {"matchLabels": "x"})


def test_kubectl_selector_strings_parse_to_label_selectors():
    selector = parse_selector("app=web, tier!=db,env in (prod, staging),!canary,track")
    assert selector == {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "track", "operator": "Exists"},
        ]}
    assert matches(selector, {"app": "web", "env": "prod", "track": "x"})
    assert not matches(selector, {"app": "web", "env": "prod", "track": "x", "canary": "1"})
    assert parse_selector("") == {}
    assert parse_selector("app==web") == {"matchLabels": {"app": "web"}}


@pytest.mark.parametrize("text", ["app=we b", "a,,b", "bad key=1", "x in (a b)", "=x"])
def test_bad_selector_strings_are_errors_naming_the_selector(text):
    with pytest.raises(LocatedError) as info:
        parse_selector(text)
    assert info.value.field == "selector"


def test_valid_selectors_pass_validation():
    validate_selector({"matchLabels": {"app": "web"}, **expr("tier", "In", "a")})
    validate_selector({"app": "web"}, plain=True)


@pytest.mark.parametrize(("selector", "field", "message"), [
    (expr("tier", "In"), "selector.matchExpressions[0].values", "must be specified"),
    (expr("tier", "Exists", "x"), "selector.matchExpressions[0].values", "may not be specified"),
    (expr("tier", "Like", "x"), "selector.matchExpressions[0].operator", "Unsupported value"),
    (expr("bad key", "Exists"), "selector.matchExpressions[0].key", "name part"),
    ({"matchLabels": {"app": 1}}, "selector.matchLabels.app", "must be a string"),
    ({"matchExpressions": [{"key": "a"}]}, "selector.matchExpressions[0].operator",
     "Required value"),
    ([], "selector", "must be a mapping"),
])
def test_invalid_selectors_name_the_field(selector, field, message):
    with pytest.raises(ManifestError) as info:
        validate_selector(selector)
    assert info.value.field == field and message in info.value.reason


def test_plain_selector_values_are_label_values():
    with pytest.raises(ManifestError, match="a valid label must be"):
        validate_selector({"app": "w e b"}, plain=True)


def test_validation_does_not_change_the_callers_selector():
    selector = {"matchLabels": {"app": "web"}, "bogus": 1}
    validate_selector(selector)
    assert selector == {"matchLabels": {"app": "web"}, "bogus": 1}
