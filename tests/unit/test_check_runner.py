"""`check svc` without a lab: step order, skipping, errors, rendering."""

from __future__ import annotations

import json

import pytest

from netlab.check.model import (
    FAILED,
    PASSED,
    SKIPPED,
    Report,
    Step,
    StepResult,
    failed,
    not_applicable,
    passed,
)
from netlab.check.render import render_json, render_text
from netlab.check.runner import run_steps, validate_order
from netlab.check.svc import STEPS, run
from netlab.errors import KernelError
from tests.unit.check_objects import context


def clock():  # a clock that advances 0.25 s per reading
    ticks = iter(range(1000))
    return lambda: next(ticks) * 0.25


def stubbed(fail: set[str], not_applicable_: frozenset[str] = frozenset()) -> list[Step]:
    """The real steps and their `needs`, each deciding as told instead of looking."""
    def decide(name: str):
        if name in fail:
            return lambda _: failed("look here", f"{name} is broken")
        if name in not_applicable_:
            return lambda _: not_applicable("nothing to check")
        return lambda _: passed(f"{name} is fine")
    return [Step(s.name, s.title, decide(s.name), s.needs) for s in STEPS]


def by_name(results: list[StepResult]) -> dict[str, StepResult]:
    return {r.name: r for r in results}


def test_steps_run_from_cause_to_symptom():
    """Objects, then the pods, then kube-proxy, then traffic through the Service."""
    names = [s.name for s in STEPS]
    assert names == ["service", "selector", "pods-ready", "target-port", "endpoints",
                     "pods-answer", "kube-proxy", "proxy-rules", "dns", "cluster-ip",
                     "node-port", "hairpin", "conntrack"]
    validate_order(STEPS)


def test_a_failure_skips_what_builds_on_it_and_nothing_else():
    results = by_name(run_steps(stubbed({"endpoints"}), None, clock()))
    assert results["endpoints"].status == FAILED
    skipped = {n for n, r in results.items() if r.status == SKIPPED}
    assert skipped == {"pods-answer", "proxy-rules", "cluster-ip", "node-port", "hairpin",
                       "conntrack"}
    assert all(results[n].blocked_by == "endpoints" for n in skipped)
    assert results["kube-proxy"].status == results["dns"].status == PASSED


def test_skips_name_the_first_cause_down_the_chain():
    """hairpin needs cluster-ip, which needs proxy-rules: the skip names proxy-rules."""
    results = by_name(run_steps(stubbed({"proxy-rules"}), None, clock()))
    assert results["cluster-ip"].blocked_by == "proxy-rules"
    assert results["hairpin"].blocked_by == "proxy-rules"
    assert results["hairpin"].hint == "fix proxy-rules first"


def test_a_step_that_does_not_apply_blocks_nothing():
    """No selector: selector and pods-ready do not apply, endpoints still runs."""
    results = by_name(run_steps(stubbed(set(), frozenset({"selector", "pods-ready",
                                                          "target-port"})), None, clock()))
    assert results["selector"].status == SKIPPED and results["selector"].blocked_by is None
    assert results["endpoints"].status == PASSED
    assert all(r.status != SKIPPED or r.blocked_by is None for r in results.values())


def test_a_step_that_cannot_look_fails_with_the_reason():
    def broken(_):
        raise KernelError("setns: Operation not permitted")
    steps = [Step("a", "first", lambda _: passed("ok")), Step("b", "second", broken, ("a",)),
             Step("c", "third", lambda _: passed("ok"), ("b",))]
    results = by_name(run_steps(steps, None, clock()))
    assert results["b"].status == FAILED
    assert results["b"].evidence == ("the check could not look: setns: Operation not permitted",)
    assert results["c"].blocked_by == "b"


def test_steps_are_timed():
    results = run_steps([Step("a", "first", lambda _: passed())], None, clock())
    assert results[0].seconds == 0.25


@pytest.mark.parametrize("steps, message", [
    ([Step("a", "x", passed, ("b",)), Step("b", "y", passed)], "needs 'b'"),
    ([Step("a", "x", passed), Step("a", "y", passed)], "defined twice"),
])
def test_bad_orders_are_refused(steps, message):
    with pytest.raises(ValueError, match=message):
        validate_order(steps)


def test_a_missing_service_fails_first_and_skips_the_rest_without_looking():
    """No store or kernel is touched: every later step needs the Service."""
    report = run(context(svc=None))
    assert report.first_failure is not None and report.first_failure.name == "service"
    assert report.first_failure.evidence == (
        "no Service default/web (kubectl get svc web -n default)",)
    assert [s.status for s in report.steps[1:]] == [SKIPPED] * (len(STEPS) - 1)
    assert not report.ok


def report() -> Report:
    steps = (
        StepResult("service", "the Service exists", PASSED, ("Service default/web",),
                   seconds=0.01),
        StepResult("selector", "its selector matches pods", FAILED,
                   ("selector app=webb matches no pod", "near miss: web-a: app=web"),
                   "fix the selector", seconds=0.02),
        StepResult("endpoints", "EndpointSlices list ready endpoints", SKIPPED,
                   hint="fix selector first", blocked_by="selector"),
        StepResult("node-port", "the NodePort answers", SKIPPED, hint="no NodePort"),
    )
    return Report("default/web", "default/client", steps, 1.25,
                  ("type ClusterIP, ClusterIP 10.96.0.50", "port http 80/TCP -> targetPort http"))


def test_text_shows_each_verdict_with_its_evidence_and_next_step():
    assert render_text(report()) == """\
Service default/web: type ClusterIP, ClusterIP 10.96.0.50
  port http 80/TCP -> targetPort http
traffic from pod default/client

 1  PASS  service    the Service exists                   0.01s
    Service default/web
 2  FAIL  selector   its selector matches pods            0.02s
    selector app=webb matches no pod
    near miss: web-a: app=web
    next: fix the selector
 3  SKIP  endpoints  EndpointSlices list ready endpoints  (skipped: selector failed)
 4  SKIP  node-port  the NodePort answers                 0.00s
    not applicable: no NodePort

1 passed, 1 failed, 2 skipped in 1.2s; first failure: selector"""


def test_color_marks_the_verdicts_only():
    text = render_text(report(), color=True)
    assert "\x1b[32mPASS" in text and "\x1b[31m\x1b[1mFAIL" in text
    assert "\x1b" not in render_text(report())


def test_json_carries_every_step_and_the_first_failure():
    data = json.loads(render_json(report()))
    assert data["ok"] is False and data["first_failure"] == "selector"
    assert data["counts"] == {"passed": 1, "failed": 1, "skipped": 2}
    assert data["steps"][2] == {"name": "endpoints", "title": "EndpointSlices list ready "
                                "endpoints", "status": "skipped", "evidence": [],
                                "hint": "fix selector first", "blocked_by": "selector",
                                "seconds": 0.0}
