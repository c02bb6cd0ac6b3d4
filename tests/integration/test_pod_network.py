"""The pod network of issue 2, with real packets: pods, nodes, VXLAN on the underlay."""

from __future__ import annotations

import os
import signal
import time

import pytest

from netlab.kernel import netns
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from tests.hoststate import HostState
from tests.integration.labs import lab_data, pod

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]


@pytest.fixture(scope="module")
def lab():
    before = HostState.capture("t-vxlan")
    running = start_lab(lab_data("t-vxlan"))
    try:
        running.apply([pod("a", "worker-1"), pod("b", "worker-1"), pod("c", "worker-2")])
        running.wait_ready()
        yield running
    finally:
        lifecycle.down("t-vxlan")
    assert HostState.capture("t-vxlan").differences(before) == []


def curl(lab: RunningLab, source: str, ip: str, path: str = "hostname") -> str:
    return lab.exec(source, "curl", "-s", "--max-time", "5", f"http://{ip}:8080/{path}",
                    check=False).stdout


def test_pod_reaches_pod_on_same_node(lab):
    assert curl(lab, "a", lab.pod_ip("b")) == "b"


def test_pod_reaches_pod_on_other_node(lab):
    assert curl(lab, "a", lab.pod_ip("c")) == "c"


def test_pod_sees_its_own_address_as_others_see_it(lab):
    """No NAT between pods: the server sees the client's pod IP."""
    seen = curl(lab, "a", lab.pod_ip("c"), "clientip")
    assert seen.split(":")[0] == lab.pod_ip("a")


def test_node_reaches_pod_on_its_node_and_on_others(lab):
    assert curl(lab, "worker-1", lab.pod_ip("a")) == "a"
    assert curl(lab, "control-plane", lab.pod_ip("c")) == "c"


