"""Node IPAM hands each node its own pod subnet, as kube-controller-manager does."""

from __future__ import annotations

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.control import nodeipam
from netlab.control.view import Writer
from tests.unit.control_objects import node, open_objects, stored_view

POD_CIDR = "10.244.0.0/16"


def test_control_plane_gets_first_block_then_workers_in_registration_order():
    nodes = [node("worker-b", pod_cidr=None, created="2024-01-01T00:00:02Z"),
             node("worker-a", pod_cidr=None, created="2024-01-01T00:00:03Z"),
             node("cp", control_plane=True, pod_cidr=None, created="2024-01-01T00:00:05Z")]
    assert nodeipam.plan_pod_cidrs(nodes, POD_CIDR, 24) == {
        "cp": "10.244.0.0/24", "worker-b": "10.244.1.0/24", "worker-a": "10.244.2.0/24"}


def test_nodes_registered_in_the_same_second_are_ordered_by_name():
    nodes = [node(n, pod_cidr=None) for n in ("w2", "w1", "w3")]
    assert list(nodeipam.plan_pod_cidrs(nodes, POD_CIDR, 24).items()) == [
        ("w1", "10.244.0.0/24"), ("w2", "10.244.1.0/24"), ("w3", "10.244.2.0/24")]


def test_blocks_nodes_already_hold_are_kept_and_skipped():
    nodes = [node("cp", pod_cidr="10.244.0.0/24"), node("w1", pod_cidr="10.244.2.0/24"),
             node("w2", pod_cidr=None)]
    assert nodeipam.plan_pod_cidrs(nodes, POD_CIDR, 24) == {"w2": "10.244.1.0/24"}


def test_a_deleted_nodes_block_is_free_again():
    remaining = [node("cp", pod_cidr="10.244.0.0/24"), node("w2", pod_cidr="10.244.2.0/24")]
    newcomer = node("w3", pod_cidr=None)
    assert nodeipam.plan_pod_cidrs([*remaining, newcomer], POD_CIDR, 24) == {
        "w3": "10.244.1.0/24"}


def test_an_odd_sized_cidr_blocks_every_block_it_overlaps():
    nodes = [node("big", pod_cidr="10.244.0.0/23"), node("new", pod_cidr=None)]
    assert nodeipam.plan_pod_cidrs(nodes, POD_CIDR, 24) == {"new": "10.244.2.0/24"}


def test_exhausted_pod_network_leaves_the_node_without_a_block():
    nodes = [node(n, pod_cidr=None) for n in ("a", "b", "c")]
    assert nodeipam.plan_pod_cidrs(nodes, "10.244.0.0/23", 24) == {
        "a": "10.244.0.0/24", "b": "10.244.1.0/24", "c": None}


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_sync_writes_pod_cidr_and_pod_cidrs(objects):
    objects.create_many([node("cp", "192.168.10.2", control_plane=True, pod_cidr=None),
                         node("w1", pod_cidr=None)])
    nodeipam.sync(Writer(objects), stored_view(objects), ClusterConfig())
    cp = objects.get("Node", None, "cp")
    assert cp["spec"]["podCIDR"] == "10.244.0.0/24"
    assert cp["spec"]["podCIDRs"] == ["10.244.0.0/24"]
    assert objects.get("Node", None, "w1")["spec"]["podCIDR"] == "10.244.1.0/24"


def test_a_pass_on_a_stale_view_cannot_give_a_block_twice(objects):
    objects.create(node("w1", pod_cidr=None))
    stale = stored_view(objects)
    nodeipam.sync(Writer(objects), stale, ClusterConfig())
    objects.create(node("w2", pod_cidr=None))
    late = stored_view(objects)
    late.nodes["w1"] = stale.nodes["w1"]  # the view has not caught up with w1's block yet
    writer = Writer(objects)
    nodeipam.sync(writer, late, ClusterConfig())
    assert writer.conflicts == 1
    assert objects.get("Node", None, "w2")["spec"].get("podCIDR") is None
    nodeipam.sync(Writer(objects), stored_view(objects), ClusterConfig())
    assert objects.get("Node", None, "w2")["spec"]["podCIDR"] == "10.244.1.0/24"
