"""kube-proxy's nftables mode against real traffic in network namespaces.

The topology of test_proxy_iptables_netns.py, under this file's own names
(all made here, removed in teardown):

    nlt-nft-client 192.168.10.100 ──veth── 192.168.10.2 nlt-nft-node
                                                        cni0 10.244.1.1/24 (hairpin)
                                      ┌─────────────────────┴──────────────┐
                        nlt-nft-pod1 10.244.1.2                nlt-nft-pod2 10.244.1.3

Each pod runs a TCP server on 8080 and a UDP server on 5353 that answer with
the pod's name, so a client can tell which endpoint it reached.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest

from netlab.kernel import netns
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.model import ServicePortName
from netlab.proxy.nftables import names
from netlab.proxy.nftables.backend import NftablesBackend
from netlab.proxy.nftables.backend import new_proxier as nftables_proxier
from netlab.proxy.nftables.kernel import NftKernel
from netlab.proxy.nftables.render import NodeConfig
from netlab.proxy.proxier import Proxier
from netlab.proxy.rules_view import read_rules
from tests.integration.test_proxy_iptables_netns import (
    PodServer,
    plumb_node,
    service_objects,
    sh,
    tcp_ask,
    udp_ask,
)

pytestmark = [pytest.mark.root, pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NODE = "nlt-nft-node"
CLIENT = "nlt-nft-client"
PODS = {"nlt-nft-pod1": "10.244.1.2", "nlt-nft-pod2": "10.244.1.3"}
NODE_IP = "192.168.10.2"
SELF = ServicePortName("ns", "self", "http", "TCP")
# flannel's masquerade rule: flannel writes iptables (legacy here) even when
# kube-proxy runs in nftables mode, and the two must coexist.
FLANNEL_MASQ = ("-t", "nat", "-A", "POSTROUTING", "-s", "10.244.0.0/16", "!", "-d",
                "10.244.0.0/16", "-m", "comment", "--comment", "flanneld masq", "-j",
                "MASQUERADE", "--random-fully")


def _mac(ns: str, dev: str) -> str:
    return json.loads(sh(ns, "ip", "-j", "link", "show", "dev", dev))[0]["address"]


def _static_neighbours() -> None:
    """Permanent ARP entries for every pair that talks, made before any traffic.

    The kernel's neighbour table is shared by every namespace on the host and
    capped (gc_thresh3); on a host running other labs it can be full, and then
    dynamic ARP fails with ENOBUFS. Permanent entries are exempt from the cap.
    """
    pairs = [(CLIENT, "eth0", NODE_IP, NODE, "eth0"),
             (NODE, "eth0", "192.168.10.100", CLIENT, "eth0")]
    for pod, ip in PODS.items():
        pairs += [(pod, "eth0", "10.244.1.1", NODE, "cni0"), (NODE, "cni0", ip, pod, "eth0")]
        pairs += [(pod, "eth0", other, peer, "eth0")
                  for peer, other in PODS.items() if peer != pod]
    for ns, dev, ip, peer_ns, peer_dev in pairs:
        sh(ns, "ip", "neigh", "replace", ip, "lladdr", _mac(peer_ns, peer_dev), "dev", dev,
           "nud", "permanent")


@pytest.fixture(scope="module")
def lab():
    created: list[str] = []
    servers: list[PodServer] = []
    try:
        for ns in (NODE, CLIENT, *PODS):
            netns.create(ns)
            created.append(ns)
        plumb_node(NODE, CLIENT, PODS, NODE_IP)
        sh(NODE, "iptables-legacy", *FLANNEL_MASQ)
        _static_neighbours()
        servers = [PodServer(pod) for pod in PODS]
        yield
    finally:
        for server in servers:
            server.close()
        for ns in reversed(created):
            netns.delete(ns)


def objects(endpoint_pods: list[str] | None = None) -> list[dict]:
    return service_objects(PODS, endpoint_pods)


def new_proxier() -> Proxier:
    node = NodeConfig("node-a", (NODE_IP,), cluster_cidr="10.244.0.0/16", counters=True)
    backend = NftablesBackend(NftKernel(NODE), node)
    return Proxier(backend, "node-a", min_sync_period=0, conntrack=ConntrackReconciler(NODE))


def feed(proxier: Proxier, objs: list[dict], event: str = "ADDED") -> Proxier:
    for obj in objs:
        proxier.on_event(obj["kind"], event, obj)
    return proxier


def listed() -> str:
    """`nft list table ip kube-proxy`, stateless (no counter values), for comparisons."""
    return sh(NODE, "nft", "-s", "list", "table", "ip", "kube-proxy")


def chain_block(text: str, chain: str) -> str:
    match = re.search(rf"^\tchain {re.escape(chain)} {{\n(.*?)^\t}}", text, re.S | re.M)
    assert match, chain
    return match.group(1)


@pytest.fixture(scope="module")
def proxier(lab):
    proxier = feed(new_proxier(), objects())
    assert proxier.sync().full
    return proxier


def test_cluster_ip_reaches_both_endpoints(proxier):
    answers = {tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(40)}
    assert answers == set(PODS)


def test_node_port_answers_on_the_node_ip_but_not_on_localhost(proxier):
    assert tcp_ask(CLIENT, NODE_IP, 30080) in PODS
    with pytest.raises(ConnectionRefusedError):  # no localhost NodePorts in nftables mode
        tcp_ask(NODE, "127.0.0.1", 30080, timeout=2)


def test_pod_reaches_a_service_whose_only_endpoint_is_itself(proxier):
    assert tcp_ask("nlt-nft-pod1", "10.96.0.21", 80) == "nlt-nft-pod1"  # hairpin


def test_pod_to_cluster_ip_on_the_same_bridge(proxier):
    answers = {tcp_ask("nlt-nft-pod2", "10.96.0.20", 80) for _ in range(30)}
    assert answers == set(PODS)


def test_service_without_endpoints_refuses_at_once(proxier):
    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(CLIENT, "10.96.0.99", 80, timeout=5)
    assert time.monotonic() - start < 1.0


def test_port_not_defined_on_a_cluster_ip_is_refused_and_a_free_ip_times_out(proxier):
    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(CLIENT, "10.96.0.20", 81, timeout=5)
    assert time.monotonic() - start < 1.0
    with pytest.raises(socket.timeout):
        tcp_ask(CLIENT, "10.96.0.77", 80, timeout=1)  # unallocated: dropped


def test_udp_service_answers(proxier):
    with netns.socket_in(CLIENT, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect(("10.96.0.53", 53))
        assert udp_ask(sock) in PODS


def test_removed_udp_endpoint_loses_its_conntrack_entry(proxier):
    with netns.socket_in(CLIENT, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect(("10.96.0.53", 53))
        first = udp_ask(sock)
        assert udp_ask(sock) == first
        remaining = [p for p in PODS if p != first]
        feed(proxier, [o for o in objects(remaining) if o["kind"] == "EndpointSlice"],
             "MODIFIED")
        report = proxier.sync()
        assert report.conntrack_deleted >= 1
        assert udp_ask(sock) == remaining[0]
    feed(proxier, [o for o in objects() if o["kind"] == "EndpointSlice"], "MODIFIED")
    proxier.sync()


def settle(proxier: Proxier) -> None:
    """Let chains earlier tests made stale pass their one-second delay, and delete them."""
    time.sleep(1.1)
    proxier.sync()


def test_partial_sync_leaves_other_services_untouched(proxier):
    settle(proxier)
    before = listed()
    feed(proxier, [o for o in objects(["nlt-nft-pod1"]) if o["metadata"]["name"] == "web-x"],
         "MODIFIED")
    report = proxier.sync()
    assert not report.full and report.changed_services == 1
    text = proxier.backend.last_render.text
    assert "ns/web/" in text and "ns/dns/" not in text and "ns/self/" not in text
    after = listed()
    for chain in (names.service_chain(ServicePortName("ns", "dns", "dns", "UDP")),
                  names.service_chain(SELF)):
        assert chain_block(after, chain) == chain_block(before, chain)
    assert {tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(10)} == {"nlt-nft-pod1"}
    feed(proxier, [o for o in objects() if o["metadata"]["name"] == "web-x"], "MODIFIED")
    proxier.sync()
    settle(proxier)  # the endpoint chain dropped above is deleted a second after its flush
    assert proxier.sync(full=True).full
    assert listed() == before


def test_restart_converges_to_an_identical_table(proxier):
    before = listed()
    restarted = feed(new_proxier(), objects())
    assert restarted.sync().full
    assert listed() == before
    assert tcp_ask(CLIENT, "10.96.0.20", 80) in PODS


def test_deleted_table_is_detected_and_rebuilt(proxier):
    before = listed()
    sh(NODE, "nft", "delete", "table", "ip", "kube-proxy")
    with pytest.raises(OSError):
        tcp_ask(CLIENT, "10.96.0.20", 80, timeout=1)
    assert proxier.check_flushed()
    assert proxier.sync().full
    assert listed() == before
    assert tcp_ask(CLIENT, "10.96.0.20", 80) in PODS


def test_flannels_iptables_rules_stay_beside_the_nft_table(proxier):
    rules = sh(NODE, "iptables-legacy-save", "-t", "nat")
    assert "flanneld masq" in rules and "KUBE-" not in rules


def test_stale_chains_of_a_deleted_service_are_flushed_then_deleted(proxier):
    self_svc = [o for o in objects() if o["metadata"]["name"] in ("self", "self-x")]
    feed(proxier, self_svc, "DELETED")
    report = proxier.sync()
    assert not report.full
    text = listed()
    assert "10.96.0.21" not in text
    assert chain_block(text, names.service_chain(SELF)) == ""  # flushed, not yet gone
    time.sleep(1.1)
    proxier.sync()
    assert "ns/self/" not in listed()
    feed(proxier, self_svc)
    proxier.sync()


def test_rules_view_groups_rules_and_counts_packets(proxier):
    for _ in range(3):
        tcp_ask(CLIENT, "10.96.0.20", 80)
    view = read_rules(NODE, service="ns/web")
    (web,) = view.services["ns/web"]
    assert web.port == "http" and web.packets >= 3
    chains = {r.chain for r in web.rules}
    assert {"service-ips", "service-nodeports"} <= chains
    assert any(c.startswith("endpoint-") for c in chains)
    assert any(c.startswith("external-") for c in chains)
    dnat = [r for r in web.rules if r.target == "dnat"]
    assert sum(r.packets for r in dnat) >= 3
    assert all("packets" not in r.spec for r in web.rules)


def _http_get_in(ns: str, port: int, path: str) -> tuple[int, bytes]:
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_agents_proxier_serves_its_mode_and_health(proxier):
    served = feed(nftables_proxier(NODE, "node-a", [NODE_IP], cluster_cidr="10.244.0.0/16",
                                   min_sync_period=0), objects())
    served.sync()
    served.serve()
    try:
        assert _http_get_in(NODE, 10249, "/proxyMode") == (200, b"nftables")
        code, body = _http_get_in(NODE, 10256, "/healthz")
        assert code == 200 and b'"healthy":true' in body
    finally:
        served.stop()
