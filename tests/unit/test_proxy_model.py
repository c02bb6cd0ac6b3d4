"""What kube-proxy takes from Services and EndpointSlices, and how changes are tracked."""

from __future__ import annotations

import logging

import pytest

from netlab.proxy.changes import ChangeTracker
from netlab.proxy.iptables import names
from netlab.proxy.model import NamespacedName, ServicePortName, service_ports
from netlab.proxy.topology import categorize_endpoints
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service

SPN = ServicePortName("ns", "web", "http", "TCP")


def web(**spec) -> dict:
    return service("ns", "web", "10.96.0.20", [port("http", 80, 8080)], **spec)


def web_slice(*eps: dict, name: str = "web-abc") -> dict:
    return endpoint_slice("ns", "web", list(eps), [("http", 8080, "TCP")], name=name)


# -- chain names --------------------------------------------------------------

@pytest.mark.parametrize(("spn", "expected"), [
    (ServicePortName("ns1", "svc1", "p80", "TCP"), "XPGD46QRK7WJZT7O"),
    (ServicePortName("default", "kubernetes", "https", "TCP"), "NPX46M4PTMTKRN6Y"),
    (ServicePortName("kube-system", "kube-dns", "dns", "UDP"), "TCOU7JCQXEZGVUNU"),
    (ServicePortName("kube-system", "kube-dns", "dns-tcp", "TCP"), "ERIFXISQEP7F7OF4"),
])
def test_service_chain_hashes_match_real_clusters(spn, expected):
    assert names.port_hash(spn) == expected
    assert names.cluster_chain(spn) == f"KUBE-SVC-{expected}"
    assert names.local_chain(spn) == f"KUBE-SVL-{expected}"
    assert names.external_chain(spn) == f"KUBE-EXT-{expected}"
    assert names.firewall_chain(spn) == f"KUBE-FW-{expected}"


