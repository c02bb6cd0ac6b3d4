"""Garbage collection follows ownerReferences, and podgc clears pods of vanished nodes."""

from __future__ import annotations

import pytest

from netlab.control.gc import ORPHAN_NODE_QUARANTINE, GarbageCollector, orphans
from netlab.control.view import View, Writer
from tests.unit.control_objects import deployment, node, open_objects, pod, stored_view


def replicaset(owner: dict | None, name: str = "web-abc") -> dict:
    meta: dict = {"name": name, "namespace": "default", "uid": f"uid-rs-{name}"}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": {"replicas": 1}}


def test_orphans_are_dependents_whose_owner_is_not_in_the_view():
    deploy = deployment("web")
    kept_rs, lost_rs = replicaset(deploy), replicaset(deployment("gone"), "gone-abc")
    vanished_rs = replicaset(None, "vanished")
    pods = [pod("kept", owner=kept_rs), pod("lost", owner=vanished_rs), pod("bare"),
            pod("leaving", owner=vanished_rs, deleting=True)]
    lost_replicasets, lost_pods = orphans(View.of([deploy, kept_rs, lost_rs, *pods]))
    assert lost_replicasets == [lost_rs]
    assert [p["metadata"]["name"] for p in lost_pods] == ["lost"]


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_deleting_a_deployment_deletes_its_replicasets_then_their_pods(objects):
    objects.create_many([node("w1"), deployment("web")])
    deploy = objects.get("Deployment", "default", "web")
    objects.create(replicaset(deploy))
    rs = objects.get("ReplicaSet", "default", "web-abc")
    objects.create_many([pod("on-node", owner=rs, node="w1", ip="10.244.1.2"),
                         pod("pending", owner=rs)])
    objects.delete("Deployment", "default", "web")
    gc = GarbageCollector(objects)
    gc.sync(Writer(objects), stored_view(objects))
    assert objects.get("ReplicaSet", "default", "web-abc") is None
    gc.sync(Writer(objects), stored_view(objects))
    assert objects.get("Pod", "default", "pending") is None
    assert objects.get("Pod", "default", "on-node")["metadata"]["deletionTimestamp"]


def test_a_stale_view_without_the_owner_deletes_nothing(objects):
    deploy = objects.create(deployment("web"))
    objects.create(replicaset(deploy))
    view = stored_view(objects)
    del view.deployments["default", "web"]  # the view has not caught up with the owner
    GarbageCollector(objects).sync(Writer(objects), view)
    assert objects.get("ReplicaSet", "default", "web-abc") is not None


def test_pods_of_a_vanished_node_go_after_the_quarantine(objects):
    now = [1000.0]
    gc = GarbageCollector(objects, clock=lambda: now[0])
    objects.create_many([pod("stranded", node="gone", ip="10.244.3.2"),
                         pod("leaving", node="gone", ip="10.244.3.3", deleting=True)])
    gc.sync(Writer(objects), stored_view(objects))
    assert objects.get("Pod", "default", "leaving") is None  # nobody will finish it
    assert objects.get("Pod", "default", "stranded") is not None
    now[0] += ORPHAN_NODE_QUARANTINE
    gc.sync(Writer(objects), stored_view(objects))
    assert objects.get("Pod", "default", "stranded") is None
