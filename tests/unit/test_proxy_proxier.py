"""The mode-independent sync loop, metrics and health, with a fake backend (no root)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from netlab.errors import KernelError
from netlab.proxy.backend import BackendResult
from netlab.proxy.changes import Snapshot
from netlab.proxy.conntrack import Flow, stale_flows
from netlab.proxy.healthz import ProxyHealth, go_time, health_server
from netlab.proxy.httpserve import listen_in
from netlab.proxy.iptables.kernel import parse_save
from netlab.proxy.metrics import ProxyMetrics, metrics_server
from netlab.proxy.model import ServicePortName
from netlab.proxy.proxier import Proxier
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service, snapshot_of


class FakeBackend:
    mode = "fake"

    def __init__(self) -> None:
        self.syncs: list[tuple[Snapshot, bool]] = []
        self.fail = False
        self.is_flushed = False
        self.setups = 0
        self.synced = threading.Event()

    def setup(self) -> None:
        self.setups += 1

    def sync(self, snapshot: Snapshot, *, full: bool) -> BackendResult:
        self.syncs.append((snapshot, full))
        self.synced.set()
        if self.fail:
            raise KernelError("iptables-restore failed: boom")
        return BackendResult({"filter": 3, "nat": 7}, {"filter": 3, "nat": 9}, 1, 0)

    def flushed(self) -> bool:
        return self.is_flushed


def web(n: int = 1) -> list[dict]:
    return [service("ns", "web", "10.96.0.20", [port("http", 80, 8080)]),
            endpoint_slice("ns", "web", [endpoint(f"10.244.1.{i + 2}") for i in range(n)],
                           [("http", 8080, "TCP")])]


def fed(proxier: Proxier, objs: list[dict], event: str = "ADDED") -> Proxier:
    for obj in objs:
        proxier.on_event(obj["kind"], event, obj)
    return proxier


def test_first_sync_is_full_and_later_ones_partial():
    backend = FakeBackend()
    proxier = fed(Proxier(backend, "node-a", min_sync_period=0), web())
    assert proxier.sync().full
    fed(proxier, web(2), "MODIFIED")
    report = proxier.sync()
    assert not report.full and report.changed_services == 1
    assert backend.setups == 1


def test_a_failed_sync_makes_the_next_one_full_and_is_counted():
    backend = FakeBackend()
    proxier = fed(Proxier(backend, "node-a", min_sync_period=0), web())
    proxier.sync()
    backend.fail = True
    fed(proxier, web(2), "MODIFIED")
    with pytest.raises(KernelError):
        proxier.sync()
    backend.fail = False
    assert proxier.sync().full
    text = proxier.metrics.exposition().decode()
    assert 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"} 1.0' \
        in text
    assert ('kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total'
            '{ip_family="IPv4"} 1.0') in text


def test_full_sync_comes_round_every_full_sync_period():
    now = [100.0]
    backend = FakeBackend()
    proxier = Proxier(backend, "node-a", min_sync_period=0, sync_period=30,
                      clock=lambda: now[0])
    assert proxier.sync().full
    now[0] += 29
    assert not proxier.sync().full
    now[0] += 2
    assert proxier.sync().full


def test_flushed_tables_force_a_full_sync():
    backend = FakeBackend()
    proxier = Proxier(backend, "node-a", min_sync_period=0, full_sync_period=3600)
    proxier.sync()
    assert not proxier.check_flushed()
    backend.is_flushed = True
    assert proxier.check_flushed()
    assert proxier.sync().full


def test_zone_change_of_this_node_forces_a_full_sync():
    backend = FakeBackend()
    proxier = Proxier(backend, "node-a", min_sync_period=0, full_sync_period=3600)
    proxier.sync()
    node = {"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}}}
    proxier.on_event("Node", "MODIFIED", {"metadata": {"name": "node-b"}})
    assert not proxier.sync().full
    proxier.on_event("Node", "MODIFIED", node)
    assert proxier.sync().full
    assert backend.syncs[-1][0].zone == "z1"


def test_loop_waits_for_both_initial_lists_then_rate_limits_syncs():
    backend = FakeBackend()
    proxier = fed(Proxier(backend, "node-a", min_sync_period=0.3, sync_period=30), web())
    proxier.start()
    try:
        time.sleep(0.2)
        assert backend.syncs == []  # not until Services and EndpointSlices are listed
        proxier.on_synced("Service")
        time.sleep(0.1)
        assert backend.syncs == []
        proxier.on_synced("EndpointSlice")
        assert backend.synced.wait(2)
        first = time.monotonic()
        backend.synced.clear()
        fed(proxier, web(2), "MODIFIED")
        fed(proxier, web(3), "MODIFIED")
        assert backend.synced.wait(2)
        assert time.monotonic() - first >= 0.25  # min_sync_period, start to start
        time.sleep(0.4)
        assert len(backend.syncs) == 2  # both changes in one sync
        assert len(backend.syncs[1][0].endpoints[ServicePortName("ns", "web", "http", "TCP")]) \
            == 3
    finally:
        proxier.stop()


def test_periodic_sync_runs_without_changes():
    backend = FakeBackend()
    proxier = Proxier(backend, "node-a", min_sync_period=0, sync_period=0.2)
    proxier.on_synced("Service")
    proxier.on_synced("EndpointSlice")
    proxier.start()
    try:
        time.sleep(0.7)
    finally:
        proxier.stop()
    assert len(backend.syncs) >= 3


def test_sync_metrics_use_kube_proxy_names():
    backend = FakeBackend()
    proxier = fed(Proxier(backend, "node-a", min_sync_period=0), web())
    proxier.sync()
    text = proxier.metrics.exposition().decode()
    for line in [
        'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1.0',
        'kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1.0',
        'kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 0.0',
        'kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"} 9.0',
        'kubeproxy_sync_proxy_rules_iptables_last{ip_family="IPv4",table="nat"} 7.0',
        'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",'
        'traffic_policy="internal"} 1.0',
        "kubeproxy_sync_proxy_rules_service_changes_total 1.0",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total 1.0",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0.0",
        'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 1.0',
    ]:
        assert line in text
    assert "_created" not in text
    assert 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}' in text


def test_each_proxier_has_its_own_registry():
    a, b = ProxyMetrics(), ProxyMetrics()
    a.service_changes_total.inc()
    assert b"service_changes_total 0.0" in b.exposition()


def test_health_turns_503_when_an_update_waits_longer_than_the_timeout():
    now = [1000.0]
    health = ProxyHealth(60, clock=lambda: now[0])
    health.updated()
    assert health.healthz()[0] == 200
    health.queued_update()
    now[0] += 59
    assert health.healthz()[0] == 200
    now[0] += 2
    code, ctype, body, headers = health.healthz()
    assert code == 503 and ctype == "application/json"
    assert headers == {"X-Content-Type-Options": "nosniff"}
    doc = json.loads(body)
    assert list(doc) == ["lastUpdated", "currentTime", "nodeEligible", "healthy", "status"]
    assert doc["healthy"] is False and doc["status"]["IPv4"]["healthy"] is False
    health.updated()
    assert health.livez()[0] == 200


def test_node_marked_for_deletion_fails_healthz_but_not_livez():
    health = ProxyHealth(60)
    health.updated()
    health.set_node({"metadata": {"name": "n"},
                     "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler"}]}})
    assert health.healthz()[0] == 503
    assert health.livez()[0] == 200
    assert json.loads(health.livez()[2]).get("nodeEligible") is None


def test_go_time_format():
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(1704164645.0) == "2024-01-02T03:04:05Z"
    assert go_time(1704164645.25) == "2024-01-02T03:04:05.25Z"


def _get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_and_health_servers_answer_over_http_on_loopback():
    metrics = ProxyMetrics()
    health = ProxyHealth(60, metrics=metrics)
    health.updated()
    msrv = metrics_server(metrics, "iptables", listen_in(None, "127.0.0.1", 0)).start()
    hsrv = health_server(health, listen_in(None, "127.0.0.1", 0)).start()
    try:
        assert _get(msrv.address, "/proxyMode") == (200, b"iptables")
        assert _get(msrv.address, "/healthz") == (200, b"ok")
        code, body = _get(hsrv.address, "/healthz")
        assert code == 200 and json.loads(body)["healthy"] is True
        assert _get(hsrv.address, "/nope")[0] == 404
        code, body = _get(msrv.address, "/metrics")
        assert code == 200 and b'kubeproxy_proxy_healthz_total{code="200"} 1.0' in body
    finally:
        msrv.stop()
        hsrv.stop()


# -- conntrack decisions --------------------------------------------------------

def test_udp_flows_not_answered_by_a_serving_endpoint_are_stale():
    objs = [
        service("kube-system", "kube-dns", "10.96.0.10",
                [port("dns", 53, protocol="UDP", node_port=30053)], svc_type="NodePort"),
        endpoint_slice("kube-system", "kube-dns", [endpoint("10.244.1.5"),
                                                   endpoint("10.244.2.5", ready=False,
                                                            serving=False)],
                       [("dns", 53, "UDP")]),
        service("ns", "empty", "10.96.0.11", [port("u", 9, protocol="UDP")]),
    ]
    snap = snapshot_of("node-a", *objs)
    flows = [Flow("10.96.0.10", 53, "10.244.1.5", 53),  # good
             Flow("10.96.0.10", 53, "10.244.2.5", 53),  # endpoint no longer serving
             Flow("10.96.0.10", 53, "10.96.0.10", 53),  # black hole from before the rules
             Flow("192.168.10.2", 30053, "10.244.9.9", 53),  # NodePort to a gone pod
             Flow("10.96.0.11", 9, "10.96.0.11", 9),  # no endpoints: left alone
             Flow("8.8.8.8", 53, "8.8.8.8", 53)]  # not a service
    assert stale_flows(flows, snap.services, snap.endpoints) == flows[1:4]


def test_parse_save_keeps_chains_and_builtin_rules_per_table():
    text = """# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SVC-ABC - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SVC-ABC -j KUBE-SEP-X
COMMIT
# Completed
*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
"""
    tables = parse_save(text)
    assert tables["nat"].chains == {"PREROUTING", "KUBE-SVC-ABC"}
    assert tables["nat"].builtin_rules == {
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'}
    assert tables["mangle"].chains == {"KUBE-PROXY-CANARY"}


def test_parse_save_does_not_skip_the_table_after_an_empty_one():
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n# Completed\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n-A INPUT -j KUBE-FIREWALL\n"
            "COMMIT\n")
    tables = parse_save(text)
    assert tables["nat"].chains == {"PREROUTING"}
    assert tables["filter"].builtin_rules == {"-A INPUT -j KUBE-FIREWALL"}
