"""kube-proxy's IPVS mode against the real kernel and real traffic in network namespaces.

The topology of test_proxy_iptables_netns.py, under this file's own names
(all made here, removed in teardown):

    nlt-ipvs-client 192.168.10.100 ──veth── 192.168.10.2 nlt-ipvs-node  (kube-ipvs0)
                                                         cni0 10.244.1.1/24 (hairpin)
                                       ┌─────────────────────┴──────────────┐
                        nlt-ipvs-pod1 10.244.1.2                nlt-ipvs-pod2 10.244.1.3

Two tiers in one file. The ipset and iptables half needs only ip_set and
xt_set, which this project's host kernel has: it runs everywhere. The IPVS
half needs ip_vs and dummy and is skipped with the kernel's reason where they
are missing; tests/vm/test_ipvs_kernel.py runs this file inside a VM with a
distribution kernel, where nothing is skipped. pyroute2's IPVS and IPSet
classes read the kernel back: a decoder independent of the adapter's own.
"""

from __future__ import annotations

import socket
import time

import pytest

from netlab.errors import KernelError
from netlab.kernel import netns
from netlab.proxy import modes
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.backend import IpvsBackend
from netlab.proxy.ipvs.backend import new_proxier as ipvs_proxier
from netlab.proxy.ipvs.diff import KernelState, Plan, diff
from netlab.proxy.ipvs.kernel import IpvsKernel
from netlab.proxy.ipvs.render import JUMP_RULES, NodeConfig, render, with_jumps
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
from tests.integration.test_proxy_nftables_netns import _http_get_in
from tests.unit.proxy_objects import snapshot_of

pytestmark = [pytest.mark.root, pytest.mark.integration]

NODE = "nlt-ipvs-node"
CLIENT = "nlt-ipvs-client"
PODS = {"nlt-ipvs-pod1": "10.244.1.2", "nlt-ipvs-pod2": "10.244.1.3"}
NODE_IP = "192.168.10.2"
NODE_ADDRESSES = (NODE_IP, "10.244.1.1")  # eth0 and cni0: NodePorts answer on both
MISSING = modes.ipvs_missing()
needs_ipvs = pytest.mark.skipif(bool(MISSING), reason="this kernel lacks "
                                + " and ".join(MISSING) + " (tests/vm runs these in a VM)")


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


def objects(endpoint_pods: list[str] | None = None) -> list[dict]:
    return service_objects(PODS, endpoint_pods)


def node_config() -> NodeConfig:
    return NodeConfig("node-a", (NODE_IP,), cluster_cidr="10.244.0.0/16")


def feed(proxier: Proxier, objs: list[dict], event: str = "ADDED") -> Proxier:
    for obj in objs:
        proxier.on_event(obj["kind"], event, obj)
    return proxier


def kernel_sets(ns: str) -> dict[str, set[str]]:
    """Our ipsets' members as pyroute2 decodes them, in ipset's spelling."""
    from pyroute2.ipset import IPSet

    protos = {6: "tcp", 17: "udp", 132: "sctp"}
    out: dict[str, set[str]] = {}
    with netns.entered(ns):
        ipset = IPSet()
        try:
            for msg in ipset.list():
                name = msg.get_attr("IPSET_ATTR_SETNAME")
                members = out.setdefault(name, set())
                adt = msg.get_attr("IPSET_ATTR_ADT")
                for data in adt.get_attrs("IPSET_ATTR_DATA") if adt else []:
                    text = data.get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4") \
                        if data.get_attr("IPSET_ATTR_IP_FROM") else ""
                    port = data.get_attr("IPSET_ATTR_PORT_FROM")
                    if port is not None:
                        proto = protos.get(data.get_attr("IPSET_ATTR_PROTO"))
                        text = f"{text},{proto}:{port}" if text else str(port)
                    ip2 = data.get_attr("IPSET_ATTR_IP2")
                    if ip2:
                        text += "," + ip2.get_attr("IPSET_ATTR_IPADDR_IPV4")
                        if data.get_attr("IPSET_ATTR_CIDR2") is not None:
                            text += f"/{data.get_attr('IPSET_ATTR_CIDR2')}"
                    members.add(text)
        finally:
            ipset.close()
    return out


