"""What `up` and RunningLab.wait_ready wait for: every pod asked for exists and is Ready."""

from __future__ import annotations

from typing import Any

from netlab.lab.lifecycle import PodCounts
from netlab.store.objects import ObjectEvent


def _pod(name: str, *, ready: bool, owned: bool = True, deleting: bool = False
         ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owned:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-1"}]
    if deleting:
        meta["deletionTimestamp"] = "2026-11-24T00:00:00Z"
    return {"kind": "Pod", "metadata": meta,
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def _deployment(replicas: int, generation: int = 1, observed: int | None = 1,
                updated: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if observed is not None:
        status["observedGeneration"] = observed
    if updated is not None:
        status["updatedReplicas"] = updated
    return {"kind": "Deployment", "metadata": {"name": "web", "namespace": "default",
                                               "generation": generation},
            "spec": {"replicas": replicas}, "status": status}


def _counts(*objs: dict[str, Any], then: tuple[tuple[str, dict[str, Any]], ...] = ()
            ) -> tuple[int, int, int, bool]:
    counts = PodCounts(objects=None)  # type: ignore[arg-type]  # the informer never runs
    counts._count([ObjectEvent("ADDED", o["kind"], o, 1) for o in objs])
    for rev, (kind_of_event, obj) in enumerate(then, start=2):
        counts._count([ObjectEvent(kind_of_event, obj["kind"], obj, rev)])
    assert counts.changed.is_set()
    assert counts.counts is not None
    return counts.counts


def test_a_rolled_out_deployment_with_every_pod_ready_is_done():
    assert _counts(_deployment(2, updated=2), _pod("a", ready=True),
                   _pod("b", ready=True)) == (2, 2, 2, True)


def test_pods_not_yet_created_or_not_ready_keep_it_waiting():
    assert _counts(_deployment(3, updated=3), _pod("a", ready=True),
                   _pod("b", ready=False)) == (1, 3, 2, True)


def test_bare_pods_are_expected_and_terminating_pods_are_not_ready():
    assert _counts(_pod("bare", ready=True, owned=False),
                   _pod("old", ready=True, deleting=True)) == (1, 1, 2, True)


def test_a_spec_the_controller_has_not_acted_on_is_not_rolled_out():
    """Right after an apply that changes the template, the old pods are all Ready."""
    old = [_pod("a", ready=True), _pod("b", ready=True)]
    assert _counts(_deployment(2, generation=2, observed=1, updated=2), *old)[3] is False
    assert _counts(_deployment(2, generation=2, observed=2, updated=0), *old)[3] is False
    assert _counts(_deployment(2, generation=2, observed=2, updated=2), *old)[3] is True


def test_deleted_objects_leave_the_counts():
    pod = _pod("a", ready=True)
    assert _counts(_deployment(1, updated=1), pod, _pod("b", ready=False, owned=False),
                   then=(("DELETED", _pod("b", ready=False, owned=False)),
                         ("DELETED", _deployment(1, updated=1)))) == (1, 0, 1, True)
