"""A field-selected informer (kubelet's pods of one node) reports what a selected watch does.

The agent watches only the pods bound to its node (spec.nodeName), so that a node
does not decode every pod of the cluster. The informer must then report a pod as
ADDED when it starts matching (the scheduler binds it), MODIFIED while it matches,
and DELETED when it stops matching or goes, and never report other nodes' pods.
The store's "member" hint only narrows what is decoded: the informer still checks.
"""

from __future__ import annotations

import time

from netlab.store import open_store
from netlab.store.base import Event
from netlab.store.informer import Informer
from netlab.store.objects import FieldSelector, Objects

NODE = FieldSelector("spec.nodeName", "worker-1")


def _pod(name: str, node: str | None = None, **meta: object) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "netexec"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", **meta}, "spec": spec}


def _bind(objects: Objects, name: str, node: str) -> None:
    objects.mutate("Pod", "default", name,
                   lambda pod: {**pod, "spec": {**pod["spec"], "nodeName": node}})


def test_selector_matches_the_field_at_its_path_only():
    assert NODE.matches(_pod("a", "worker-1"))
    assert not NODE.matches(_pod("a", "worker-2"))
    assert not NODE.matches(_pod("a"))
    assert not NODE.matches({"spec": "not an object"})
    assert NODE.member == ("nodeName", "worker-1")


def test_list_with_a_selector_leaves_out_what_only_looks_like_a_match(tmp_path):
    objects = Objects(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create(_pod("mine", "worker-1"))
    objects.create(_pod("other", "worker-2"))
    # The member text occurs in this pod, but not at spec.nodeName: the hint lets it
    # through, the selector must not.
    objects.create(_pod("decoy", "worker-2", annotations={"nodeName": "worker-1"}))
    items, _ = objects.list("Pod", fields=NODE)
    assert [p["metadata"]["name"] for p in items] == ["mine"]


def test_previous_value_of_an_event_is_decoded_on_demand():
    event = Event("PUT", "/registry/pods/default/a", 7, {"a": 1}, '{"a":0}')
    assert event.prev_value == {"a": 0}
    assert Event("PUT", "/registry/pods/default/a", 7, {"a": 1}, None).prev_value is None


def _wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_informer_reports_pods_as_they_start_and_stop_matching(tmp_path):
    objects = Objects(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create(_pod("early", "worker-1"))
    objects.create(_pod("elsewhere", "worker-2"))
    seen: list[tuple[str, str]] = []
    informer = Informer(objects, ["Pod"], lambda batch: seen.extend(
        (e.type, e.obj["metadata"]["name"]) for e in batch), poll_timeout=0.05,
        fields=NODE)
    informer.start()
    try:
        assert informer.synced.wait(5)
        assert [p["metadata"]["name"] for p in informer.items("Pod")] == ["early"]

        objects.create(_pod("late"))  # not scheduled yet: not this node's
        _bind(objects, "late", "worker-1")  # the scheduler binds it here
        objects.mutate("Pod", "default", "late",
                       lambda pod: {**pod, "status": {"phase": "Running"}})
        _bind(objects, "early", "worker-2")  # moved away (as a re-created binding would)
        objects.delete("Pod", "default", "elsewhere")  # never this node's
        objects.delete("Pod", "default", "late")
        _wait_for(lambda: ("DELETED", "late") in seen, "late deleted")

        assert seen == [("ADDED", "early"),  # the initial list
                        ("ADDED", "late"), ("MODIFIED", "late"), ("DELETED", "early"),
                        ("DELETED", "late")]
        assert informer.items("Pod") == []
    finally:
        informer.stop()
