"""Live traces from recorded observations: what was captured, counted and tracked decides."""

from __future__ import annotations

from netlab.trace.assemble import Observations, SeenFrame, assemble
from netlab.trace.diff import compare
from netlab.trace.model import Conntrack, DropReason, Encap, FlowTuple, Verdict
from netlab.trace.routing import node_state, pod_state
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab

VIEW = trace_lab.view()
A = VIEW.pods["default/a"]
C = VIEW.pods["default/c"]
D = VIEW.pods["default/d"]
W1, W2 = VIEW.machines["worker-1"], VIEW.machines["worker-2"]
UNDERLAY = VIEW.underlay_netns
SPORT = 41000


def flow(dst: str, dport: int, src: str = A.ip, sport: int = SPORT) -> FlowTuple:
    return FlowTuple("tcp", src, sport, dst, dport)


def frames_to(pod, vip: str | None = None) -> list[SeenFrame]:  # type: ignore[no-untyped-def]
    """The frames a probe from a to `pod` (via `vip` if given) and its answer leave."""
    first = flow(vip or pod.ip, 80 if vip else 8080)
    after = flow(pod.ip, 8080)
    encap = Encap(W1.address, W2.address, 8472, 1, 50000)
    places = [
        (A.netns, "eth0", "egress", first, None),
        (W1.netns, A.host_veth, "ingress", first, None),
        (W1.netns, "cni0", "ingress", first, None),
        (W1.netns, "flannel.1", "egress", after, None),
        (W1.netns, "eth0", "egress", after, encap),
        (UNDERLAY, W1.underlay_port, "ingress", after, encap),
        (UNDERLAY, W2.underlay_port, "egress", after, encap),
        (W2.netns, "eth0", "ingress", after, encap),
        (W2.netns, "flannel.1", "ingress", after, None),
        (W2.netns, "cni0", "egress", after, None),
        (W2.netns, pod.host_veth, "egress", after, None),
        (pod.netns, "eth0", "ingress", after, None),
    ]
    frames = [SeenFrame(i / 1000, ns, dev, way, "probe", f, e)
              for i, (ns, dev, way, f, e) in enumerate(places)]
    reply = FlowTuple("tcp", pod.ip, 8080, A.ip, SPORT)
    back = FlowTuple("tcp", vip or pod.ip, 80 if vip else 8080, A.ip, SPORT)
    encap_back = Encap(W2.address, W1.address, 8472, 1, 50001)
    answer = [
        (pod.netns, "eth0", "egress", reply, None),
        (W2.netns, pod.host_veth, "ingress", reply, None),
        (W2.netns, "flannel.1", "egress", reply, None),
        (W2.netns, "eth0", "egress", reply, encap_back),
        (UNDERLAY, W2.underlay_port, "ingress", reply, encap_back),
        (UNDERLAY, W1.underlay_port, "egress", reply, encap_back),
        (W1.netns, "eth0", "ingress", reply, encap_back),
        (W1.netns, "flannel.1", "ingress", reply, None),
        (W1.netns, A.host_veth, "egress", back, None),
        (A.netns, "eth0", "ingress", back, None),
    ]
    frames += [SeenFrame(0.5 + i / 1000, ns, dev, way, "reply", f, e, "SYN-ACK")
               for i, (ns, dev, way, f, e) in enumerate(answer)]
    return frames


def observations(frames: list[SeenFrame], conntrack=None) -> Observations:  # type: ignore[no-untyped-def]
    nets = {m.netns: node_state(VIEW, m) for m in VIEW.machines.values()}
    nets.update({p.netns: pod_state(VIEW, p) for p in VIEW.pods.values()})
    return Observations(frames=frames, nets=nets, rulesets=trace_lab.rulesets(),
                        deltas={}, conntrack=conntrack or {}, listeners={})


