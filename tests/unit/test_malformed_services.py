"""A Service written straight into the store, past validation, must not stop anything.

Found by tests/integration/test_services.py: `status.loadBalancer: null` killed the
proxy's informer thread (the node stopped syncing for good), a Service without a
uid or with `ports: "eighty"` aborted the EndpointSlice pass for every Service
after it, and `spec: "nothing"` crashed the control plane's allocation repair.
"""

from __future__ import annotations

import copy

import pytest

from netlab.control import endpointslices
from netlab.control.servicealloc import allocated_values
from netlab.control.view import Writer
from netlab.proxy.changes import ChangeTracker
from netlab.proxy.model import ServicePortName
from tests.unit.control_objects import open_objects, pod, service, stored_view
from tests.unit.proxy_objects import endpoint, endpoint_slice, port
from tests.unit.proxy_objects import service as proxy_service

GOOD = proxy_service("ns", "good", "10.96.0.20", [port("http", 80, 8080)])
MALFORMED_SERVICES = {
    "null load balancer status": {"status": {"loadBalancer": None}},
    "status is a list": {"status": []},
    "affinity config is a list": {"spec": {"sessionAffinity": "ClientIP",
                                           "sessionAffinityConfig": []}},
    "client IP config is a list": {"spec": {"sessionAffinity": "ClientIP",
                                            "sessionAffinityConfig": {"clientIP": []}}},
    "annotations are a string": {"metadata": {"annotations": "x"}},
    "ports are a string": {"spec": {"ports": "eighty"}},
    "spec is a string": {"spec": "nothing"},
    "NUL in an external IP": {"spec": {"externalIPs": ["1.2.3.4\x00"]}},
    "object is a list": None,
}


def broken(changes: dict | None) -> dict | list:
    if changes is None:
        return ["not", "an", "object"]
    obj = copy.deepcopy(proxy_service("ns", "bad", "10.96.0.21", [port("http", 80, 8080)]))
    for field, value in changes.items():
        if isinstance(value, dict) and isinstance(obj.get(field), dict):
            obj[field].update(value)
        else:
            obj[field] = value
    return obj


@pytest.mark.parametrize("case", MALFORMED_SERVICES)
def test_proxy_change_tracker_skips_a_malformed_service_and_keeps_the_rest(case):
    tracker = ChangeTracker("w1")
    tracker.update("Service", "ADDED", GOOD)
    tracker.update("Service", "ADDED", broken(MALFORMED_SERVICES[case]))
    snapshot = tracker.snapshot()  # no exception: the bad one is used as far as it is
    assert ServicePortName("ns", "good", "http", "TCP") in snapshot.services  # readable


def test_proxy_change_tracker_skips_malformed_endpoint_slices():
    tracker = ChangeTracker("w1")
    tracker.update("Service", "ADDED", GOOD)
    good = endpoint_slice("ns", "good", [endpoint("10.244.1.2")], [("http", 8080, "TCP")],
                          name="good-1")
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "good-2"
    bad["endpoints"] = [{"addresses": ["10.244.1.3"], "conditions": ["ready"]},
                        {"addresses": ["10.244.1.4"], "hints": {"forZones": [{"name": []}]}}]
    tracker.update("EndpointSlice", "ADDED", good)
    tracker.update("EndpointSlice", "ADDED", bad)
    eps = tracker.snapshot().endpoints[ServicePortName("ns", "good", "http", "TCP")]
    assert [e.ip for e in eps] == ["10.244.1.2"]


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_endpointslice_controller_carries_on_past_a_service_it_cannot_sync(objects):
    no_uid = service("a-no-uid", selector={"app": "web"})
    del no_uid["metadata"]["uid"]
    bad_ports = service("b-bad-ports", selector={"app": "web"}, ports="eighty")
    list_selector = service("c-list-selector", selector=["app"])
    good = service("d-good", selector={"app": "web"})
    for obj in (no_uid, bad_ports, list_selector):
        objects.store.put(f"/registry/services/specs/default/{obj['metadata']['name']}", obj)
    objects.create_many([good, pod("web-1", labels={"app": "web"}, ip="10.244.1.2",
                                   node="w1", ready=True)])
    endpointslices.sync(Writer(objects), stored_view(objects))
    slices = objects.list("EndpointSlice")[0]
    assert [s["metadata"]["labels"][endpointslices.SERVICE_NAME_LABEL] for s in slices] == [
        "d-good"]


@pytest.mark.parametrize("spec", ["nothing", {"clusterIP": 7, "ports": "eighty"},
                                  {"clusterIP": "10.96.0.5", "ports": ["x", {"nodePort": 30001}]}])
def test_allocation_repair_reads_what_it_can_of_a_malformed_service(spec):
    ips, ports = allocated_values({"metadata": {"name": "x"}, "spec": spec})
    assert ips <= {"10.96.0.5"} and ports <= {"30001"}
