"""kube-proxy's iptables mode against real traffic in network namespaces.

Topology (all made here, removed in teardown):

    nlt-proxy-client 192.168.10.100 ──veth── 192.168.10.2 nlt-proxy-node
                                                         cni0 10.244.1.1/24 (hairpin)
                                      ┌──────────────────────┴──────────────┐
                      nlt-proxy-pod1 10.244.1.2              nlt-proxy-pod2 10.244.1.3

Each pod runs a TCP server on 8080 and a UDP server on 5353 that answer with
the pod's name, so a client can tell which endpoint it reached.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from netlab.kernel import netns
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.iptables import names
from netlab.proxy.iptables.backend import IptablesBackend
from netlab.proxy.iptables.backend import new_proxier as iptables_proxier
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.iptables.render import NodeConfig
from netlab.proxy.model import ServicePortName
from netlab.proxy.proxier import Proxier
from netlab.proxy.rules_view import read_rules

pytestmark = [pytest.mark.root, pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NODE = "nlt-proxy-node"
CLIENT = "nlt-proxy-client"
PODS = {"nlt-proxy-pod1": "10.244.1.2", "nlt-proxy-pod2": "10.244.1.3"}
NODE_IP = "192.168.10.2"


def sh(ns: str, *argv: str) -> str:
    with netns.entered(ns):
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def veth(ns: str, name: str, peer_ns: str, peer: str) -> None:
    temporary = f"nltp{os.getpid() % 10000}"  # the peer's name may be taken in `ns`
    sh(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", temporary)
    sh(ns, "ip", "link", "set", temporary, "netns", netns.path_of(peer_ns))
    sh(peer_ns, "ip", "link", "set", temporary, "name", peer)


class PodServer:
    """TCP and UDP servers in a pod namespace answering with the pod's name."""

    def __init__(self, ns: str) -> None:
        self.name = ns.encode()
        self.tcp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", 8080))
        self.tcp.listen(64)
        self.udp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", 5353))
        for target in (self._serve_tcp, self._serve_udp):
            threading.Thread(target=target, daemon=True).start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(self.name)

    def _serve_udp(self) -> None:
        while True:
            try:
                _, peer = self.udp.recvfrom(512)
                if peer is None:  # shut down
                    return
                self.udp.sendto(self.name, peer)
            except OSError:
                return

    def close(self) -> None:
        for sock in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def plumb_node(node: str, client: str, pods: dict[str, str], node_ip: str) -> None:
    """The topology of the module docstring, in namespaces that already exist."""
    sh(node, "ip", "link", "set", "lo", "up")
    sh(node, "ip", "link", "add", "cni0", "type", "bridge")
    sh(node, "ip", "addr", "add", "10.244.1.1/24", "dev", "cni0")
    sh(node, "ip", "link", "set", "cni0", "up")
    for i, (pod, ip) in enumerate(pods.items(), start=1):
        veth(node, f"veth{i}", pod, "eth0")
        sh(node, "ip", "link", "set", f"veth{i}", "master", "cni0", "up")
        sh(node, "bridge", "link", "set", "dev", f"veth{i}", "hairpin", "on")
        sh(pod, "ip", "link", "set", "lo", "up")
        sh(pod, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh(pod, "ip", "link", "set", "eth0", "up")
        sh(pod, "ip", "route", "add", "default", "via", "10.244.1.1")
    veth(node, "eth0", client, "eth0")
    sh(node, "ip", "addr", "add", f"{node_ip}/24", "dev", "eth0")
    sh(node, "ip", "link", "set", "eth0", "up")
    # Like any node, a default route (to a gateway that never answers): without
    # one, a ClusterIP no rule catches is unroutable before it reaches FORWARD.
    sh(node, "ip", "route", "add", "default", "via", "10.244.1.254")
    sh(client, "ip", "link", "set", "lo", "up")
    sh(client, "ip", "addr", "add", "192.168.10.100/24", "dev", "eth0")
    sh(client, "ip", "link", "set", "eth0", "up")
    sh(client, "ip", "route", "add", "10.96.0.0/12", "via", node_ip)
    # What kubeadm's preflight asks of a node: forwarding and bridged traffic
    # through iptables (so pod -> ClusterIP -> pod on the same bridge un-NATs).
    sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")


@pytest.fixture(scope="module")
def lab():
    created: list[str] = []
    servers: list[PodServer] = []
    try:
        for ns in (NODE, CLIENT, *PODS):
            netns.create(ns)
            created.append(ns)
        plumb_node(NODE, CLIENT, PODS, NODE_IP)
        servers = [PodServer(pod) for pod in PODS]
        yield
    finally:
        for server in servers:
            server.close()
        for ns in reversed(created):
            netns.delete(ns)


def service_objects(pods: dict[str, str],
                    endpoint_pods: list[str] | None = None) -> list[dict]:
    """Services web (NodePort), dns (UDP), empty (no endpoints), self (one endpoint)."""
    ips = [pods[p] for p in (endpoint_pods if endpoint_pods is not None else pods)]
    eps = [{"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                              "terminating": False}, "nodeName": "node-a"}
           for ip in ips]

    def svc(name: str, ip: str, ports: list[dict], svc_type: str = "ClusterIP") -> dict:
        return {"kind": "Service", "metadata": {"namespace": "ns", "name": name},
                "spec": {"type": svc_type, "clusterIP": ip, "clusterIPs": [ip], "ports": ports}}

    def slice_(name: str, endpoints: list[dict], ports: list[dict]) -> dict:
        return {"kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"namespace": "ns", "name": f"{name}-x",
                             "labels": {"kubernetes.io/service-name": name}},
                "endpoints": endpoints, "ports": ports}

    return [
        svc("web", "10.96.0.20", [{"name": "http", "protocol": "TCP", "port": 80,
                                   "targetPort": 8080, "nodePort": 30080}], "NodePort"),
        slice_("web", eps, [{"name": "http", "protocol": "TCP", "port": 8080}]),
        svc("dns", "10.96.0.53", [{"name": "dns", "protocol": "UDP", "port": 53,
                                   "targetPort": 5353}]),
        slice_("dns", eps, [{"name": "dns", "protocol": "UDP", "port": 5353}]),
        svc("empty", "10.96.0.99", [{"name": "http", "protocol": "TCP", "port": 80}]),
        svc("self", "10.96.0.21", [{"name": "http", "protocol": "TCP", "port": 80,
                                    "targetPort": 8080}]),
        slice_("self", eps[:1], [{"name": "http", "protocol": "TCP", "port": 8080}]),
    ]


def objects(endpoint_pods: list[str] | None = None) -> list[dict]:
    return service_objects(PODS, endpoint_pods)


def new_proxier() -> Proxier:
    node = NodeConfig("node-a", (NODE_IP,), cluster_cidr="10.244.0.0/16")
    backend = IptablesBackend(IptablesKernel(NODE), node)
    return Proxier(backend, "node-a", min_sync_period=0, conntrack=ConntrackReconciler(NODE))


def feed(proxier: Proxier, objs: list[dict], event: str = "ADDED") -> Proxier:
    for obj in objs:
        proxier.on_event(obj["kind"], event, obj)
    return proxier


def saved(ns: str = NODE) -> str:
    """iptables-save without timestamps and counters, for comparisons."""
    text = sh(ns, "iptables-legacy-save")
    text = re.sub(r"^#.*\n", "", text, flags=re.M)
    return re.sub(r"\[\d+:\d+\]", "[0:0]", text)


def tcp_ask(ns: str, ip: str, port: int, timeout: float = 3.0) -> str:
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        return sock.recv(64).decode()


@pytest.fixture(scope="module")
def proxier(lab):
    proxier = feed(new_proxier(), objects())
    proxier.sync()
    return proxier


def test_cluster_ip_reaches_both_endpoints(proxier):
    answers = {tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(40)}
    assert answers == set(PODS)


def test_node_port_reaches_endpoints_from_outside_and_from_localhost(proxier):
    assert tcp_ask(CLIENT, NODE_IP, 30080) in PODS
    assert tcp_ask(NODE, "127.0.0.1", 30080) in PODS  # route_localnet + masquerade
    assert sh(NODE, "sysctl", "-n", "net.ipv4.conf.all.route_localnet").strip() == "1"


def test_pod_reaches_a_service_whose_only_endpoint_is_itself(proxier):
    assert tcp_ask("nlt-proxy-pod1", "10.96.0.21", 80) == "nlt-proxy-pod1"  # hairpin


def test_pod_to_cluster_ip_on_the_same_bridge(proxier):
    answers = {tcp_ask("nlt-proxy-pod2", "10.96.0.20", 80) for _ in range(30)}
    assert answers == set(PODS)


def test_service_without_endpoints_refuses_at_once(proxier):
    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(CLIENT, "10.96.0.99", 80, timeout=5)
    assert time.monotonic() - start < 1.0


def udp_ask(sock: socket.socket) -> str:
    sock.send(b"?")
    return sock.recv(64).decode()


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
        assert udp_ask(sock) == first  # one conntrack entry pins the flow
        remaining = [p for p in PODS if p != first]
        feed(proxier, [o for o in objects(remaining) if o["kind"] == "EndpointSlice"],
             "MODIFIED")
        report = proxier.sync()
        assert report.conntrack_deleted >= 1
        # The old pod still runs: only deleting the entry moves the flow.
        assert udp_ask(sock) == remaining[0]
    feed(proxier, [o for o in objects() if o["kind"] == "EndpointSlice"], "MODIFIED")
    proxier.sync()


def test_partial_sync_leaves_other_services_untouched(proxier):
    before = saved()
    feed(proxier, [o for o in objects(["nlt-proxy-pod1"]) if o["metadata"]["name"] == "web-x"],
         "MODIFIED")
    report = proxier.sync()
    assert not report.full and report.changed_services == 1
    assert {tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(10)} == {"nlt-proxy-pod1"}
    feed(proxier, [o for o in objects() if o["metadata"]["name"] == "web-x"], "MODIFIED")
    proxier.sync()
    assert saved() == before  # the removed endpoint's chain was deleted again, not left over


def test_restart_converges_to_identical_rules(proxier):
    before = saved()
    restarted = feed(new_proxier(), objects())
    assert restarted.sync().full
    after = saved()
    assert after == before
    for hook in ("-A PREROUTING -m comment --comment \"kubernetes service portals\" "
                 "-j KUBE-SERVICES", "-A INPUT -j KUBE-FIREWALL"):
        assert after.count(hook) == 1


def test_flushed_nat_table_is_detected_and_rebuilt(proxier):
    before = saved()
    sh(NODE, "iptables-legacy", "-t", "nat", "-F")
    sh(NODE, "iptables-legacy", "-t", "nat", "-X")
    with pytest.raises(OSError):
        tcp_ask(CLIENT, "10.96.0.20", 80, timeout=1)
    assert proxier.check_flushed()
    assert proxier.sync().full
    assert saved() == before
    assert tcp_ask(CLIENT, "10.96.0.20", 80) in PODS


def test_stale_chains_of_a_deleted_service_are_removed(proxier):
    self_svc = [o for o in objects() if o["metadata"]["name"] in ("self", "self-x")]
    feed(proxier, self_svc, "DELETED")
    proxier.sync()
    text = saved()
    spn = ServicePortName("ns", "self", "http", "TCP")
    assert "ns/self:http" not in text
    assert names.cluster_chain(spn) not in text
    assert names.endpoint_chain(spn, "10.244.1.2:8080") not in text
    feed(proxier, self_svc)
    proxier.sync()


def test_rules_view_groups_rules_and_counts_packets(proxier):
    for _ in range(3):
        tcp_ask(CLIENT, "10.96.0.20", 80)
    view = read_rules(NODE, service="ns/web")
    (web,) = view.services["ns/web"]
    assert web.port == "http" and web.packets >= 3
    chains = {r.chain for r in web.rules}
    assert any(c.startswith("KUBE-SEP-") for c in chains)
    assert any(c.startswith("KUBE-EXT-") for c in chains)
    dnat = [r for r in web.rules if "DNAT" in r.spec]
    assert sum(r.packets for r in dnat) >= 3


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


def test_metrics_and_healthz_are_served_inside_the_node(proxier):
    served = feed(new_proxier_for_agent(), objects())
    served.sync()
    served.serve()
    try:
        code, body = _http_get_in(NODE, 10249, "/metrics")
        assert code == 200
        assert b'kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4",table="nat"}' in body
        assert _http_get_in(NODE, 10249, "/proxyMode") == (200, b"iptables")
        code, body = _http_get_in(NODE, 10256, "/healthz")
        assert code == 200 and b'"healthy":true' in body
    finally:
        served.stop()


def new_proxier_for_agent() -> Proxier:
    """The way the node agent builds it."""
    return iptables_proxier(NODE, "node-a", [NODE_IP], cluster_cidr="10.244.0.0/16",
                            min_sync_period=0)
