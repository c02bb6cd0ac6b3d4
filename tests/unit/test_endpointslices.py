"""EndpointSlices and Endpoints come out as kube-controller-manager writes them."""

from __future__ import annotations

import re

import pytest

from netlab.control import apiserver, endpointslices
from netlab.control.endpointslices import (
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    desired_groups,
    endpoints_object,
    plan_slices,
)
from netlab.control.meta import SAFE_ALPHABET
from netlab.control.view import Writer
from tests.unit.control_objects import node, open_objects, pod, service, stored_view

WEB = service("web", selector={"app": "web"}, labels={"team": "blue"},
              ports=[{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
NODES = {"w1": node("w1", labels={"topology.kubernetes.io/zone": "zone-a"}),
         "w2": node("w2", "192.168.10.4")}
HTTP = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def web_pod(name: str, ip: str, **kw: object) -> dict:
    kw.setdefault("ports", HTTP)
    kw.setdefault("node", "w1")
    return pod(name, labels={"app": "web"}, ip=ip, **kw)


def slices_for(svc: dict, pods: list[dict], existing: list[dict] | None = None):
    selected = endpointslices.selected_pods(svc, pods)
    return plan_slices(svc, existing or [], desired_groups(svc, selected, NODES))


def test_a_slice_carries_the_labels_owner_ports_and_endpoint_fields_of_the_real_one():
    result = slices_for(WEB, [web_pod("web-1", "10.244.1.2", ready=True)])
    [eps] = result.create
    assert re.fullmatch(f"web-[{SAFE_ALPHABET}]{{5}}", eps["metadata"]["name"])
    assert eps["metadata"]["generateName"] == "web-"
    assert eps["metadata"]["labels"] == {
        "team": "blue", SERVICE_NAME_LABEL: "web",
        MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    assert eps["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert eps["addressType"] == "IPv4"
    assert eps["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert eps["endpoints"] == [{
        "addresses": ["10.244.1.2"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1",
                      "uid": "uid-pod-web-1"},
        "nodeName": "w1", "zone": "zone-a"}]


def test_unready_and_terminating_pods_are_endpoints_with_the_matching_conditions():
    pods = [web_pod("starting", "10.244.1.2"),
            web_pod("leaving", "10.244.1.3", ready=True, deleting=True)]
    [eps] = slices_for(WEB, pods).create
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in eps["endpoints"]}
    assert conditions == {
        "starting": {"ready": False, "serving": False, "terminating": False},
        "leaving": {"ready": False, "serving": True, "terminating": True}}


def test_publish_not_ready_addresses_makes_every_endpoint_ready():
    svc = {**WEB, "spec": {**WEB["spec"], "publishNotReadyAddresses": True}}
    [eps] = slices_for(svc, [web_pod("starting", "10.244.1.2")]).create
    assert eps["endpoints"][0]["conditions"]["ready"] is True


def test_pods_without_an_address_or_not_selected_are_left_out():
    pods = [web_pod("no-ip", ""), pod("other", labels={"app": "db"}, ip="10.244.1.9"),
            web_pod("done", "10.244.1.5", phase="Succeeded"), web_pod("ok", "10.244.1.2")]
    [eps] = slices_for(WEB, pods).create
    assert [e["targetRef"]["name"] for e in eps["endpoints"]] == ["ok"]


def test_a_named_target_port_resolves_per_pod_and_splits_slices_by_port_set():
    pods = [web_pod("v1", "10.244.1.2"),
            web_pod("v2", "10.244.1.3", ports=[{"name": "http", "containerPort": 9090}]),
            web_pod("bare", "10.244.1.4", ports=[{"name": "metrics", "containerPort": 9100}])]
    created = slices_for(WEB, pods).create
    by_ports = {tuple(p["port"] for p in s["ports"]): [e["targetRef"]["name"]
                                                      for e in s["endpoints"]]
                for s in created}
    assert by_ports == {(8080,): ["v1"], (9090,): ["v2"], (): ["bare"]}


def test_a_named_port_must_match_the_protocol_too():
    udp = service("dns", selector={"app": "web"},
                  ports=[{"name": "dns", "port": 53, "targetPort": "http", "protocol": "UDP"}])
    [eps] = slices_for(udp, [web_pod("tcp-only", "10.244.1.2")]).create
    assert eps["ports"] == []


def test_more_than_100_endpoints_are_split_over_slices():
    pods = [web_pod(f"web-{i:03}", f"10.244.{i // 200}.{i % 200 + 2}") for i in range(250)]
    sizes = sorted(len(s["endpoints"]) for s in slices_for(WEB, pods).create)
    assert sizes == [50, 100, 100]


def test_nothing_is_written_when_nothing_changed():
    pods = [web_pod("web-1", "10.244.1.2", ready=True)]
    existing = slices_for(WEB, pods).create
    again = slices_for(WEB, pods, existing)
    assert (again.create, again.update, again.delete) == ([], [], [])


def test_a_changed_endpoint_updates_only_the_slice_it_is_in():
    pods = [web_pod(f"web-{i:03}", f"10.244.1.{i + 2}") for i in range(150)]
    existing = slices_for(WEB, pods).create
    pods[0] = web_pod("web-000", "10.244.1.2", ready=True)
    result = slices_for(WEB, pods, existing)
    assert not result.create and not result.delete and len(result.update) == 1
    updated = result.update[0]
    holder = next(s for s in existing if s["metadata"]["name"] == updated["metadata"]["name"])
    assert [e["targetRef"]["name"] for e in updated["endpoints"]] == [
        e["targetRef"]["name"] for e in holder["endpoints"]]


def test_new_endpoints_fill_existing_slices_before_new_ones_are_made():
    existing = slices_for(WEB, [web_pod("a", "10.244.1.2")]).create
    result = slices_for(WEB, [web_pod("a", "10.244.1.2"), web_pod("b", "10.244.1.3")], existing)
    assert not result.create and len(result.update) == 1
    assert len(result.update[0]["endpoints"]) == 2


def test_a_service_that_selects_nothing_gets_one_placeholder_slice():
    existing = slices_for(WEB, [web_pod("a", "10.244.1.2")]).create
    result = slices_for(WEB, [], existing)
    assert len(result.delete) == 1 and len(result.create) == 1
    assert result.create[0]["endpoints"] == [] and result.create[0]["ports"] == []
    settled = slices_for(WEB, [], result.create)
    assert (settled.create, settled.update, settled.delete) == ([], [], [])


def test_endpoints_object_lists_ready_and_not_ready_addresses_without_terminating_pods():
    pods = [web_pod("up", "10.244.1.3", ready=True), web_pod("starting", "10.244.1.2"),
            web_pod("leaving", "10.244.1.4", ready=True, deleting=True)]
    obj = endpoints_object(WEB, endpointslices.selected_pods(WEB, pods))
    assert obj["metadata"] == {"name": "web", "namespace": "default", "labels": {
        "team": "blue", "endpointslice.kubernetes.io/skip-mirror": "true"}}
    [subset] = obj["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.244.1.3"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.1.2"]
    assert subset["addresses"][0]["targetRef"]["name"] == "up"
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_endpoints_object_has_no_subsets_without_pods():
    assert "subsets" not in endpoints_object(WEB, [])


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_sync_writes_slices_and_endpoints_then_nothing_more(objects):
    objects.create_many([WEB, NODES["w1"], web_pod("web-1", "10.244.1.2", ready=True)])
    endpointslices.sync(Writer(objects), stored_view(objects))
    [eps], _ = objects.list("EndpointSlice")
    assert eps["endpoints"][0]["addresses"] == ["10.244.1.2"]
    assert objects.get("Endpoints", "default", "web")["subsets"][0]["addresses"][0]["ip"] \
        == "10.244.1.2"
    writer = Writer(objects)
    endpointslices.sync(writer, stored_view(objects))
    assert writer.revision == 0


def test_a_stale_pass_does_not_create_slices_twice(objects):
    objects.create_many([WEB, web_pod("web-1", "10.244.1.2")])
    stale = stored_view(objects)
    endpointslices.sync(Writer(objects), stale)
    assert endpointslices.sync(Writer(objects), stale) == {("default", "web")}
    assert len(objects.list("EndpointSlice")[0]) == 1


def test_services_without_a_selector_keep_the_users_slices(objects):
    manual = service("external-db", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}])
    user_slice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "external-db-1", "namespace": "default",
                               "labels": {SERVICE_NAME_LABEL: "external-db"}},
                  "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432}],
                  "endpoints": [{"addresses": ["192.168.10.50"]}]}
    objects.create_many([manual, user_slice])
    endpointslices.sync(Writer(objects), stored_view(objects))
    assert objects.get("EndpointSlice", "default", "external-db-1") is not None
    assert objects.get("Endpoints", "default", "external-db") is None