# -- what the host kernel has too: ipsets, the iptables rules, addresses ------------------------


def test_ipsets_and_the_iptables_rules_are_programmed_then_changed_member_by_member(lab):
    kernel = IpvsKernel(NODE)
    try:
        kernel.ensure_sets()
        kernel.ensure_sets()  # again: `-exist`
        desired = render(snapshot_of("node-a", *objects()), node_config(), NODE_ADDRESSES)
        plan, after = diff(KernelState(ipsets=kernel.read_sets()), desired)
        # The ipset part of the plan: virtual servers and kube-ipvs0 need a VM.
        kernel.apply(Plan(ipset_add=plan.ipset_add, ipset_del=plan.ipset_del), dummy=0,
                     iptables_payload=with_jumps(desired.iptables, JUMP_RULES))
        assert kernel.read_sets() == desired.ipsets
        seen = kernel_sets(NODE)
        assert {name: seen[name] for name in desired.ipsets} == \
            {name: set(members) for name, members in desired.ipsets.items()}
        assert seen[n.CLUSTER_IP] == {"10.96.0.20,tcp:80", "10.96.0.53,udp:53",
                                      "10.96.0.99,tcp:80", "10.96.0.21,tcp:80"}
        assert seen[n.NODE_PORT_TCP] == {"30080"}
        saved = sh(NODE, "iptables-legacy-save")
        for jump in JUMP_RULES:
            assert saved.count(jump.save_line()) == 1, jump
        assert '-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service ' \
            'cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP ' \
            'dst,dst -j KUBE-MARK-MASQ' in saved
        assert "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set " \
            "KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable" in saved
        # One endpoint fewer: only the changed members move.
        smaller = render(snapshot_of("node-a", *objects(["nlt-ipvs-pod1"])), node_config(),
                         NODE_ADDRESSES)
        plan, _ = diff(after, smaller)
        assert set(plan.ipset_del) == {(n.LOOP_BACK, "10.244.1.3,tcp:8080,10.244.1.3"),
                                       (n.LOOP_BACK, "10.244.1.3,udp:5353,10.244.1.3")}
        assert not plan.ipset_add
        kernel.apply(Plan(ipset_add=plan.ipset_add, ipset_del=plan.ipset_del), dummy=0,
                     iptables_payload=smaller.iptables)
        assert kernel.read_sets() == smaller.ipsets
    finally:
        kernel.close()


def test_failures_inside_a_batch_are_named_and_the_rest_is_applied(lab):
    kernel = IpvsKernel(NODE)
    try:
        kernel.ensure_sets()
        ipset = kernel.ipset
        members = [f"10.98.{i // 250}.{i % 250 + 1},tcp:80" for i in range(1200)]  # 3 windows
        batch = [ipset.add(n.CLUSTER_IP, "hash:ip,port", m) for m in members]
        batch.insert(7, ipset.add("KUBE-NO-SUCH-SET", "hash:ip", "10.98.9.9"))
        batch.insert(700, ipset.add(n.CLUSTER_IP, "hash:ip", "10.98.9.8"))  # no port: refused
        failures = ipset.apply(batch)
        assert [str(f) for f in failures] == [
            "add 10.98.9.9 to ipset KUBE-NO-SUCH-SET: No such file or directory",
            "add 10.98.9.8 to ipset KUBE-CLUSTER-IP: ipset protocol error"]
        assert set(members) <= kernel.read_sets()[n.CLUSTER_IP]
        assert ipset.apply([ipset.delete(n.CLUSTER_IP, "hash:ip,port", m) for m in members]) == []
        assert not set(members) & kernel.read_sets()[n.CLUSTER_IP]
    finally:
        kernel.close()


def test_addresses_are_bound_and_unbound_in_batches(lab):
    kernel = IpvsKernel(NODE)
    try:
        index = int(sh(NODE, "cat", "/sys/class/net/lo/ifindex"))
        addresses = kernel.addresses
        wanted = [f"10.97.0.{i}" for i in range(1, 101)]
        assert addresses.apply([addresses.add(index, ip) for ip in wanted] * 2) == []
        bound, local = kernel.read_addresses(index)
        assert set(wanted) <= bound and NODE_IP in local
        assert not any(ip.startswith("127.") for ip in local)
        assert addresses.apply([addresses.delete(index, ip) for ip in wanted] * 2) == []
        assert not set(wanted) & kernel.read_addresses(index)[0]
    finally:
        kernel.close()


