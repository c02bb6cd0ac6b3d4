"""The scheduler binds pending pods where kube-scheduler would, and says why when it cannot."""

from __future__ import annotations

from collections import Counter

import pytest

from netlab.control import scheduler
from netlab.control.view import Writer
from tests.unit.control_objects import deployment, node, open_objects, pod, stored_view

CP = node("cp", "192.168.10.2", control_plane=True)
W1 = node("w1", "192.168.10.3")
W2 = node("w2", "192.168.10.4")
RS = {**deployment("web"), "kind": "ReplicaSet",
      "metadata": {"name": "web-abc", "uid": "uid-rs-web"}}


def placements(decisions):
    return Counter(d.node for d in decisions)


def test_replicas_spread_evenly_over_workers_and_never_onto_the_tainted_control_plane():
    pods = [pod(f"web-{i}", owner=RS) for i in range(6)]
    decisions = scheduler.schedule(pods, [CP, W1, W2], [])
    assert placements(decisions) == {"w1": 3, "w2": 3}


def test_spreading_counts_pods_already_running():
    running = [pod(f"old-{i}", node="w1") for i in range(4)]
    decisions = scheduler.schedule([pod("new-1"), pod("new-2")], [W1, W2], running)
    assert placements(decisions) == {"w2": 2}


def test_replicas_of_one_owner_spread_even_when_other_pods_unbalance_the_nodes():
    others = [pod(f"other-{i}", node="w1") for i in range(5)]
    mine = [pod(f"web-{i}", owner=RS) for i in range(2)]
    decisions = scheduler.schedule(mine, [W1, W2], others)
    assert placements(decisions) == {"w1": 1, "w2": 1}


def test_a_toleration_lets_a_pod_onto_the_control_plane():
    tolerant = pod("dns", tolerations=[{"key": "node-role.kubernetes.io/control-plane",
                                        "operator": "Exists", "effect": "NoSchedule"}])
    decisions = scheduler.schedule([tolerant], [CP], [])
    assert decisions[0].node == "cp"


def test_node_selector_limits_the_candidates():
    picky = pod("picky", nodeSelector={"kubernetes.io/hostname": "w2"})
    assert scheduler.schedule([picky], [W1, W2], [])[0].node == "w2"


def test_unschedulable_pod_gets_kube_schedulers_message():
    picky = pod("picky", nodeSelector={"disk": "ssd"})
    decision = scheduler.schedule([picky], [CP, W1, W2], [])[0]
    assert decision.node is None
    assert decision.message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }, 2 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not "
        "helpful for scheduling.")


def test_nodes_not_ready_or_without_a_pod_subnet_carry_the_not_ready_taint():
    not_ready = node("w1", ready=False)
    no_subnet = node("w2", pod_cidr=None)
    decision = scheduler.schedule([pod("p")], [not_ready, no_subnet], [])[0]
    assert decision.message.startswith(
        "0/2 nodes are available: 2 node(s) had untolerated taint "
        "{node.kubernetes.io/not-ready: }.")


def test_a_cordoned_node_is_unschedulable():
    cordoned = node("w1", unschedulable=True)
    decision = scheduler.schedule([pod("p")], [cordoned], [])[0]
    assert "1 node(s) were unschedulable" in decision.message


def test_no_nodes_at_all():
    assert scheduler.schedule([pod("p")], [], [])[0].message == \
        "no nodes available to schedule pods"


def test_toleration_matching_follows_the_api_rules():
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert scheduler.tolerates({"key": "k", "operator": "Equal", "value": "v"}, taint)
    assert not scheduler.tolerates({"key": "k", "value": "other"}, taint)
    assert scheduler.tolerates({"operator": "Exists"}, taint)
    assert not scheduler.tolerates({"key": "k", "operator": "Exists", "effect": "NoExecute"},
                                   taint)


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_sync_binds_a_burst_of_300_pods_in_one_commit(objects):
    objects.create_many([CP, W1, W2])
    objects.create_many([pod(f"web-{i:03}", owner=RS) for i in range(300)])
    commits = []
    writer = Writer(objects)
    transact = objects.transact
    objects.transact = lambda **kw: commits.append(kw) or transact(**kw)  # type: ignore
    scheduler.sync(writer, stored_view(objects))
    assert len(commits) == 1
    pods, _ = objects.list("Pod")
    assert Counter(p["spec"]["nodeName"] for p in pods) == {"w1": 150, "w2": 150}
    condition = pods[0]["status"]["conditions"][0]
    assert (condition["type"], condition["status"]) == ("PodScheduled", "True")


def test_sync_marks_unschedulable_pods_once(objects):
    objects.create_many([CP, pod("stuck")])
    scheduler.sync(Writer(objects), stored_view(objects))
    stuck = objects.get("Pod", "default", "stuck")
    condition = stuck["status"]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "Unschedulable")
    assert condition["message"].startswith("0/1 nodes are available: 1 node(s) had "
                                           "untolerated taint")
    writer = Writer(objects)
    scheduler.sync(writer, stored_view(objects))
    assert writer.revision == 0  # nothing rewritten


def test_pods_for_another_scheduler_are_left_pending(objects):
    objects.create_many([W1, pod("custom", schedulerName="my-scheduler")])
    scheduler.sync(Writer(objects), stored_view(objects))
    assert not objects.get("Pod", "default", "custom")["spec"].get("nodeName")