def live(dst: str, obs: Observations):  # type: ignore[no-untyped-def]
    src = resolve_source(VIEW, "a")
    destination = resolve_destination(VIEW, dst)
    return assemble(VIEW, src, destination, flow(destination.ip, destination.port), obs), \
        simulate(VIEW, trace_lab.rulesets(), src, destination, sport=SPORT)


def test_a_fully_captured_clusterip_trace_agrees_with_its_simulated_twin():
    trace, twin = live("web", observations(frames_to(C, vip="10.96.0.20")))
    assert trace.verdict == Verdict.DELIVERED
    assert trace.mode == "live"
    assert compare(twin, trace) == []
    assert trace.minimal == twin.minimal
    assert "captured" in trace.hops[0].evidence
    assert trace.encap is not None and trace.encap.sport == 50000  # the real flow hash
    assert trace.hops[-1].evidence == ("SYN-ACK sent",)
    assert any("answer at the source" in n for n in trace.notes)


def test_conntrack_says_which_endpoint_the_random_rule_chose():
    vip = "10.96.0.21"
    entry = Conntrack("SYN_SENT", flow(vip, 80), FlowTuple("tcp", D.ip, 8080, A.ip, SPORT),
                      status=("DST_NAT",))
    obs = observations(frames_to(D, vip=vip), {"worker-1": [entry]})
    trace, _ = live("two", obs)
    assert trace.dnat is not None and trace.dnat.after.dst == D.ip
    assert trace.dnat.conntrack == entry
    assert trace.delivered_to == "pod default/d"
    assert [a.endpoint for a in trace.dnat.alternatives] == [f"{C.ip}:8080"]


def test_a_probe_that_vanishes_ends_the_trace_where_it_was_last_seen():
    frames = [f for f in frames_to(C) if f.netns not in (UNDERLAY, W2.netns, C.netns)
              and not (f.ifname == "eth0" and f.netns == W1.netns)]
    trace, _ = live("c", observations([f for f in frames if f.kind == "probe"]))
    assert trace.verdict == Verdict.TIMEOUT
    assert "never seen on worker-1 eth0" in trace.reason


def test_a_rejected_probe_reports_the_icmp_error_that_came_back():
    first = flow("10.96.0.23", 80)
    frames = [SeenFrame(0.0, A.netns, "eth0", "egress", "probe", first),
              SeenFrame(0.1, W1.netns, A.host_veth, "ingress", "probe", first),
              SeenFrame(0.2, A.netns, "eth0", "ingress", "icmp-error",
                        FlowTuple("icmp", W1.bridge_address or "", 0, A.ip, 0), None,
                        "port-unreachable")]
    trace, _ = live("empty", observations(frames))
    assert trace.verdict == Verdict.REJECTED
    assert trace.drop_reason == DropReason.NO_ENDPOINTS
    assert "answer at the source: ICMP port-unreachable from 10.244.1.1" in trace.notes


def test_probe_frames_off_the_explained_path_are_pointed_out():
    stray = SeenFrame(0.05, VIEW.machines["control-plane"].netns, "eth0", "ingress", "probe",
                      flow(C.ip, 8080))
    trace, _ = live("c", observations(frames_to(C) + [stray]))
    assert trace.verdict == Verdict.DELIVERED
    assert any("off the explained path" in n and "control-plane" in n for n in trace.notes)


def test_a_kernel_route_the_model_lacks_shows_up_in_the_diff():
    obs = observations(frames_to(C))
    broken = obs.nets[W1.netns]
    broken.routes = [r for r in broken.routes if r.dst != W2.pod_cidr]
    trace, twin = live("c", obs)
    assert trace.verdict != Verdict.DELIVERED
    differences = compare(twin, trace)
    route = next(d for d in differences if d.key.startswith("worker-1/root route"))
    assert (route.field, route.simulated) == ("interface", "flannel.1")
    assert any(d.field == "path" and "vxlan:encap" in d.simulated for d in differences)
    assert any(d.field == "verdict" for d in differences)