def test_endpoint_chain_hash_matches_kube_proxy():
    spn = ServicePortName("ns1", "svc1", "p80", "TCP")
    assert names.endpoint_chain(spn, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_unnamed_port_is_spelled_without_colon():
    assert str(ServicePortName("ns", "web", "", "TCP")) == "ns/web"
    assert str(SPN) == "ns/web:http"


# -- which Services kube-proxy ignores -----------------------------------------

@pytest.mark.parametrize("obj", [
    service("ns", "headless", "None", [port("http", 80)]),
    service("ns", "unallocated", "", [port("http", 80)]),
    service("ns", "ext", "10.96.0.30", [port("http", 80)], svc_type="ExternalName",
            externalName="example.com"),
    service("ns", "other-proxy", "10.96.0.31", [port("http", 80)],
            labels={"service.kubernetes.io/service-proxy-name": "my-proxy"}),
    service("ns", "headless-label", "10.96.0.32", [port("http", 80)],
            labels={"service.kubernetes.io/headless": ""}),
])
def test_services_kube_proxy_ignores_produce_no_ports(obj):
    assert service_ports(obj) == {}


def test_service_port_carries_what_the_rules_need():
    obj = service("ns", "lb", "10.96.0.40", [port("http", 80, 8080, node_port=30080)],
                  svc_type="LoadBalancer", externalTrafficPolicy="Local",
                  healthCheckNodePort=31000, externalIPs=["192.168.10.9", "not-an-ip"],
                  loadBalancerSourceRanges=["203.0.113.7/25"], sessionAffinity="ClientIP",
                  status={"loadBalancer": {"ingress": [{"ip": "192.168.10.200"},
                                                       {"hostname": "lb.example"}]}})
    (sp,) = service_ports(obj).values()
    assert (sp.cluster_ip, sp.port, sp.node_port) == ("10.96.0.40", 80, 30080)
    assert sp.external_ips == ("192.168.10.9",)
    assert sp.load_balancer_ips == ("192.168.10.200",)
    assert sp.load_balancer_source_ranges == ("203.0.113.0/25",)
    assert sp.health_check_node_port == 31000 and sp.external_policy_local
    assert sp.affinity_timeout == 10800


def test_external_policy_local_does_not_apply_to_plain_cluster_ip_services():
    (sp,) = service_ports(web(externalTrafficPolicy="Local")).values()
    assert not sp.external_policy_local and not sp.externally_accessible


def test_dual_stack_service_uses_its_ipv4_cluster_ip():
    obj = web()
    obj["spec"]["clusterIPs"] = ["fd00::20", "10.96.0.21"]
    (sp,) = service_ports(obj).values()
    assert sp.cluster_ip == "10.96.0.21"


def test_a_bad_port_is_skipped_and_the_rest_kept(caplog):
    obj = service("ns", "web", "10.96.0.20", [port("http", 80), {"name": "bad", "port": "x"}])
    with caplog.at_level(logging.WARNING):
        assert list(service_ports(obj)) == [SPN]
    assert "spec.ports[1].port" in caplog.text


# -- change tracking -----------------------------------------------------------

def test_snapshot_merges_slices_and_sorts_endpoints_as_strings():
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    tracker.update("EndpointSlice", "ADDED", web_slice(endpoint("10.244.1.2"), name="a"))
    tracker.update("EndpointSlice", "ADDED", web_slice(endpoint("10.244.1.11"),
                                                       endpoint("10.244.1.2", node="node-a"),
                                                       name="b"))
    snap = tracker.snapshot()
    eps = snap.endpoints[SPN]
    assert [ep.key for ep in eps] == ["10.244.1.11:8080", "10.244.1.2:8080"]
    assert eps[1].is_local  # a duplicate prefers its local copy
    assert snap.changed == {NamespacedName("ns", "web")}


def test_an_update_that_changes_nothing_the_rules_use_leaves_nothing_pending():
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    tracker.snapshot()
    relabelled = web()
    relabelled["metadata"]["labels"] = {"app": "web"}
    assert tracker.update("Service", "MODIFIED", relabelled) is False
    assert tracker.snapshot().changed == frozenset()


def test_a_change_undone_before_the_sync_is_not_a_change():
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    tracker.snapshot()
    assert tracker.update("Service", "DELETED", web()) is True
    assert tracker.update("Service", "ADDED", web()) is False
    assert tracker.snapshot().changed == frozenset()


def test_deleting_a_service_removes_its_ports_and_reports_it_changed():
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    tracker.update("Service", "ADDED", service("ns", "other", "10.96.0.21", [port("p", 1)]))
    tracker.snapshot()
    tracker.update("Service", "DELETE", {"metadata": {"namespace": "ns", "name": "web"}})
    snap = tracker.snapshot()
    assert SPN not in snap.services and len(snap.services) == 1
    assert snap.changed == {NamespacedName("ns", "web")}


def test_a_slice_moving_to_another_service_updates_both():
    tracker = ChangeTracker("node-a")
    tracker.update("EndpointSlice", "ADDED", web_slice(endpoint("10.244.1.2")))
    tracker.snapshot()
    moved = endpoint_slice("ns", "api", [endpoint("10.244.1.2")], [("http", 8080, "TCP")],
                           name="web-abc")
    tracker.update("EndpointSlice", "MODIFIED", moved)
    snap = tracker.snapshot()
    assert snap.changed == {NamespacedName("ns", "web"), NamespacedName("ns", "api")}
    assert SPN not in snap.endpoints
    assert ServicePortName("ns", "api", "http", "TCP") in snap.endpoints


def test_malformed_objects_are_logged_and_treated_as_absent(caplog):
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    with caplog.at_level(logging.WARNING):
        tracker.update("Service", "ADDED", service("ns", "bad", "x", [port("p", 1)]))
        tracker.update("EndpointSlice", "ADDED", {"kind": "EndpointSlice"})
        tracker.update("EndpointSlice", "ADDED", {"metadata": {"name": "s", "namespace": "ns"},
                                                  "addressType": "IPv4"})
        tracker.update("Service", "EXPLODED", web())
    snap = tracker.snapshot()
    assert list(snap.services) == [SPN]
    assert "not an IP address" in caplog.text and "service-name" in caplog.text


def test_an_update_that_makes_a_service_malformed_removes_its_rules():
    tracker = ChangeTracker("node-a")
    tracker.update("Service", "ADDED", web())
    tracker.snapshot()
    broken = web()
    broken["spec"]["clusterIP"] = broken["spec"]["clusterIPs"][0] = "10.96.0.999"
    assert tracker.update("Service", "MODIFIED", broken) is True
    assert tracker.snapshot().services == {}


def test_slices_of_ignored_kinds_are_dropped():
    tracker = ChangeTracker("node-a")
    fqdn = web_slice(endpoint("10.244.1.2"))
    fqdn["addressType"] = "FQDN"
    headless = web_slice(endpoint("10.244.1.3"), name="h")
    headless["metadata"]["labels"]["service.kubernetes.io/headless"] = ""
    tracker.update("EndpointSlice", "ADDED", fqdn)
    tracker.update("EndpointSlice", "ADDED", headless)
    assert tracker.snapshot().endpoints == {}


def test_trigger_time_annotation_feeds_network_programming_latency():
    tracker = ChangeTracker("node-a")
    obj = web_slice(endpoint("10.244.1.2"))
    obj["metadata"]["annotations"] = {
        "endpoints.kubernetes.io/last-change-trigger-time": "2024-01-02T03:04:05Z"}
    tracker.update("EndpointSlice", "ADDED", obj)
    assert tracker.snapshot().trigger_times == (1704164645.0,)


def test_udp_endpoint_loss_asks_for_conntrack_cleanup():
    tracker = ChangeTracker("node-a")
    dns = endpoint_slice("kube-system", "kube-dns", [endpoint("10.244.1.5"),
                                                     endpoint("10.244.2.5")],
                         [("dns", 53, "UDP")])
    tracker.update("EndpointSlice", "ADDED", dns)
    assert tracker.snapshot().conntrack_cleanup  # first serving endpoints
    dns["endpoints"] = dns["endpoints"][:1]
    tracker.update("EndpointSlice", "MODIFIED", dns)
    assert tracker.snapshot().conntrack_cleanup
    tracker.update("EndpointSlice", "ADDED", web_slice(endpoint("10.244.1.2")))
    assert not tracker.snapshot().conntrack_cleanup  # TCP only


# -- endpoint categorisation ---------------------------------------------------

def endpoints_of(*eps: dict, node: str = "node-a"):
    tracker = ChangeTracker(node)
    tracker.update("EndpointSlice", "ADDED", web_slice(*eps))
    return tracker.snapshot().endpoints[SPN]


def port_of(**spec):
    return next(iter(service_ports(web(**spec)).values()))


def test_cluster_policy_uses_ready_endpoints_only():
    eps = endpoints_of(endpoint("10.244.1.2"), endpoint("10.244.1.3", ready=False))
    cat = categorize_endpoints(eps, port_of(), "node-a")
    assert [e.ip for e in cat.cluster] == ["10.244.1.2"] and cat.has_any


def test_serving_terminating_endpoints_are_used_only_when_none_is_ready():
    eps = endpoints_of(endpoint("10.244.1.2", ready=False, serving=True, terminating=True),
                       endpoint("10.244.1.3", ready=False, serving=False, terminating=True))
    cat = categorize_endpoints(eps, port_of(), "node-a")
    assert [e.ip for e in cat.cluster] == ["10.244.1.2"]


def test_local_policy_prefers_local_ready_then_local_terminating():
    eps = endpoints_of(endpoint("10.244.1.2", node="node-a", ready=False, serving=True,
                                terminating=True),
                       endpoint("10.244.2.2", node="node-b"))
    cat = categorize_endpoints(eps, port_of(internalTrafficPolicy="Local"), "node-a")
    assert [e.ip for e in cat.local] == ["10.244.1.2"]
    assert cat.reachable == cat.local and cat.has_any


def test_local_policy_without_local_endpoints_still_knows_others_exist():
    eps = endpoints_of(endpoint("10.244.2.2", node="node-b"))
    cat = categorize_endpoints(eps, port_of(internalTrafficPolicy="Local"), "node-a")
    assert cat.local == () and cat.has_any


def test_zone_hints_narrow_cluster_endpoints_when_all_ready_ones_have_them():
    hinted = [endpoint("10.244.1.2", hints={"forZones": [{"name": "a"}]}),
              endpoint("10.244.2.2", hints={"forZones": [{"name": "b"}]})]
    cat = categorize_endpoints(endpoints_of(*hinted), port_of(), "node-a", zone="a")
    assert [e.ip for e in cat.cluster] == ["10.244.1.2"]
    unhinted = [*hinted, endpoint("10.244.3.2")]
    cat = categorize_endpoints(endpoints_of(*unhinted), port_of(), "node-a", zone="a")
    assert len(cat.cluster) == 3


def test_node_hints_win_over_zone_hints():
    eps = [endpoint("10.244.1.2", hints={"forZones": [{"name": "a"}],
                                         "forNodes": [{"name": "node-a"}]}),
           endpoint("10.244.1.3", hints={"forZones": [{"name": "a"}],
                                         "forNodes": [{"name": "node-b"}]})]
    cat = categorize_endpoints(endpoints_of(*eps), port_of(), "node-a", zone="a")
    assert [e.ip for e in cat.cluster] == ["10.244.1.2"]
