"""MTU drops: a probe of `size` bytes with DF set, against every device's MTU on the way."""

from __future__ import annotations

import pytest

from netlab.errors import NetlabError
from netlab.trace import probe as probes
from netlab.trace.assemble import Observations, SeenFrame, assemble
from netlab.trace.model import Action, DropReason, FlowTuple, Verdict
from netlab.trace.routing import node_state, pod_state
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab
from tests.unit.test_trace_assemble import SPORT, W1, A, C

VIEW = trace_lab.view()
FIRST = FlowTuple("tcp", A.ip, SPORT, C.ip, 8080)


def sim(size: int | None, src: str = "a", dst: str = "c"):  # type: ignore[no-untyped-def]
    return simulate(VIEW, trace_lab.rulesets(), resolve_source(VIEW, src),
                    resolve_destination(VIEW, dst), size=size)


def live(frames: list[SeenFrame], size: int, pod_mtu: int = 1500, veth_mtu: int = 1500,
         node_mtu: dict[str, int] | None = None, **obs):  # type: ignore[no-untyped-def]
    """A probe from pod a whose eth0 (and host-side veth) were set to another MTU."""
    nets = {m.netns: node_state(VIEW, m) for m in VIEW.machines.values()}
    nets.update({p.netns: pod_state(VIEW, p) for p in VIEW.pods.values()})
    nets[A.netns].mtu["eth0"] = pod_mtu
    nets[W1.netns].mtu[A.host_veth] = veth_mtu
    nets[W1.netns].mtu.update(node_mtu or {})
    observed = Observations(frames=frames, nets=nets, rulesets=trace_lab.rulesets(), **obs)
    src, dst = resolve_source(VIEW, "a"), resolve_destination(VIEW, "c")
    return assemble(VIEW, src, dst, FIRST, observed, size=size)


def probe_at(t: float, netns: str, dev: str, direction: str) -> SeenFrame:
    return SeenFrame(t, netns, dev, direction, "probe", FIRST)


@pytest.mark.parametrize(("proto", "dport", "size"), [
    ("tcp", 80, None), ("tcp", 80, 1456), ("udp", 8081, None), ("udp", 8081, 1472),
    ("icmp", 0, None), ("icmp", 0, 1472), ("udp", 53, None)])
def test_the_computed_length_is_the_length_of_the_probe_sent(proto: str, dport: int,
                                                              size: int | None):
    flow = FlowTuple(proto, "10.244.1.2", 40000, "10.244.2.2", dport)
    built = probes.build(flow, probes.ProbeId.new(), "kubernetes.default.svc.cluster.local",
                         size)
    assert probes.packet_length(flow, size, "kubernetes.default.svc.cluster.local") == len(built)
    assert built[6] & 0x40  # DF


def test_sizes_a_probe_cannot_carry_are_refused_with_the_range():
    with pytest.raises(NetlabError, match="payload is 27 to 65507 bytes"):
        probes.check_size(FlowTuple("udp", "a", 1, "b", 8081), 10)
    with pytest.raises(NetlabError, match="DNS probe"):
        probes.check_size(FlowTuple("udp", "a", 1, "b", 53), 500)


def test_a_packet_that_fits_the_pod_mtu_crosses_the_tunnel():
    t = sim(1450 - 44)
    assert t.size == 1450 and t.verdict == Verdict.DELIVERED and t.encapsulated(vni=1)
    assert t.encap is not None and t.encap.mtu == 1450


def test_a_packet_larger_than_the_pod_mtu_is_refused_by_the_sender():
    t = sim(1456)
    assert t.verdict == Verdict.DROPPED and t.drop_reason == DropReason.MTU
    assert t.hops[-1].place == "worker-1/pod:default/a" and "EMSGSIZE" in t.hops[-1].match
    assert t.minimal == ["worker-1/pod:default/a route eth0: DROPPED mtu",
                         "verdict: DROPPED (mtu)"]


def test_a_pod_mtu_above_flannels_gets_icmp_frag_needed_from_its_node():
    frames = [probe_at(0.0, A.netns, "eth0", "egress"),
              probe_at(0.1, W1.netns, A.host_veth, "ingress"),
              probe_at(0.2, W1.netns, "cni0", "ingress"),
              SeenFrame(0.3, W1.netns, A.host_veth, "egress", "icmp-error",
                        FlowTuple("icmp", W1.bridge_address or "", 0, A.ip, 0), None,
                        "frag-needed")]
    t = live(frames, 1500)
    assert t.verdict == Verdict.DROPPED and t.drop_reason == DropReason.MTU
    drop = t.hops[-1]
    assert (drop.place, drop.stage, drop.interface) == ("worker-1/root", "route", "flannel.1")
    assert "ICMP frag-needed captured" in drop.evidence
    assert "does not fit flannel.1 on worker-1 (MTU 1450)" in t.reason


def test_a_pod_mtu_above_its_veth_peers_is_dropped_silently_on_the_veth():
    t = live([probe_at(0.0, A.netns, "eth0", "egress")], 1500, veth_mtu=1450)
    assert t.drop_reason == DropReason.MTU
    assert (t.hops[-1].stage, t.hops[-1].interface) == ("bridge:cni0", A.host_veth)
    assert "drops it silently" in t.reason


def test_the_source_kernel_refusing_the_probe_is_evidence_of_the_drop():
    t = live([], 1500, pod_mtu=1450, send_error="EMSGSIZE")
    assert t.drop_reason == DropReason.MTU
    assert "sendto: EMSGSIZE" in t.hops[-1].evidence


def test_a_probe_captured_beyond_a_device_it_exceeds_is_not_reported_dropped_there():
    t = live([probe_at(0.0, A.netns, "eth0", "egress")], 1500, pod_mtu=1450)
    assert t.hops[0].action == Action.FORWARDED  # the capture wins over the MTU arithmetic
    assert any("captured beyond it" in n for n in t.notes)
    assert t.verdict == Verdict.TIMEOUT


def test_an_outer_packet_larger_than_the_underlay_mtu_is_dropped_at_encapsulation():
    frames = [probe_at(0.0, A.netns, "eth0", "egress"),
              probe_at(0.1, W1.netns, A.host_veth, "ingress"),
              probe_at(0.2, W1.netns, "flannel.1", "egress")]
    t = live(frames, 1500, node_mtu={"flannel.1": 1500})  # flannel.1 as big as eth0
    drop = t.hops[-1]
    assert (drop.stage, drop.drop_reason) == ("vxlan:encap", DropReason.MTU)
    assert "ICMP frag-needed (mtu 1450)" in drop.match
