"""The ReplicaSet controller keeps the pod count right and picks the right pods to delete."""

from __future__ import annotations

import re

import pytest

from netlab.control import replicasets
from netlab.control.meta import SAFE_ALPHABET
from netlab.control.pods import request_pod_deletion
from netlab.control.view import Writer
from tests.unit.control_objects import node, open_objects, pod, stored_view


def replicaset(name: str = "web-7c9d8b5f4d", replicas: int = 3) -> dict:
    labels = {"app": "web", "pod-template-hash": name.rsplit("-", 1)[1]}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-rs-{name}",
                         "generation": 2, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "netexec"}]}}}}


RS = replicaset()


def test_missing_pods_are_created_from_the_template_with_generated_names_and_owner():
    result = replicasets.plan(RS, [], set())
    assert len(result.create) == 3
    created = result.create[0]
    assert re.fullmatch(f"web-7c9d8b5f4d-[{SAFE_ALPHABET}]{{5}}", created["metadata"]["name"])
    assert created["metadata"]["generateName"] == "web-7c9d8b5f4d-"
    assert created["metadata"]["labels"] == {"app": "web", "pod-template-hash": "7c9d8b5f4d"}
    owner = created["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ReplicaSet", "web-7c9d8b5f4d", "uid-rs-web-7c9d8b5f4d", True)
    assert created["spec"] == RS["spec"]["template"]["spec"]
    assert len({p["metadata"]["name"] for p in result.create}) == 3


def test_generated_names_avoid_names_already_taken():
    taken = set()
    replicasets.plan(replicaset(replicas=50), [], taken)
    assert len(taken) == 50


def test_terminating_pods_do_not_count_and_are_replaced():
    pods = [pod("a", owner=RS, node="w1", ip="10.244.1.2", ready=True),
            pod("b", owner=RS, node="w1", ip="10.244.1.3", ready=True),
            pod("c", owner=RS, node="w2", ip="10.244.2.2", deleting=True)]
    result = replicasets.plan(RS, pods, set())
    assert len(result.create) == 1 and not result.delete


def test_scale_down_deletes_unscheduled_then_pending_then_unready_then_newest():
    pods = [pod("ready-old", owner=RS, node="w1", ip="10.244.1.2", ready=True,
                created="2024-01-01T00:00:00Z"),
            pod("ready-new", owner=RS, node="w2", ip="10.244.2.2", ready=True,
                created="2024-01-01T00:05:00Z"),
            pod("running-unready", owner=RS, node="w2", ip="10.244.2.3"),
            pod("pending", owner=RS, node="w1"),
            pod("unscheduled", owner=RS)]
    order = [p["metadata"]["name"] for p in replicasets.deletion_order(pods)]
    assert order == ["unscheduled", "pending", "running-unready", "ready-new", "ready-old"]


def test_scale_down_prefers_pods_on_crowded_nodes():
    pods = [pod("alone", owner=RS, node="w1", ip="10.244.1.2", ready=True),
            pod("crowd-1", owner=RS, node="w2", ip="10.244.2.2", ready=True),
            pod("crowd-2", owner=RS, node="w2", ip="10.244.2.3", ready=True)]
    victim = replicasets.plan(replicaset(replicas=2), pods, set()).delete
    assert victim[0]["spec"]["nodeName"] == "w2"


def test_status_counts_active_and_ready_pods_and_omits_zeros_like_the_api():
    labels = RS["spec"]["template"]["metadata"]["labels"]
    pods = [pod("a", owner=RS, labels=labels, node="w1", ip="10.244.1.2", ready=True),
            pod("b", owner=RS, labels=labels, node="w1", ip="10.244.1.3"),
            pod("c", owner=RS, labels=labels, node="w2", ip="10.244.2.2", ready=True),
            pod("d", owner=RS, labels=labels, node="w2", ip="10.244.2.3", deleting=True)]
    assert replicasets.plan(RS, pods, set()).replicaset["status"] == {
        "replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2, "availableReplicas": 2,
        "observedGeneration": 2}
    assert replicasets.replicaset_status(RS, []) == {"replicas": 0, "observedGeneration": 2}


def test_a_settled_replicaset_needs_no_write():
    labels = RS["spec"]["template"]["metadata"]["labels"]
    pods = [pod(n, owner=RS, labels=labels, node="w1", ip=f"10.244.1.{i}", ready=True)
            for i, n in enumerate("abc", 2)]
    settled = {**RS, "status": replicasets.replicaset_status(RS, pods)}
    assert replicasets.plan(settled, pods, set()).replicaset is None


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_scale_down_marks_bound_pods_terminating_and_removes_unbound_ones(objects):
    objects.create_many([node("w1"), replicaset(replicas=1)])
    rs = objects.get("ReplicaSet", "default", RS["metadata"]["name"])
    objects.create_many([pod("bound", owner=rs, node="w1", ip="10.244.1.2", ready=True),
                         pod("unbound", owner=rs), pod("bound-2", owner=rs, node="w1")])
    replicasets.sync(Writer(objects), stored_view(objects))
    assert objects.get("Pod", "default", "unbound") is None
    assert objects.get("Pod", "default", "bound-2")["metadata"]["deletionTimestamp"]
    kept = objects.get("Pod", "default", "bound")
    assert "deletionTimestamp" not in kept["metadata"]


def test_a_pass_on_a_stale_view_does_not_create_pods_twice(objects):
    objects.create(replicaset(replicas=3))
    stale = stored_view(objects)
    replicasets.sync(Writer(objects), stale)
    writer = Writer(objects)
    replicasets.sync(writer, stale)
    assert writer.conflicts == 1
    assert len(objects.list("Pod")[0]) == 3


def test_deleting_a_bound_pod_is_graceful_and_an_unbound_one_immediate(objects):
    objects.create_many([node("w1"), pod("bound", node="w1", terminationGracePeriodSeconds=5),
                         pod("unbound"), pod("orphaned", node="gone")])
    assert request_pod_deletion(objects, "default", "bound")
    marked = objects.get("Pod", "default", "bound")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 5
    assert request_pod_deletion(objects, "default", "unbound")
    assert objects.get("Pod", "default", "unbound") is None
    assert request_pod_deletion(objects, "default", "orphaned")
    assert objects.get("Pod", "default", "orphaned") is None
    assert not request_pod_deletion(objects, "default", "never-was")
    assert request_pod_deletion(objects, "default", "bound", force=True)
    assert objects.get("Pod", "default", "bound") is None