def test_a_kernel_without_ipvs_is_refused_with_the_reason(lab):
    if not MISSING:
        pytest.skip("this kernel has IPVS")
    with pytest.raises(KernelError, match="ip_vs"):
        IpvsBackend(IpvsKernel(NODE), node_config()).setup()


# -- IPVS itself (a VM with a distribution kernel) -------------------------------------------


def servers(ns: str) -> dict[str, dict[str, tuple[int, int]]]:
    """`ipvsadm -Ln` as pyroute2 decodes it: 'TCP 10.96.0.20:80 rr' -> {real: (weight, fwd)}.

    Read from the decoded attributes themselves: pyroute2's IPVSService and
    IPVSDest objects fill flags, timeout and fwd_method with their defaults.
    """
    from pyroute2.ipvs import IPVS, IPVSService

    names = {6: "TCP", 17: "UDP", 132: "SCTP"}
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with netns.entered(ns):
        ipvs = IPVS()
        try:
            for msg in ipvs.service("dump"):
                svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
                a = dict(svc["attrs"])
                label = (f"{names[a['IPVS_SVC_ATTR_PROTOCOL']]} {a['IPVS_SVC_ATTR_ADDR']}:"
                         f"{a['IPVS_SVC_ATTR_PORT']} {a['IPVS_SVC_ATTR_SCHED_NAME']}")
                if a["IPVS_SVC_ATTR_FLAGS"]["flags"] & n.FLAG_PERSISTENT:
                    label += f" persistent {a['IPVS_SVC_ATTR_TIMEOUT']}"
                reals = out[label] = {}
                for dmsg in ipvs.dest("dump", service=IPVSService.from_message(msg)):
                    d = dict(dmsg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])
                    reals[f"{d['IPVS_DEST_ATTR_ADDR']}:{d['IPVS_DEST_ATTR_PORT']}"] = (
                        d["IPVS_DEST_ATTR_WEIGHT"], d["IPVS_DEST_ATTR_FWD_METHOD"])
        finally:
            ipvs.close()
    return out


def new_proxier() -> Proxier:
    backend = IpvsBackend(IpvsKernel(NODE), node_config())
    return Proxier(backend, "node-a", min_sync_period=0, conntrack=ConntrackReconciler(NODE))


@pytest.fixture(scope="module")
def proxier(lab):
    proxier = feed(new_proxier(), objects())
    assert proxier.sync().full
    return proxier


@needs_ipvs
def test_every_service_address_is_a_virtual_server_with_masqueraded_real_servers(proxier):
    masq = 0
    assert servers(NODE) == {
        "TCP 10.96.0.20:80 rr": {"10.244.1.2:8080": (1, masq), "10.244.1.3:8080": (1, masq)},
        "TCP 192.168.10.2:30080 rr": {"10.244.1.2:8080": (1, masq),
                                      "10.244.1.3:8080": (1, masq)},
        "TCP 10.244.1.1:30080 rr": {"10.244.1.2:8080": (1, masq), "10.244.1.3:8080": (1, masq)},
        "UDP 10.96.0.53:53 rr": {"10.244.1.2:5353": (1, masq), "10.244.1.3:5353": (1, masq)},
        "TCP 10.96.0.99:80 rr": {},
        "TCP 10.96.0.21:80 rr": {"10.244.1.2:8080": (1, masq)},
    }
    addresses = sh(NODE, "ip", "-o", "-4", "addr", "show", "dev", n.DUMMY_DEVICE)
    assert {line.split()[3] for line in addresses.splitlines()} == {
        "10.96.0.20/32", "10.96.0.53/32", "10.96.0.99/32", "10.96.0.21/32"}
    assert "state DOWN" in sh(NODE, "ip", "link", "show", n.DUMMY_DEVICE)


@needs_ipvs
def test_kube_proxys_sysctls_are_set(proxier):
    for name in ("net.ipv4.vs.conntrack", "net.ipv4.vs.expire_nodest_conn",
                 "net.ipv4.vs.expire_quiescent_template", "net.ipv4.ip_forward"):
        assert sh(NODE, "sysctl", "-n", name).strip() == "1", name


