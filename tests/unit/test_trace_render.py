"""Text levels, JSON, targets, the graph and pcapng: what users and tests read."""

from __future__ import annotations

import io
import json

import pytest

from netlab.trace.capture import Frame
from netlab.trace.graph import to_dot, to_text
from netlab.trace.model import Trace, Verdict
from netlab.trace.pcap import PcapngWriter
from netlab.trace.render import render
from netlab.trace.simulate import simulate
from netlab.trace.targets import TargetError, resolve_destination, resolve_source
from tests.unit import trace_lab

VIEW = trace_lab.view()


def sim(src: str, dst: str, **kw) -> Trace:  # type: ignore[no-untyped-def]
    return simulate(VIEW, trace_lab.rulesets(), resolve_source(VIEW, src),
                    resolve_destination(VIEW, dst, **kw))


def test_minimal_shows_only_what_changed_the_packet_and_the_end():
    assert render(sim("ext", "worker-1:30080"), "minimal").splitlines() == [
        "worker-1/root nat PREROUTING: DNAT 192.168.10.3:30080 -> 10.244.2.2:8080 "
        "[default/np:http]",
        "worker-1/root nat POSTROUTING: SNAT 192.168.10.100 -> 10.244.1.0",
        "worker-1/root flannel.1: ENCAP vni=1 192.168.10.3 -> 192.168.10.4:8472",
        "worker-2/pod:default/c: DELIVERED 10.244.2.2:8080 from 10.244.1.0",
        "verdict: DELIVERED",
    ]


def test_summary_hides_netfilter_hooks_that_decided_nothing_and_detailed_shows_them():
    trace = sim("a", "c")
    summary, detailed = render(trace, "summary"), render(trace, "detailed")
    assert "nat PREROUTING" not in summary
    assert "nat PREROUTING" in detailed and "FLANNEL-FWD" in detailed
    assert "source IP preserved" in summary


def test_json_round_trips_the_whole_schema():
    trace = sim("a", "web")
    data = json.loads(render(trace, "json"))
    assert data["verdict"] == "DELIVERED"
    dnat = next(h for h in data["hops"] if h["action"] == "TRANSLATED")
    assert dnat["k8s_ref"]["service"] == "default/web"
    assert set(dnat) >= {"seq", "node", "netns", "interface", "direction", "stage", "match",
                         "k8s_ref", "action", "before", "after", "encap", "conntrack",
                         "drop_reason", "alternatives"}
    again = Trace.from_dict(data)
    assert again.to_dict() == trace.to_dict()
    assert again.dnat == trace.dnat


@pytest.mark.parametrize(("text", "kind", "ip", "port", "proto"), [
    ("web", "service", "10.96.0.20", 80, "tcp"),
    ("default/web", "service", "10.96.0.20", 80, "tcp"),
    ("10.96.0.20", "service", "10.96.0.20", 80, "tcp"),
    ("10.96.0.20:80", "service", "10.96.0.20", 80, "tcp"),
    ("web.default.svc.cluster.local", "service", "10.96.0.20", 80, "tcp"),
    ("kube-dns.kube-system", "service", "10.96.0.10", 53, "udp"),
    ("c", "pod", "10.244.2.2", 8080, "tcp"),
    ("10-244-2-2.default.pod.cluster.local", "pod", "10.244.2.2", 8080, "tcp"),
    ("worker-2:30081", "nodeport", "192.168.10.4", 30081, "tcp"),
    ("10.1.2.3:443", "ip", "10.1.2.3", 443, "tcp"),
])
def test_destinations_resolve_like_kubectl_and_the_cluster_dns(text, kind, ip, port, proto):
    dst = resolve_destination(VIEW, text)
    assert (dst.kind, dst.ip, dst.port, dst.proto) == (kind, ip, port, proto)


def test_unknown_targets_say_what_exists():
    with pytest.raises(TargetError, match="no pod default/nope"):
        resolve_source(VIEW, "nope")
    with pytest.raises(TargetError, match="no Service default/nope"):
        resolve_destination(VIEW, "nope.default.svc.cluster.local")
    with pytest.raises(TargetError, match="has no port 9"):
        resolve_destination(VIEW, "web", port=9)


def test_the_graph_marks_the_trace_path():
    trace = sim("a", "web")
    text = to_text(VIEW, trace)
    assert "* default/web" in text.replace("  ", " ")
    assert f"trace {trace.trace_id} (DELIVERED): default/a ->" in text
    dot = to_dot(VIEW, trace)
    assert dot.startswith('digraph "tr-u"') and "color=red" in dot and "VXLAN vni 1" in dot


def test_pcapng_has_one_interface_per_namespace_device_and_packet_directions():
    from scapy.utils import rdpcap

    from netlab.trace.probe import ProbeId, build

    data = b"\x02" * 12 + b"\x08\x00" + build(sim("a", "c").probe, ProbeId.new())
    out = io.BytesIO()
    writer = PcapngWriter(out, {"ns-a": "pod-a"})
    writer.write(Frame(1.5, "ns-a", "eth0", "egress", data))
    writer.write(Frame(1.6, "ns-w1", "cni0", "ingress", data))
    out.seek(0)
    packets = rdpcap(out)
    assert len(packets) == 2 and bytes(packets[0]) == data
    assert float(packets[1].time) == pytest.approx(1.6)
    assert writer.interfaces == {("ns-a", "eth0"): 0, ("ns-w1", "cni0"): 1}


def test_verdict_values_are_plain_strings_for_assertions():
    assert sim("a", "empty").verdict == "REJECTED"
    assert Verdict.DELIVERED == "DELIVERED"
