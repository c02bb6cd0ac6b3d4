"""Simulated traces: the walk answered from the lab's model and the installed rules.

Like ovn-trace, nothing is sent. Routes, addresses and VXLAN entries are what
flannel and the CNI plugin should have programmed for the lab's nodes and pods
(routing.node_state); the netfilter rules are each node's real iptables-save
text, evaluated. A random endpoint choice takes `endpoint` if given, else the
first endpoint, and lists the others as alternatives with their probability.
"""

from __future__ import annotations

import secrets

from netlab.trace.labview import LabView
from netlab.trace.model import Conntrack, FlowTuple, RuleHit, Trace, Verdict
from netlab.trace.netfilter import Outcome, Ruleset
from netlab.trace.routing import NetState, node_state, pod_state
from netlab.trace.targets import Destination, Source
from netlab.trace.walk import Oracle, Point, Seen, SocketAnswer, Walker, WalkResult

SIMULATED_SPORT = 40000  # stands in for the ephemeral port a real client would get


class ModelOracle:
    """Answers the walk's questions from the model; sees every point it predicts."""

    live = False

    def __init__(self, view: LabView, rulesets: dict[str, Ruleset],
                 endpoint: str | None = None) -> None:
        self.view = view
        self.rulesets = rulesets
        self.endpoint = endpoint

    def net(self, netns: str) -> NetState | None:
        machine = self.view.machine_by_netns(netns)
        if machine is not None:
            return node_state(self.view, machine)
        pod = self.view.pod_by_netns(netns)
        return pod_state(self.view, pod) if pod is not None else None

    def ruleset(self, node: str) -> Ruleset:
        return self.rulesets.get(node) or Ruleset()

    def choose(self, node: str, hook: str, outcomes: list[Outcome],
               before: FlowTuple) -> tuple[Outcome, FlowTuple | None, list[str]]:
        del node, hook, before
        dnat = [o for o in outcomes if o.nat == "DNAT"]
        if self.endpoint and dnat:
            wanted = [o for o in dnat if self.endpoint in (o.packet.flow.destination,
                                                           o.packet.flow.dst)]
            if wanted:
                return wanted[0], None, []
        notes = []
        if len(dnat) > 1:
            notes.append(f"the model picked endpoint {outcomes[0].packet.flow.destination} "
                         f"of {len(dnat)}; --endpoint IP[:PORT] picks another")
        return outcomes[0], None, notes

    def counters(self, node: str, hits: list[RuleHit]) -> list[RuleHit]:
        del node
        return hits

    def seen(self, netns: str, iface: str, direction: str,
             kind: str = "probe") -> Seen | None:
        del netns, iface, direction, kind
        return Seen()

    def mtu_drop(self, beyond: Point) -> tuple[bool, tuple[str, ...]]:
        del beyond
        return True, ("model",)

    def conntrack(self, node: str) -> Conntrack | None:
        del node
        return None

    def socket(self, netns: str, flow: FlowTuple) -> SocketAnswer:
        pod = self.view.pod_by_netns(netns)
        if flow.proto == "icmp":
            return SocketAnswer(True, "model: the kernel answers echo requests")
        if pod is None:
            return SocketAnswer(None, "model: listeners outside pods are not modelled")
        return SocketAnswer(pod.listens(flow.proto, flow.dport), "model: pod spec")


def probe_flow(src: Source, dst: Destination, net: NetState, sport: int) -> FlowTuple:
    """The probe's first tuple: the source's address toward DST and the chosen port."""
    if src.pod is not None:
        ip = src.pod.ip
    else:
        ip = net.source_for(dst.ip) or (src.machine.address if src.machine else "0.0.0.0")
    return FlowTuple(dst.proto, ip, sport, dst.ip, dst.port)


def walk(view: LabView, oracle: Oracle, src: Source, flow: FlowTuple,
         size: int = 0) -> tuple[WalkResult, WalkResult | None]:
    """The probe's walk and, when something answers it, the answer's walk back."""
    from netlab.trace.reply import walk_reply

    walker = Walker(view, oracle, size)
    if src.pod is not None:
        result = walker.from_pod(src.pod, flow)
    else:
        assert src.machine is not None
        result = walker.from_machine(src.machine, flow)
    return result, walk_reply(view, oracle, walker, flow)


def make_trace(mode: str, src: Source, dst: Destination, flow: FlowTuple,
               result: WalkResult, trace_id: str | None = None,
               reply: WalkResult | None = None, size: int = 0) -> Trace:
    notes = list(result.notes)
    if reply is not None:
        notes += [n for n in reply.notes if n not in notes]
    return Trace(trace_id=trace_id or new_trace_id(), mode=mode,
                 source=src.describe(flow.src), destination=dst.description, probe=flow,
                 hops=result.hops, verdict=result.verdict, reason=result.reason,
                 server_sees=result.server_sees if result.verdict == Verdict.DELIVERED
                 else None,
                 delivered_to=result.delivered_to, notes=notes, size=size,
                 reply=reply.hops if reply else [],
                 reply_verdict=reply.verdict if reply else None,
                 reply_reason=reply.reason if reply else "")


def new_trace_id() -> str:
    return "nl-" + secrets.token_hex(2)


def simulate(view: LabView, rulesets: dict[str, Ruleset], src: Source, dst: Destination, *,
             sport: int = SIMULATED_SPORT, endpoint: str | None = None,
             trace_id: str | None = None, size: int | None = None) -> Trace:
    """The trace the model predicts, from `rulesets` (node name -> its installed rules).

    `size` is the probe's payload in bytes (None: the live probe's default).
    """
    from netlab.trace.probe import packet_length

    oracle = ModelOracle(view, rulesets, endpoint)
    net = oracle.net(src.netns) or NetState()
    flow = probe_flow(src, dst, net, 0 if dst.proto == "icmp" and sport == SIMULATED_SPORT
                      else sport)
    length = packet_length(flow, size, view_dns_name(view))
    result, reply = walk(view, oracle, src, flow, length)
    return make_trace("simulated", src, dst, flow, result, trace_id, reply, length)


def view_dns_name(view: LabView) -> str:
    """The name a DNS probe asks for: the `kubernetes` Service, always there."""
    return f"kubernetes.default.svc.{view.config.cluster_domain}"