@needs_ipvs
def test_round_robin_alternates_between_the_endpoints(proxier):
    answers = [tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(10)]
    assert set(answers) == set(PODS)
    assert all(a != b for a, b in zip(answers, answers[1:], strict=False))  # rr: strictly


@needs_ipvs
def test_node_port_answers_on_node_addresses_but_not_on_localhost(proxier):
    assert tcp_ask(CLIENT, NODE_IP, 30080) in PODS
    with pytest.raises(ConnectionRefusedError):  # IPVS mode has no localhost NodePorts
        tcp_ask(NODE, "127.0.0.1", 30080, timeout=2)


@needs_ipvs
def test_pod_reaches_a_service_whose_only_endpoint_is_itself(proxier):
    assert tcp_ask("nlt-ipvs-pod1", "10.96.0.21", 80) == "nlt-ipvs-pod1"  # KUBE-LOOP-BACK


@needs_ipvs
def test_pod_to_cluster_ip_on_the_same_bridge(proxier):
    assert {tcp_ask("nlt-ipvs-pod2", "10.96.0.20", 80) for _ in range(10)} == set(PODS)


@needs_ipvs
def test_service_without_endpoints_and_unknown_ports_are_refused_at_once(proxier):
    for port in (80, 81):  # no real server; a port no Service has on a VIP (KUBE-IPVS-FILTER)
        start = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            tcp_ask(CLIENT, "10.96.0.99" if port == 80 else "10.96.0.20", port, timeout=5)
        assert time.monotonic() - start < 1.0


