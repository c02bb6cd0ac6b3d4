"""The answer's way back: from the socket that took the probe to the client, hop by hop.

The same walk as the probe's (the same plumbing, routes, tunnel and bridge), with
what changes for an answer: the NAT tables are not consulted again, conntrack
undoes what the first packet's NAT did instead. On each node that translated the
probe, the answer is recognised as the reply of that connection and

* at a destination-NAT point (PREROUTING, or OUTPUT for a node's own answer) the
  masquerade is undone: the destination goes back to the client's address;
* at a source-NAT point (POSTROUTING, or INPUT when the client is the node itself)
  the DNAT is undone: the source becomes the Service address the client dialled.

The filter hooks still run (the answer is ESTABLISHED there) and are reported
only when they stop it. A live reply walk follows the answer through the
captures as the probe's walk follows the probe, so an answer lost on the way
back (asymmetric routing, a conntrack entry on the wrong node) ends it there.
"""

from __future__ import annotations

from dataclasses import replace

from netlab.trace.labview import LabView, Machine, PodView
from netlab.trace.model import Action, Conntrack, DropReason, FlowTuple, Verdict
from netlab.trace.netfilter import Packet
from netlab.trace.walk import Oracle, Walker, WalkResult

# Where conntrack applies each kind of reverse translation to an answer.
UNDO_SNAT = ("PREROUTING", "OUTPUT")  # destination-manipulating hooks
UNDO_DNAT = ("POSTROUTING", "INPUT")  # source-manipulating hooks


def _unsnat(answer: FlowTuple, orig: FlowTuple) -> FlowTuple:
    if answer.proto == "icmp":
        return FlowTuple("icmp", answer.src, orig.sport, orig.src, 0)
    return answer.with_dst(orig.src, orig.sport)


def _undnat(answer: FlowTuple, orig: FlowTuple) -> FlowTuple:
    if answer.proto == "icmp":
        return FlowTuple("icmp", orig.dst, answer.sport, answer.dst, 0)
    return answer.with_src(orig.dst, orig.dport)