def test_a_deleted_service_loses_its_slices_and_endpoints(objects):
    objects.create_many([WEB, web_pod("web-1", "10.244.1.2")])
    endpointslices.sync(Writer(objects), stored_view(objects))
    objects.delete("Service", "default", "web")
    endpointslices.sync(Writer(objects), stored_view(objects))
    assert objects.list("EndpointSlice")[0] == []
    assert objects.get("Endpoints", "default", "web") is None


def test_kubernetes_service_endpoints_follow_the_control_plane_nodes(objects):
    kubernetes = service("kubernetes", ports=[{"name": "https", "port": 443,
                                               "targetPort": 6443, "protocol": "TCP"}])
    objects.create_many([kubernetes, node("cp", "192.168.10.2", control_plane=True),
                         node("w1")])
    apiserver.sync(Writer(objects), stored_view(objects))
    eps = objects.get("EndpointSlice", "default", "kubernetes")
    assert eps["metadata"]["labels"] == {SERVICE_NAME_LABEL: "kubernetes"}
    assert eps["endpoints"] == [{"addresses": ["192.168.10.2"], "conditions": {"ready": True}}]
    assert eps["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
    assert objects.get("Endpoints", "default", "kubernetes")["subsets"] == [
        {"addresses": [{"ip": "192.168.10.2"}],
         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
    writer = Writer(objects)
    apiserver.sync(writer, stored_view(objects))
    endpointslices.sync(writer, stored_view(objects))
    assert writer.revision == 0