@needs_ipvs
def test_udp_service_answers(proxier):
    with netns.socket_in(CLIENT, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect(("10.96.0.53", 53))
        assert udp_ask(sock) in PODS


@pytest.fixture
def restored(proxier):
    """The module's Services and slices as at the start, whatever the test changed."""
    yield proxier
    feed(proxier, objects(), "MODIFIED")
    proxier.sync()


@needs_ipvs
def test_a_partial_sync_changes_only_what_changed(restored):
    proxier = restored
    before = servers(NODE)
    feed(proxier, [o for o in objects(["nlt-ipvs-pod1"]) if o["metadata"]["name"] == "dns-x"],
         "MODIFIED")
    report = proxier.sync()
    assert not report.full
    plan = proxier.backend.last_plan
    # UDP: the real server goes at once, from the ClusterIP's virtual server only.
    assert [(str(vs), real) for vs, real in plan.delete_reals] == [
        ("UDP  10.96.0.53:53 rr", ("10.244.1.3", 5353))]
    assert set(plan.ipset_del) == {(n.LOOP_BACK, "10.244.1.3,udp:5353,10.244.1.3")}
    assert len(plan) == 2
    after = servers(NODE)
    assert after["UDP 10.96.0.53:53 rr"] == {"10.244.1.2:5353": (1, 0)}
    assert {k: v for k, v in after.items() if "UDP" not in k} == \
        {k: v for k, v in before.items() if "UDP" not in k}
    feed(proxier, [o for o in objects() if o["metadata"]["name"] == "dns-x"], "MODIFIED")
    proxier.sync()
    assert servers(NODE) == before


@needs_ipvs
def test_a_removed_tcp_endpoint_drains_before_it_goes(restored):
    proxier = restored
    web = [o for o in objects(["nlt-ipvs-pod1"]) if o["metadata"]["name"] == "web-x"]
    open_conn = netns.socket_in(CLIENT, socket.AF_INET, socket.SOCK_STREAM)
    try:
        open_conn.connect(("10.96.0.20", 80))
        first = open_conn.recv(64).decode()  # rr: whichever is next
        if first != "nlt-ipvs-pod2":
            open_conn.close()
            open_conn = netns.socket_in(CLIENT, socket.AF_INET, socket.SOCK_STREAM)
            open_conn.connect(("10.96.0.20", 80))
            assert open_conn.recv(64).decode() == "nlt-ipvs-pod2"
        feed(proxier, web, "MODIFIED")
        proxier.sync()
        assert servers(NODE)["TCP 10.96.0.20:80 rr"]["10.244.1.3:8080"][0] == 0  # weight 0
        assert {tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(6)} == {"nlt-ipvs-pod1"}
    finally:
        open_conn.close()
    feed(proxier, [o for o in objects() if o["metadata"]["name"] == "web-x"], "MODIFIED")
    proxier.sync()
    assert servers(NODE)["TCP 10.96.0.20:80 rr"]["10.244.1.3:8080"][0] == 1  # back at once


@needs_ipvs
def test_session_affinity_makes_the_virtual_server_persistent(restored):
    proxier = restored
    sticky = [dict(o) for o in objects() if o["metadata"]["name"] in ("web", "web-x")]
    sticky[0] = {**sticky[0], "spec": {**sticky[0]["spec"], "sessionAffinity": "ClientIP",
                                       "sessionAffinityConfig": {"clientIP":
                                                                 {"timeoutSeconds": 60}}}}
    feed(proxier, sticky, "MODIFIED")
    proxier.sync()
    assert "TCP 10.96.0.20:80 rr persistent 60" in servers(NODE)
    assert len({tcp_ask(CLIENT, "10.96.0.20", 80) for _ in range(8)}) == 1
    feed(proxier, [o for o in objects() if o["metadata"]["name"] == "web"], "MODIFIED")
    proxier.sync()
    assert "TCP 10.96.0.20:80 rr" in servers(NODE)


@needs_ipvs
def test_a_deleted_service_loses_its_virtual_server_and_address(restored):
    proxier = restored
    self_svc = [o for o in objects() if o["metadata"]["name"] in ("self", "self-x")]
    feed(proxier, self_svc, "DELETED")
    proxier.sync()
    assert "TCP 10.96.0.21:80 rr" not in servers(NODE)
    assert "10.96.0.21/32" not in sh(NODE, "ip", "-o", "addr", "show", "dev", n.DUMMY_DEVICE)
    with pytest.raises(OSError):
        tcp_ask("nlt-ipvs-pod1", "10.96.0.21", 80, timeout=1)
    feed(proxier, self_svc)
    proxier.sync()


@needs_ipvs
def test_restart_converges_without_a_single_change(proxier):
    before = servers(NODE)
    restarted = feed(new_proxier(), objects())
    assert restarted.sync().full
    assert len(restarted.backend.last_plan) == 0
    assert servers(NODE) == before


@needs_ipvs
def test_deleted_dummy_is_detected_and_rebuilt(proxier):
    before = servers(NODE)
    sh(NODE, "ip", "link", "del", n.DUMMY_DEVICE)
    with pytest.raises(OSError):
        tcp_ask(CLIENT, "10.96.0.20", 80, timeout=1)
    assert proxier.check_flushed()
    assert proxier.sync().full
    assert servers(NODE) == before
    assert tcp_ask(CLIENT, "10.96.0.20", 80) in PODS


@needs_ipvs
def test_rules_view_shows_virtual_servers_and_sets_by_service(proxier):
    for _ in range(3):
        tcp_ask(CLIENT, "10.96.0.20", 80)
    view = read_rules(NODE, mode="ipvs", services=[o for o in objects()
                                                   if o["kind"] == "Service"])
    (web,) = view.services["ns/web"]
    assert web.packets >= 3
    labels = {f"{r.table} {r.chain}" for r in web.rules}
    assert {"ipvs TCP  10.96.0.20:80 rr", "ipvs TCP  192.168.10.2:30080 rr",
            f"ipset {n.CLUSTER_IP}", f"ipset {n.NODE_PORT_TCP}"} <= labels
    assert any(r.spec.startswith("-> 10.244.1.2:8080 Masq weight 1") for r in web.rules)
    assert any(r.chain == n.KUBE_IPVS_FILTER for r in view.common)
    unnamed = read_rules(NODE)  # the mode found by kube-ipvs0; without Services, no names
    assert not unnamed.services and any(r.table == "ipvs" for r in unnamed.common)


@needs_ipvs
def test_the_agents_proxier_serves_its_mode(proxier):
    served = feed(ipvs_proxier(NODE, "node-a", [NODE_IP], cluster_cidr="10.244.0.0/16",
                               min_sync_period=0), objects())
    served.sync()
    served.serve()
    try:
        assert _http_get_in(NODE, 10249, "/proxyMode") == (200, b"ipvs")
    finally:
        served.stop()