class ReplyWalker(Walker):
    kind = "reply"

    def __init__(self, view: LabView, oracle: Oracle, bindings: dict[str, list[FlowTuple]],
                 probe: FlowTuple) -> None:
        super().__init__(view, oracle)
        self.forward = bindings  # node -> [orig, after NAT], from the probe's walk
        self.probe = probe
        self.matched: set[str] = set()  # nodes where the answer was recognised

    def _binding(self, node: str, flow: FlowTuple) -> list[FlowTuple] | None:
        """The probe's connection on this node, if `flow` is its answer."""
        binding = self.forward.get(node)
        if binding is None:
            return None
        if node not in self.matched and flow == binding[1].reverse():
            self.matched.add(node)
        return binding if node in self.matched else None

    def _hook(self, node: Machine, table: str, hook: str, pkt: Packet, iif: str | None,
              oif: str | None, masq: str | None = None) -> Packet:
        pkt = replace(pkt, established=True)
        if table == "nat":
            return self._undo_nat(node, hook, pkt)
        return self._filter(node, table, hook, pkt, iif, oif)

    def _undo_nat(self, node: Machine, hook: str, pkt: Packet) -> Packet:
        binding = self._binding(node.name, pkt.flow)
        if binding is None:
            return pkt
        orig, final = binding
        after, what, match = pkt.flow, "", ""
        if hook in UNDO_SNAT and (orig.src, orig.sport) != (final.src, final.sport):
            after, what = _unsnat(pkt.flow, orig), "un-SNAT"
            match = f"{what} {pkt.flow.destination} -> {after.destination} (conntrack)"
        elif hook in UNDO_DNAT and (orig.dst, orig.dport) != (final.dst, final.dport):
            after, what = _undnat(pkt.flow, orig), "un-DNAT"
            match = f"{what} {pkt.flow.source} -> {after.source} (conntrack)"
        if not what:
            return pkt
        ct = self.oracle.conntrack(node.name)
        if ct is None and not self.oracle.live:
            status = tuple(s for s, done in (("SRC_NAT", orig.src != final.src),
                                             ("DST_NAT", orig.dst != final.dst)) if done)
            ct = Conntrack("ESTABLISHED", orig, final.reverse(), 0, status)
        evidence = ("conntrack",) if ct is not None and self.oracle.live else ("model",) \
            if not self.oracle.live else ()
        self._hop(node=node.name, netns=node.netns, stage=f"netfilter:nat/{hook}",
                  before=pkt.flow, after=after, match=match, action=Action.TRANSLATED,
                  conntrack=ct, evidence=evidence)
        return replace(pkt, flow=after)

    def _filter(self, node: Machine, table: str, hook: str, pkt: Packet, iif: str | None,
                oif: str | None) -> Packet:
        """Filter rules see the answer as ESTABLISHED; only a stop is worth a hop."""
        from netlab.trace.hooks import evaluate_point
        from netlab.trace.netfilter import HookContext

        ruleset = self.oracle.ruleset(node.name)
        state = self._state(node.netns)
        outcomes = evaluate_point(ruleset, table, hook, pkt,
                                  HookContext(state.is_local, iif, oif, None, ruleset.recent))
        chosen = outcomes[0]
        if chosen.verdict == "ACCEPT":
            return pkt
        decisive = chosen.decisive
        rule = decisive.rule if decisive else "policy"
        self._hop(node=node.name, netns=node.netns, stage=f"netfilter:{table}/{hook}",
                  before=pkt.flow, after=pkt.flow, match=rule, action=Action.DROPPED,
                  drop_reason=DropReason.FILTERED, rules=tuple(chosen.hits),
                  interface=iif if hook in ("PREROUTING", "INPUT") else oif)
        self._finish(Verdict.DROPPED, f"the answer is dropped on {node.name} by {rule}")
        return pkt

    def _local_in(self, node: Machine, pkt: Packet, iif: str | None) -> Packet:
        pkt = self._undo_nat(node, "INPUT", replace(pkt, established=True))
        return super()._local_in(node, pkt, iif)

    def _socket(self, node: str, netns: str, pod: PodView | None, flow: FlowTuple,
                who: str) -> None:
        expected = self.probe.reverse()
        self.result.end_netns = netns
        self._hop(node=node, netns=netns, pod=pod.key if pod else None, stage="socket",
                  interface="eth0", direction="ingress", before=flow, after=flow,
                  match=f"answer from {flow.source} to {flow.destination}",
                  action=Action.DELIVERED,
                  evidence=("answer captured",) if self.oracle.live else ("model",))
        self.result.delivered_to = who
        if (flow.src, flow.sport) != (expected.src, expected.sport):
            self.result.notes.append(
                f"the answer comes from {flow.source}, but the client sent to "
                f"{expected.source}: its socket does not take it")
        self._finish(Verdict.DELIVERED, f"{who} received the answer from {flow.source}")


def walk_reply(view: LabView, oracle: Oracle, forward: Walker,
               probe: FlowTuple) -> WalkResult | None:
    """The answer's walk, when the probe's walk ended at a socket that answers.

    A socket answers what it took (SYN-ACK, UDP reply, echo reply) and a TCP
    port nobody listens on answers with a RST; an ICMP error (UDP port
    unreachable, a REJECT rule) is not followed.
    """
    done = forward.result
    if done.end_netns is None or done.server_sees is None:
        return None
    refused_tcp = done.drop_reason == DropReason.NO_LISTENER and probe.proto == "tcp"
    if done.verdict != Verdict.DELIVERED and not refused_tcp:
        return None
    walker = ReplyWalker(view, oracle, forward.bindings, probe)
    answer = done.server_sees.reverse()
    pod = view.pod_by_netns(done.end_netns)
    if pod is not None:
        return walker.from_pod(pod, answer)
    machine = view.machine_by_netns(done.end_netns)
    return walker.from_machine(machine, answer) if machine is not None else None