def test_pod_reaches_node(lab):
    result = lab.exec("a", "ping", "-c", "1", "-W", "2", lab.node_ip("worker-2"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cross_node_traffic_is_vxlan_between_node_ips(lab):
    """The packet on the underlay: outer node IPs, UDP 8472, VNI 1, the pod IPs inside."""
    from scapy.all import AsyncSniffer
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    with netns.entered(lab.netns("underlay")):
        sniffer = AsyncSniffer(iface="br-underlay", filter="udp port 8472", store=True)
        sniffer.start()
    time.sleep(0.5)
    try:
        assert curl(lab, "a", lab.pod_ip("c")) == "c"
        time.sleep(0.3)
    finally:
        packets = sniffer.stop()
    encapsulated = [p for p in packets if p.haslayer(VXLAN)]
    assert encapsulated, "no VXLAN packet seen on the underlay"
    first = encapsulated[0]
    assert first[IP].src == lab.node_ip("worker-1")
    assert first[IP].dst == lab.node_ip("worker-2")
    assert first[UDP].dport == 8472
    assert first[VXLAN].vni == 1
    inner = first[VXLAN].payload
    assert inner[IP].src == lab.pod_ip("a") and inner[IP].dst == lab.pod_ip("c")


def test_node_has_flannel_entries_for_each_peer(lab):
    routes = lab.exec("worker-1", "ip", "route").stdout
    fdb = lab.exec("worker-1", "bridge", "fdb", "show", "dev", "flannel.1").stdout
    neigh = lab.exec("worker-1", "ip", "neigh", "show", "dev", "flannel.1").stdout
    for node in ("control-plane", "worker-2"):
        cidr = lab.objects.get("Node", None, node)["spec"]["podCIDR"]
        gateway = cidr.split("/")[0]
        assert f"{cidr} via {gateway} dev flannel.1 onlink" in routes
        assert f"dst {lab.node_ip(node)} self permanent" in fdb
        assert f"{gateway} lladdr" in neigh and "PERMANENT" in neigh
    link = lab.exec("worker-1", "ip", "-d", "link", "show", "flannel.1").stdout
    assert "vxlan id 1" in link and "dstport 8472" in link and "nolearning" in link
    assert "mtu 1450" in link


def test_pod_files_are_what_kubelet_writes(lab):
    resolv = lab.exec("a", "cat", "/etc/resolv.conf").stdout
    assert resolv == ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 10.96.0.10\noptions ndots:5\n")
    assert f"{lab.pod_ip('a')}\ta" in lab.exec("a", "cat", "/etc/hosts").stdout


def test_pod_veth_is_a_hairpin_port_of_cni0(lab):
    ports = lab.exec("worker-1", "bridge", "-d", "link", "show").stdout
    veth_lines = [line for line in ports.split("\n") if "master cni0" in line]
    assert veth_lines and all(line.split(":")[1].strip().startswith("veth")
                              for line in veth_lines)
    assert ports.count("hairpin on") == len(veth_lines)


def test_readiness_probe_gates_ready(lab):
    """A probe on a port nothing listens on keeps the pod Running but not Ready."""
    probe = {"tcpSocket": {"port": 9999}, "periodSeconds": 1}
    never = pod("never-ready", "worker-2")
    never["spec"]["containers"][0]["readinessProbe"] = probe
    lab.apply([never])
    running = lab.wait_for(lambda: (lab.pod("never-ready").get("status") or {}).get("podIP"),
                           what="never-ready to get an IP")
    assert running
    time.sleep(2)
    conditions = {c["type"]: c["status"] for c in lab.pod("never-ready")["status"]["conditions"]}
    assert conditions["Ready"] == "False"
    ok = pod("exec-ready", "worker-2")
    ok["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["test", "-f", "/etc/resolv.conf"]}, "periodSeconds": 1}
    lab.apply([ok])
    lab.wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                             (lab.pod("exec-ready").get("status") or {}).get("conditions", [])),
                 what="exec-ready to be Ready")
    lab.delete("Pod", "never-ready")
    lab.delete("Pod", "exec-ready")


def test_deleted_pod_loses_its_namespace(lab):
    lab.apply([pod("short-lived", "worker-1")])
    lab.wait_ready()
    name = lab.netns("short-lived")
    lab.delete("Pod", "short-lived")
    lab.wait_for(lambda: lab.objects.get("Pod", "default", "short-lived") is None,
                 what="pod object to go")
    assert not netns.exists(name)
    assert not os.path.exists(f"/etc/netns/{name}")


def test_agent_restart_keeps_pod_ips_and_traffic(lab):
    """kill -9 of a node's agent (kubelet + flannel + kube-proxy): the supervisor restarts
    it; pods keep their addresses and the restarted agent adopts them."""
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods()}
    agent = next(p for p in lab.state.processes() if p.role == "agent-worker-1")
    os.kill(agent.pid, signal.SIGKILL)
    lab.wait_for(lambda: any(p.role == "agent-worker-1" and p.pid != agent.pid and p.alive()
                             for p in lab.state.processes()), what="agent to restart")
    assert {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods()} == ips
    assert lab.wait_for(lambda: curl(lab, "c", ips["a"]) == "a", what="a to answer")
    lab.apply([pod("after-restart", "worker-1")])
    lab.wait_ready()
    assert lab.pod_ip("after-restart") not in ips.values()
    assert curl(lab, "c", lab.pod_ip("after-restart")) == "after-restart"
    assert curl(lab, "c", ips["a"]) == "a"


def test_removed_node_disappears_from_peers_overlay(lab):
    cidr = lab.objects.get("Node", None, "worker-2")["spec"]["podCIDR"]
    assert cidr in lab.exec("worker-1", "ip", "route").stdout
    lab.delete("Node", "worker-2", None)
    lab.wait_for(lambda: cidr not in lab.exec("worker-1", "ip", "route").stdout,
                 what="worker-2's route to go from worker-1")
    gateway = cidr.split("/")[0]
    assert gateway not in lab.exec("worker-1", "ip", "neigh", "show", "dev", "flannel.1").stdout
    assert lab.node_ip("worker-2") not in lab.exec(
        "control-plane", "bridge", "fdb", "show", "dev", "flannel.1").stdout
