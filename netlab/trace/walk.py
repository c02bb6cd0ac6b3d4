"""One packet's path through the lab, hop by hop, with every decision asked of an oracle.

The walk knows the lab's plumbing (pod eth0 -> veth -> cni0 -> netfilter ->
route -> flannel.1 -> underlay -> peer node -> veth -> pod) and which netfilter
hooks a packet meets on the way. It does not decide anything itself: routes,
addresses, the rules installed, which endpoint a random rule picked, whether a
device saw the packet and whether a socket listens are questions to an `Oracle`.
The simulator answers from the lab's model; the live trace answers from what the
kernel showed (captures, counters, conntrack, its tables). Same walk, same hops,
so the two can be compared line by line.

A probe of known size is also checked against the MTU of each device it meets
(DF is always set): where it does not fit, the walk ends with DROPPED mtu, in
the way the kernel drops it there (EMSGSIZE for the sender, ICMP frag-needed
when forwarding or encapsulating, silently on a veth or bridge port). The
answer's way back is the same walk with conntrack in place of NAT (reply.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from netlab.node.cni import BRIDGE
from netlab.trace.decisions import (
    describe,
    drop_reason,
    service_in_comment,
    service_of_chains,
    verdict_reason,
)
from netlab.trace.hooks import evaluate_point
from netlab.trace.labview import LabView, Machine, PodView
from netlab.trace.model import (
    Action,
    Alternative,
    Conntrack,
    DropReason,
    Encap,
    FlowTuple,
    Hop,
    K8sRef,
    RuleHit,
    Verdict,
)
from netlab.trace.netfilter import HookContext, Outcome, Packet, Ruleset
from netlab.trace.routing import NetState, Route

MAX_HOPS = 64
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
Point = tuple[str, str, str]  # (netns, interface, direction): where a capture sees a packet


@dataclass(frozen=True)
class Seen:
    """What a live oracle captured at one point (a simulation sees everything it predicts)."""

    flow: FlowTuple | None = None
    encap: Encap | None = None


@dataclass(frozen=True)
class SocketAnswer:
    listening: bool | None  # None: cannot tell
    evidence: str = ""


class Oracle(Protocol):
    live: bool

    def net(self, netns: str) -> NetState | None: ...

    def ruleset(self, node: str) -> Ruleset: ...

    def choose(self, node: str, hook: str, outcomes: list[Outcome],
               before: FlowTuple) -> tuple[Outcome, FlowTuple | None, list[str]]:
        """The branch taken, the flow observed after the hook (live) and notes."""
        ...

    def counters(self, node: str, hits: list[RuleHit]) -> list[RuleHit]: ...

    def seen(self, netns: str, iface: str, direction: str,
             kind: str = "probe") -> Seen | None:
        """The probe (or, kind "reply", the answer) captured at this point, consumed."""
        ...

    def mtu_drop(self, beyond: Point) -> tuple[bool, tuple[str, ...]]:
        """A too-big probe at a device: was it dropped there (never seen `beyond`)? Evidence."""
        ...

    def conntrack(self, node: str) -> Conntrack | None: ...

    def socket(self, netns: str, flow: FlowTuple) -> SocketAnswer: ...


@dataclass
class WalkResult:
    hops: list[Hop] = field(default_factory=list)
    verdict: Verdict = Verdict.TIMEOUT
    reason: str = ""
    server_sees: FlowTuple | None = None
    delivered_to: str | None = None
    notes: list[str] = field(default_factory=list)
    end_netns: str | None = None  # where a socket took (or refused) the packet
    drop_reason: DropReason | None = None


class _Stop(Exception):
    """Raised to end the walk once a verdict is known."""


class Walker:
    """Walks the probe from its source; `size` (its IP length) is checked against MTUs."""

    kind = "probe"  # what the captures are asked for

    def __init__(self, view: LabView, oracle: Oracle, size: int = 0) -> None:
        self.view = view
        self.oracle = oracle
        self.size = size
        self.result = WalkResult()
        # node -> [the flow as the node's conntrack first saw it, the flow after its NAT]
        self.bindings: dict[str, list[FlowTuple]] = {}

    # entry points -------------------------------------------------------------------
    def from_pod(self, pod: PodView, flow: FlowTuple) -> WalkResult:
        return self._run(lambda: self._pod_egress(pod, flow))

    def from_machine(self, machine: Machine, flow: FlowTuple) -> WalkResult:
        if machine.is_node:
            return self._run(lambda: self._local_out(machine, Packet(flow)))
        return self._run(lambda: self._ext_egress(machine, flow))

    def _run(self, start: Callable[[], None]) -> WalkResult:
        with contextlib.suppress(_Stop):
            start()
        hops = [replace(h, seq=i + 1) for i, h in enumerate(self.result.hops)]
        self.result.hops = hops
        return self.result

    # helpers ------------------------------------------------------------------------
    def _hop(self, **kw: Any) -> Hop:
        if len(self.result.hops) >= MAX_HOPS:
            self._finish(Verdict.DROPPED, f"more than {MAX_HOPS} hops: a loop?")
        kw.setdefault("evidence", ("model",) if not self.oracle.live else ())
        hop = Hop(seq=0, **kw)
        self.result.hops.append(hop)
        return hop

    def _finish(self, verdict: Verdict, reason: str) -> None:
        self.result.verdict = verdict
        self.result.reason = reason
        self.result.drop_reason = next((h.drop_reason for h in reversed(self.result.hops)
                                        if h.drop_reason), None)
        raise _Stop

    def _check_seen(self, netns: str, iface: str, direction: str, where: str) -> Seen | None:
        """Live: the capture at this point, or end the walk where the packet was lost."""
        seen = self.oracle.seen(netns, iface, direction, self.kind)
        if seen is None and self.oracle.live:
            what = "probe" if self.kind == "probe" else "answer"
            last = self.result.hops[-1].place if self.result.hops else "the start"
            self.result.notes.append(f"{what} not captured on {where} ({iface} {direction})")
            self._finish(Verdict.TIMEOUT,
                         f"{what} last seen at {last}; never seen on {where} {iface}")
        return seen

    # MTU ----------------------------------------------------------------------------
    def _too_big(self, state: NetState | None, dev: str, extra: int = 0) -> int | None:
        """The device's MTU when the probe (plus `extra` header bytes) does not fit it."""
        if not self.size or state is None:
            return None
        mtu = state.mtu.get(dev)
        return mtu if mtu and self.size + extra > mtu else None

    def _mtu_drop(self, mtu: int | None, beyond: Point, how: str, why: str,
                  **hop: Any) -> None:
        """End the walk with DROPPED mtu here, unless a capture shows the packet went on."""
        if mtu is None:
            return
        dropped, evidence = self.oracle.mtu_drop(beyond)
        if not dropped:
            self.result.notes.append(f"{self.size}-byte probe exceeds {beyond[1]}'s MTU "
                                     f"{mtu} but was captured beyond it")
            return
        hop.setdefault("before", hop.get("after"))
        self._hop(action=Action.DROPPED, drop_reason=DropReason.MTU, evidence=evidence,
                  match=how, **hop)
        self._finish(Verdict.DROPPED, why)

    def _state(self, netns: str) -> NetState:
        state = self.oracle.net(netns)
        if state is None:
            self._finish(Verdict.TIMEOUT, f"no network state for {netns}")
        assert state is not None
        return state

    # pods and ext --------------------------------------------------------------------
    def _pod_egress(self, pod: PodView, flow: FlowTuple) -> None:
        node = self.view.machines[pod.node]
        state = self._state(pod.netns)
        route = state.lookup(flow.dst)
        if route is None or route.kind != "unicast":
            self._hop(node=pod.node, netns=pod.netns, pod=pod.key, stage="route",
                      interface="eth0", direction="egress", before=flow, after=flow,
                      action=Action.DROPPED, match=str(route or "no route"),
                      drop_reason=DropReason.NO_ROUTE)
            self._finish(Verdict.DROPPED, f"no route to {flow.dst} in pod {pod.key}")
        assert route is not None
        self._not_sent(pod.node, pod.netns, pod.key, route.dev, route, flow, f"pod {pod.key}")
        seen = self._check_seen(pod.netns, "eth0", "egress", f"pod {pod.key}")
        self._hop(node=pod.node, netns=pod.netns, pod=pod.key, stage="route",
                  interface="eth0", direction="egress", match=str(route), before=flow,
                  after=flow, action=Action.FORWARDED, evidence=self._ev(seen, "kernel route"))
        self._bridge_in(node, pod, Packet(flow), routed=route.gateway is not None)

    def _not_sent(self, node: str, netns: str, pod: str | None, dev: str, route: Route,
                  flow: FlowTuple, who: str) -> None:
        """A locally sent probe larger than its device's MTU: the kernel refuses (EMSGSIZE)."""
        mtu = self._too_big(self.oracle.net(netns), dev)
        self._mtu_drop(
            mtu, (netns, dev, "egress"),
            f"{route}; {self.size}-byte packet > {dev} mtu {mtu}, DF: not sent (EMSGSIZE)",
            f"{self.size}-byte packet does not fit {dev} of {who} (MTU {mtu}) and DF is set: "
            "the kernel refuses to send it (EMSGSIZE)",
            node=node, netns=netns, pod=pod, stage="route", interface=dev,
            direction="egress", after=flow)

    def _ext_egress(self, machine: Machine, flow: FlowTuple) -> None:
        state = self._state(machine.netns)
        route = state.lookup(flow.dst)
        if route is None or route.kind != "unicast":
            self._hop(node=machine.name, netns=machine.netns, stage="route",
                      interface="eth0", direction="egress", before=flow, after=flow,
                      action=Action.DROPPED, match=str(route or "no route"),
                      drop_reason=DropReason.NO_ROUTE)
            self._finish(Verdict.DROPPED, f"no route to {flow.dst} on {machine.name}")
        assert route is not None
        self._not_sent(machine.name, machine.netns, None, route.dev, route, flow, machine.name)
        seen = self._check_seen(machine.netns, route.dev, "egress", machine.name)
        self._hop(node=machine.name, netns=machine.netns, stage="route", interface=route.dev,
                  direction="egress", match=str(route), before=flow, after=flow,
                  action=Action.FORWARDED, evidence=self._ev(seen, "kernel route"))
        self._underlay(machine, Packet(flow), route.gateway or flow.dst, None)

    def _ev(self, seen: Seen | None, *more: str) -> tuple[str, ...]:
        if not self.oracle.live:
            return ("model",)
        return (("captured",) if seen else ()) + more

    # the node -----------------------------------------------------------------------
    def _bridge_in(self, node: Machine, pod: PodView, pkt: Packet, routed: bool) -> None:
        """A frame from a pod's veth into cni0: to the host (routed) or to another port."""
        mtu = self._too_big(self.oracle.net(node.netns), pod.host_veth)
        self._mtu_drop(
            mtu, (node.netns, pod.host_veth, "ingress"),
            f"{self.size}-byte frame > {pod.host_veth} mtu {mtu}: dropped by the veth, "
            "no ICMP",
            f"{self.size}-byte packet from pod {pod.key} is larger than the MTU of its veth "
            f"peer {pod.host_veth} on {node.name} ({mtu}): the veth drops it silently",
            node=node.name, netns=node.netns, stage=f"bridge:{BRIDGE}",
            interface=pod.host_veth, direction="ingress", after=pkt.flow)
        seen = self._check_seen(node.netns, pod.host_veth, "ingress", node.name)
        target = None if routed else self.view.pod_by_ip(pkt.flow.dst)
        match = f"port {pod.host_veth} -> up to host ({BRIDGE} {node.bridge_address})" \
            if routed else f"port {pod.host_veth} -> bridged"
        self._hop(node=node.name, netns=node.netns, stage=f"bridge:{BRIDGE}",
                  interface=pod.host_veth, direction="ingress", match=match,
                  before=pkt.flow, after=pkt.flow, action=Action.FORWARDED,
                  evidence=self._ev(seen))
        if routed or target is None or target.node != node.name:
            self._forward(node, pkt, BRIDGE, from_pod=pod)
        else:
            self._bridged(node, pkt, pod, target)

    def _bridged(self, node: Machine, pkt: Packet, src: PodView, dst: PodView) -> None:
        """Same subnet, same bridge: L2 forwarding, with br_netfilter's iptables hooks."""
        pkt = self._hook(node, "nat", "PREROUTING", pkt, BRIDGE, None)
        pkt = self._hook(node, "filter", "FORWARD", pkt, BRIDGE, BRIDGE)
        pkt = self._hook(node, "nat", "POSTROUTING", pkt, BRIDGE, BRIDGE)
        self._bridge_out(node, pkt, src)

    def _forward(self, node: Machine, pkt: Packet, iif: str, from_pod: PodView | None) -> None:
        """A packet arriving at the node's IP layer: PREROUTING, route, FORWARD or INPUT."""
        pkt = self._hook(node, "nat", "PREROUTING", pkt, iif, None)
        state = self._state(node.netns)
        route = state.lookup(pkt.flow.dst)
        if route is None or route.kind in ("unreachable", "blackhole", "prohibit"):
            self._hop(node=node.name, netns=node.netns, stage="route", before=pkt.flow,
                      after=pkt.flow, match=str(route or f"no route to {pkt.flow.dst}"),
                      action=Action.DROPPED, drop_reason=DropReason.NO_ROUTE,
                      evidence=self._ev(None, "kernel route"))
            self._finish(Verdict.DROPPED, f"no route to {pkt.flow.dst} on {node.name}")
        assert route is not None
        mtu = None if route.kind == "local" else self._too_big(state, route.dev)
        self._mtu_drop(
            mtu, (node.netns, route.dev, "egress"),
            f"{route}; {self.size}-byte packet > {route.dev} mtu {mtu}, DF: ICMP frag-needed",
            f"{self.size}-byte packet does not fit {route.dev} on {node.name} (MTU {mtu}) and "
            f"DF is set: dropped, ICMP frag-needed (mtu {mtu}) to {pkt.flow.src}",
            node=node.name, netns=node.netns, stage="route", interface=route.dev,
            after=pkt.flow)
        self._hop(node=node.name, netns=node.netns, stage="route", before=pkt.flow,
                  after=pkt.flow, match=str(route), action=Action.FORWARDED,
                  interface=route.dev, evidence=self._ev(None, "kernel route"))
        if route.kind == "local":
            pkt = self._local_in(node, pkt, iif)
            self._socket(node.name, node.netns, None, pkt.flow, f"node {node.name}")
            return
        pkt = self._hook(node, "filter", "FORWARD", pkt, iif, route.dev)
        pkt = self._hook(node, "nat", "POSTROUTING", pkt, iif, route.dev,
                         state.primary_address(route.dev))
        self._egress(node, pkt, route, state, from_pod)

    def _local_out(self, node: Machine, pkt: Packet) -> None:
        """A packet the node itself sends (hostNetwork client): OUTPUT, route, POSTROUTING."""
        state = self._state(node.netns)
        pkt = self._hook(node, "nat", "OUTPUT", pkt, None, None)
        route = state.lookup(pkt.flow.dst)
        if route is None or route.kind != "unicast":
            if route is not None and route.kind == "local":
                self._hop(node=node.name, netns=node.netns, stage="route", before=pkt.flow,
                          after=pkt.flow, match=str(route), action=Action.FORWARDED,
                          interface=route.dev, evidence=self._ev(None, "kernel route"))
                pkt = self._hook(node, "filter", "OUTPUT", pkt, None, "lo")
                self._socket(node.name, node.netns, None, pkt.flow, f"node {node.name}")
                return
            self._hop(node=node.name, netns=node.netns, stage="route", before=pkt.flow,
                      after=pkt.flow, match=str(route or f"no route to {pkt.flow.dst}"),
                      action=Action.DROPPED, drop_reason=DropReason.NO_ROUTE)
            self._finish(Verdict.DROPPED, f"no route to {pkt.flow.dst} on {node.name}")
        assert route is not None
        self._not_sent(node.name, node.netns, None, route.dev, route, pkt.flow,
                       f"node {node.name}")
        self._hop(node=node.name, netns=node.netns, stage="route", before=pkt.flow,
                  after=pkt.flow, match=str(route), action=Action.FORWARDED,
                  interface=route.dev, evidence=self._ev(None, "kernel route"))
        pkt = self._hook(node, "filter", "OUTPUT", pkt, None, route.dev)
        pkt = self._hook(node, "nat", "POSTROUTING", pkt, None, route.dev,
                         state.primary_address(route.dev))
        self._egress(node, pkt, route, state, None)

    def _local_in(self, node: Machine, pkt: Packet, iif: str | None) -> Packet:
        """Local delivery on a node: filter INPUT (the reply walk also undoes DNAT here)."""
        return self._hook(node, "filter", "INPUT", pkt, iif, None)

    def _egress(self, node: Machine, pkt: Packet, route: Route, state: NetState,
                from_pod: PodView | None) -> None:
        if route.dev == BRIDGE:
            self._bridge_out(node, pkt, from_pod)
        elif route.dev == self.view.vxlan_device:
            self._vxlan_out(node, pkt, route, state)
        else:
            seen = self._check_seen(node.netns, route.dev, "egress", node.name)
            self._hop(node=node.name, netns=node.netns, stage="egress", interface=route.dev,
                      direction="egress", before=pkt.flow, after=self._flow(seen, pkt.flow),
                      match=f"out {route.dev}", action=Action.FORWARDED,
                      evidence=self._ev(seen))
            self._underlay(node, pkt, route.gateway or pkt.flow.dst, None)

    def _bridge_out(self, node: Machine, pkt: Packet, from_pod: PodView | None) -> None:
        target = self.view.pod_by_ip(pkt.flow.dst)
        if target is None or target.node != node.name:
            self._hop(node=node.name, netns=node.netns, stage=f"bridge:{BRIDGE}",
                      interface=BRIDGE, direction="egress", before=pkt.flow, after=pkt.flow,
                      match=f"no pod has {pkt.flow.dst} on {node.name}",
                      action=Action.DROPPED, drop_reason=DropReason.NO_NEIGHBOUR)
            self._finish(Verdict.DROPPED, f"nobody answers ARP for {pkt.flow.dst} on "
                                          f"{BRIDGE} of {node.name}")
        assert target is not None
        for netns, dev, where in ((node.netns, target.host_veth, "egress"),
                                  (target.netns, "eth0", "ingress")):
            mtu = self._too_big(self.oracle.net(netns), dev)
            self._mtu_drop(
                mtu, (netns, dev, where),
                f"{self.size}-byte frame > {dev} mtu {mtu}: dropped, no ICMP",
                f"{self.size}-byte packet is larger than the MTU of {dev} "
                f"({'pod ' + target.key if netns == target.netns else node.name}, {mtu}): "
                "dropped silently on the way to the pod",
                node=node.name, netns=node.netns, stage=f"bridge:{BRIDGE}",
                interface=target.host_veth, direction="egress", after=pkt.flow)
        seen = self._check_seen(node.netns, target.host_veth, "egress", node.name)
        hairpin = from_pod is not None and from_pod.host_veth == target.host_veth
        match = f"{BRIDGE} -> port {target.host_veth}" + (" (hairpin)" if hairpin else "")
        self._hop(node=node.name, netns=node.netns, stage=f"bridge:{BRIDGE}",
                  interface=target.host_veth, direction="egress", match=match,
                  before=pkt.flow, after=self._flow(seen, pkt.flow), action=Action.FORWARDED,
                  evidence=self._ev(seen))
        flow = self._flow(seen, pkt.flow)
        pod_seen = self._check_seen(target.netns, "eth0", "ingress", f"pod {target.key}")
        self._socket(target.node, target.netns, target, self._flow(pod_seen, flow),
                     f"pod {target.key}")

    def _vxlan_out(self, node: Machine, pkt: Packet, route: Route, state: NetState) -> None:
        device = self.view.vxlan_device
        gateway = route.gateway or pkt.flow.dst
        mac = state.neighbours.get((device, gateway))
        remote = state.fdb.get((device, mac)) if mac else None
        if remote is None:
            self._hop(node=node.name, netns=node.netns, stage="vxlan:encap", interface=device,
                      direction="egress", before=pkt.flow, after=pkt.flow,
                      match=f"no neighbour/FDB entry for {gateway} on {device}",
                      action=Action.DROPPED, drop_reason=DropReason.NO_NEIGHBOUR)
            self._finish(Verdict.DROPPED, f"{device} on {node.name} has no VTEP for {gateway}")
        assert remote is not None
        mtu = self._too_big(state, "eth0", VXLAN_OVERHEAD)
        self._mtu_drop(
            mtu, (node.netns, "eth0", "egress"),
            f"{self.size}+{VXLAN_OVERHEAD}-byte outer packet > eth0 mtu {mtu}: ICMP "
            f"frag-needed (mtu {(mtu or 0) - VXLAN_OVERHEAD})",
            f"{self.size}-byte packet plus VXLAN's {VXLAN_OVERHEAD} bytes does not fit eth0 of "
            f"{node.name} (MTU {mtu}), and DF is set: {device} drops it and answers ICMP "
            f"frag-needed (mtu {(mtu or 0) - VXLAN_OVERHEAD})",
            node=node.name, netns=node.netns, stage="vxlan:encap", interface=device,
            direction="egress", after=pkt.flow)
        self._check_seen(node.netns, device, "egress", node.name)
        outer = self._check_seen(node.netns, "eth0", "egress", node.name)
        encap = outer.encap if outer and outer.encap else Encap(
            node.address, remote, self.view.config.vxlan_port, self.view.config.vxlan_vni)
        encap = replace(encap, mtu=state.mtu.get(device))
        self._hop(node=node.name, netns=node.netns, stage="vxlan:encap", interface=device,
                  direction="egress", before=pkt.flow, after=self._flow(outer, pkt.flow),
                  encap=encap, action=Action.ENCAP,
                  match=f"neigh {gateway} lladdr {mac}; fdb {mac} dst {remote}",
                  evidence=self._ev(outer))
        self._underlay(node, pkt, encap.outer_dst, encap)

    def _underlay(self, sender: Machine, pkt: Packet, next_hop: str,
                  encap: Encap | None) -> None:
        target = self.view.machine_by_ip(next_hop)
        netns = self.view.underlay_netns
        self._check_seen(netns, sender.underlay_port, "ingress", "the underlay")
        if target is None:
            why = ("the underlay gateway does not forward" if next_hop ==
                   self.view.underlay_gateway else f"no machine has {next_hop}")
            self._hop(node="underlay", netns=netns, stage="underlay", interface="br-underlay",
                      before=pkt.flow, after=pkt.flow, encap=encap, action=Action.DROPPED,
                      match=f"{sender.underlay_port} -> ? ({why})",
                      drop_reason=DropReason.NO_NEIGHBOUR)
            self._finish(Verdict.DROPPED, f"{why} ({pkt.flow.dst})")
        assert target is not None
        mtu = self._too_big(self.oracle.net(target.netns), "eth0",
                            VXLAN_OVERHEAD if encap else 0)
        self._mtu_drop(
            mtu, (target.netns, "eth0", "ingress"),
            f"{self.size}-byte packet > eth0 mtu {mtu} of {target.name}: dropped, no ICMP",
            f"the packet is larger than the MTU of {target.name}'s eth0 ({mtu}): the veth "
            "drops it silently", node="underlay", netns=netns, stage="underlay",
            interface="br-underlay", encap=encap, after=pkt.flow)
        seen = self._check_seen(netns, target.underlay_port, "egress", "the underlay")
        self._hop(node="underlay", netns=netns, stage="underlay", interface="br-underlay",
                  before=pkt.flow, after=pkt.flow, encap=encap, action=Action.FORWARDED,
                  match=f"{sender.underlay_port} -> {target.underlay_port} ({target.name})",
                  evidence=self._ev(seen))
        if not target.is_node:
            self._check_seen(target.netns, "eth0", "ingress", target.name)
            self._socket(target.name, target.netns, None, pkt.flow, target.name)
            return
        outer = self._check_seen(target.netns, "eth0", "ingress", target.name)
        if encap is None:
            self._hop(node=target.name, netns=target.netns, stage="ingress", interface="eth0",
                      direction="ingress", before=pkt.flow, after=pkt.flow,
                      match=f"from {sender.name}", action=Action.FORWARDED,
                      evidence=self._ev(outer))
            self._forward(target, pkt, "eth0", None)
            return
        device = self.view.vxlan_device
        inner = self._check_seen(target.netns, device, "ingress", target.name)
        self._hop(node=target.name, netns=target.netns, stage="vxlan:decap", interface=device,
                  direction="ingress", before=pkt.flow, after=self._flow(inner, pkt.flow),
                  encap=encap, action=Action.DECAP,
                  match=f"vni {encap.vni} from {encap.outer_src}", evidence=self._ev(inner))
        self._forward(target, Packet(self._flow(inner, pkt.flow)), device, None)

    @staticmethod
    def _flow(seen: Seen | None, default: FlowTuple) -> FlowTuple:
        return seen.flow if seen and seen.flow else default

    # netfilter ------------------------------------------------------------------------
    def _hook(self, node: Machine, table: str, hook: str, pkt: Packet, iif: str | None,
              oif: str | None, masq: str | None = None) -> Packet:
        ruleset = self.oracle.ruleset(node.name)
        state = self._state(node.netns)
        ctx = HookContext(state.is_local, iif, oif, masq, ruleset.recent)
        outcomes = evaluate_point(ruleset, table, hook, pkt, ctx)
        chosen, observed, notes = self.oracle.choose(node.name, f"{table}/{hook}", outcomes,
                                                     pkt.flow)
        self.result.notes.extend(n for n in notes + chosen.notes if n not in self.result.notes)
        after = replace(chosen.packet, flow=observed) if observed else chosen.packet
        hits = self.oracle.counters(node.name, chosen.hits)
        decisive = chosen.decisive if chosen.hits else None
        k8s = self._k8s_ref(decisive, hits, after.flow if chosen.nat == "DNAT" else None)
        action = Action.FORWARDED
        drop = None
        if chosen.verdict == "REJECT":
            action, drop = Action.REJECTED, drop_reason(hits)
        elif chosen.verdict == "DROP":
            action, drop = Action.DROPPED, drop_reason(hits)
        elif chosen.nat:
            action = Action.TRANSLATED
        alternatives = tuple(
            Alternative(o.packet.flow.destination, round(o.probability, 4),
                        self._k8s_ref(o.decisive, o.hits, o.packet.flow))
            for o in outcomes if o is not chosen and o.nat == "DNAT")
        match = describe(chosen, pkt.flow, after.flow)
        evidence: tuple[str, ...] = ("rules",)
        if self.oracle.live:
            counted = [h for h in hits if h.counter is not None]  # map elements have none
            confirmed = [h for h in counted if h.counter]
            evidence = (f"counters +{len(confirmed)}/{len(counted)} rules",) if counted else ()
        ct = self.oracle.conntrack(node.name) if chosen.nat else None
        if ct is None and chosen.nat and not self.oracle.live:
            ct = Conntrack("NEW", pkt.flow, after.flow.reverse(), after.mark,
                           ("DST_NAT",) if chosen.nat == "DNAT" else ("SRC_NAT",))
        if ct is not None and self.oracle.live:
            evidence += ("conntrack",)
        self._hop(node=node.name, netns=node.netns, stage=f"netfilter:{table}/{hook}",
                  before=pkt.flow, after=after.flow, match=match, k8s_ref=k8s, action=action,
                  drop_reason=drop, alternatives=alternatives, rules=tuple(hits),
                  conntrack=ct, evidence=evidence, interface=iif if hook in (
                      "PREROUTING", "INPUT") else oif)
        binding = self.bindings.setdefault(node.name, [pkt.flow, pkt.flow])
        binding[1] = after.flow
        if chosen.verdict == "REJECT":
            self._finish(Verdict.REJECTED, verdict_reason(hits, chosen.reject_with))
        if chosen.verdict == "DROP":
            self._finish(Verdict.DROPPED, verdict_reason(hits, None))
        return after

    def _k8s_ref(self, decisive: RuleHit | None, hits: list[RuleHit],
                 endpoint: FlowTuple | None) -> K8sRef | None:
        """The Service port named in the rules' comments and the endpoint the DNAT chose."""
        service = port_name = None
        for hit in hits:
            found = service_in_comment(hit.comment) or service_of_chains(hit)
            if found:
                service, port_name = found
                break
        if service is None:
            return None
        ns, name = service.split("/", 1)
        svc = self.view.service(ns, name)
        port = protocol = None
        if svc is not None:
            for p in (svc.get("spec") or {}).get("ports") or []:
                if (p.get("name") or "") == (port_name or ""):
                    port, protocol = p.get("port"), p.get("protocol", "TCP")
        ref = K8sRef(service=service, port_name=port_name or "", port=port,
                     protocol=protocol or "TCP")
        if endpoint is None:
            return ref
        entry = self.view.endpoint_entry(ns, name, endpoint.dst)
        pod = self.view.pod_by_ip(endpoint.dst)
        return replace(ref, endpoint=endpoint.destination,
                       endpointslice=entry[0] if entry else None,
                       endpoint_index=entry[1] if entry else None,
                       pod=pod.key if pod else None, node=pod.node if pod else None)

    # the end ------------------------------------------------------------------------
    def _socket(self, node: str, netns: str, pod: PodView | None, flow: FlowTuple,
                who: str) -> None:
        answer = self.oracle.socket(netns, flow)
        port = "" if flow.proto == "icmp" else f":{flow.dport}"
        self.result.server_sees = flow
        self.result.end_netns = netns
        if answer.listening is False:
            self._hop(node=node, netns=netns, pod=pod.key if pod else None, stage="socket",
                      interface="eth0", direction="ingress", before=flow, after=flow,
                      match=f"nothing listens on {flow.proto}{port}", action=Action.DROPPED,
                      drop_reason=DropReason.NO_LISTENER,
                      evidence=(answer.evidence,) if answer.evidence else ("model",))
            self._finish(Verdict.DROPPED, f"no listener on {flow.proto}{port} in {who}")
        what = "echo reply" if flow.proto == "icmp" else f"{flow.proto}{port} listening"
        self._hop(node=node, netns=netns, pod=pod.key if pod else None, stage="socket",
                  interface="eth0", direction="ingress", before=flow, after=flow, match=what,
                  action=Action.DELIVERED,
                  evidence=(answer.evidence,) if answer.evidence else ("model",))
        self.result.delivered_to = who
        self._finish(Verdict.DELIVERED, f"{who} received {flow}")

