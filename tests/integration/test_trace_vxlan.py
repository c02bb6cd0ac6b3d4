"""Live packet traces on a VXLAN lab, each checked against its simulated twin.

Written with the pytest plugin (netlab.trace.pytest_plugin): `netlab_lab` and
`netlab_manifests` describe the lab, the `lab` fixture brings it up once for
the module (and always down), and `trace` traces in it.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest

from netlab.trace.model import DropReason, Verdict
from netlab.trace.observe import ruleset_text
from tests.integration.labs import lab_data
from tests.integration.trace_checks import (
    agrees_with_model,
    answer_is_un_natted,
    cluster_ip,
    session_affinity_pins_the_chosen_endpoint,
)
from tests.integration.trace_manifests import manifests

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

netlab_lab = lab_data("tr-1")
netlab_manifests = manifests()


def test_pod_to_pod_on_one_node_is_delivered_without_nat(trace, lab):
    t = trace("client", "peer", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.minimal == [f"worker-1/pod:default/peer: DELIVERED {lab.pod_ip('peer')}:8080 "
                         f"from {lab.pod_ip('client')}", "verdict: DELIVERED"]
    assert not t.encapsulated()
    agrees_with_model(t)


def test_pod_to_pod_across_nodes_is_encapsulated_between_node_ips(trace, lab):
    t = trace("client", "server", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.encapsulated(vni=1)
    assert t.encap is not None
    assert (t.encap.outer_src, t.encap.outer_dst, t.encap.dport) == (
        lab.node_ip("worker-1"), lab.node_ip("worker-2"), 8472)
    assert t.encap.sport  # the real flow-hash source port, seen on the wire
    assert t.source_seen_by_server == lab.pod_ip("client")
    agrees_with_model(t)


def test_clusterip_dnat_names_the_service_and_its_endpoint(trace, lab):
    t = trace("client", "web", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None
    assert t.dnat.after.destination == f"{lab.pod_ip('server')}:8080"
    ref = t.dnat.k8s_ref
    assert (ref.service, ref.port_name, ref.pod) == ("default/web", "http", "default/server")
    assert ref.endpointslice and ref.endpointslice.startswith("web-")
    assert t.dnat.conntrack is not None and "DST_NAT" in t.dnat.conntrack.status
    assert t.source_seen_by_server == lab.pod_ip("client")  # no SNAT from a pod
    answer_is_un_natted(t, ["un-DNAT"], f"{cluster_ip(lab, 'web')}:80")
    assert t.reply[0].place == "worker-2/pod:default/server"
    assert any(h.stage == "vxlan:encap" and h.encap and h.encap.outer_dst ==
               lab.node_ip("worker-1") for h in t.reply)  # back across the overlay
    agrees_with_model(t)


def test_external_client_to_nodeport_is_masqueraded(trace, lab):
    t = trace("ext", "worker-1:30080", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.k8s_ref.service == "default/web-np"
    assert t.snat is not None and t.snat.stage == "netfilter:nat/POSTROUTING"
    assert t.source_seen_by_server == "10.244.1.0"  # worker-1's flannel.1 address
    answer_is_un_natted(t, ["un-SNAT", "un-DNAT"], f"{lab.node_ip('worker-1')}:30080")
    assert t.reply[-1].place == "ext"
    agrees_with_model(t)


def test_service_without_endpoints_is_rejected(trace):
    t = trace("client", "empty", mode="diff")
    assert t.verdict == Verdict.REJECTED
    assert t.drop_reason == DropReason.NO_ENDPOINTS
    assert any("ICMP port-unreachable" in n for n in t.notes)
    agrees_with_model(t)


def test_etp_local_nodeport_without_local_endpoint_is_dropped_with_the_reason(trace, lab):
    t = trace("ext", "worker-1:30081", mode="diff", timeout=1.0)
    assert t.verdict == Verdict.DROPPED
    assert t.drop_reason == DropReason.NO_LOCAL_ENDPOINTS
    assert "default/web-local:http has no local endpoints" in t.reason
    agrees_with_model(t)
    served = trace("ext", "worker-2:30081")
    assert served.verdict == Verdict.DELIVERED
    assert served.source_seen_by_server == lab.info["ext"]["address"]  # client IP kept


def test_pod_reaches_itself_through_its_service_by_hairpin(trace, lab):
    t = trace("client", "loopback", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.delivered_to == "pod default/client"
    assert t.snat is not None and t.snat.after.src == "10.244.1.1"  # cni0's address
    assert any("hairpin" in h.match for h in t.hops_at("bridge"))
    agrees_with_model(t)


def test_session_affinity_pins_the_endpoint_already_chosen(trace, lab):
    session_affinity_pins_the_chosen_endpoint(trace, lab)


def test_dns_query_goes_through_kube_dns(trace):
    t = trace("client", "kube-system/kube-dns", port="dns", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.probe.proto == "udp" and t.probe.dport == 53
    assert t.dnat is not None and t.dnat.k8s_ref.service == "kube-system/kube-dns"
    assert t.delivered_to.startswith("pod kube-system/coredns-")
    assert any("dns reply" in n for n in t.notes)
    agrees_with_model(t)


def test_concurrent_traffic_does_not_confuse_the_trace(trace, lab):
    stop = threading.Event()

    def noise(src: str, url: str) -> None:
        while not stop.is_set():
            lab.exec(src, "curl", "-s", "--max-time", "2", url, check=False)

    web_ip = cluster_ip(lab, "web")
    threads = [threading.Thread(target=noise, args=args) for args in (
        ("peer", f"http://{web_ip}/hostname"), ("client", f"http://{lab.pod_ip('server')}:8080/"),
        ("ext", f"http://{lab.node_ip('worker-1')}:30080/"))]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for _ in range(3):
            t = trace("client", "web", mode="diff")
            assert t.verdict == Verdict.DELIVERED
            assert t.source_seen_by_server == lab.pod_ip("client")
            assert not [n for n in t.notes if "off the explained path" in n]
            agrees_with_model(t)
    finally:
        stop.set()
        for th in threads:
            th.join()


def test_a_trace_leaves_no_rules_captures_processes_or_conntrack_entries(trace, lab):
    def rules() -> dict[str, str]:  # without comments and counters
        return {n["name"]: re.sub(r"\[\d+:\d+\]", "", "\n".join(
            line for line in ruleset_text(n["netns"]).splitlines() if not line.startswith("#")))
            for n in lab.info["nodes"]}

    before_rules, before_threads = rules(), threading.active_count()
    before_fds = len(os.listdir("/proc/self/fd"))
    t = trace("ext", "worker-1:30080")
    assert t.verdict == Verdict.DELIVERED
    assert rules() == before_rules
    assert threading.active_count() == before_threads
    assert len(os.listdir("/proc/self/fd")) == before_fds
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True,
                              text=True).stdout.split()
    assert all(int(pid) in _lab_processes(lab) for pid in children)
    for node in ("worker-1", "worker-2"):
        entries = lab.exec(node, "conntrack", "-L", "-p", "tcp", "--sport",
                           str(t.probe.sport), check=False).stdout
        assert f"sport={t.probe.sport} " not in entries


def _lab_processes(lab) -> set[int]:  # type: ignore[no-untyped-def]
    return {p.pid for p in lab.state.processes()}


def test_pcap_holds_the_probe_on_every_device_it_crossed(trace, tmp_path):
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import rdpcap

    path = tmp_path / "probe.pcapng"
    t = trace("client", "server", pcap=str(path))
    packets = rdpcap(str(path))
    assert len(packets) >= 10  # pod, veth, cni0, flannel.1, eth0, underlay, ... and back
    assert any(p.haslayer(VXLAN) for p in packets)
    assert t.verdict == Verdict.DELIVERED


def test_the_cli_prints_the_same_minimal_trace_as_the_api(trace, lab):
    cli = subprocess.run(["knetlab", "trace", "client", "web", "--minimal", "--name", lab.name],
                         capture_output=True, text=True, check=True).stdout
    assert cli.splitlines() == trace("client", "web", mode="simulated").minimal
    graph = subprocess.run(["knetlab", "graph", "--name", lab.name, "--trace", "client", "web",
                            "--simulate"], capture_output=True, text=True, check=True).stdout
    assert "* default/web" in " ".join(graph.split())
