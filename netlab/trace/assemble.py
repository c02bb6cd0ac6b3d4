"""Live traces explained: the walk answered from what the kernel showed during the probe.

Pure: an `Observations` record (recognised frames per namespace and device,
each namespace's routes and addresses, the rules installed with their counter
deltas, conntrack entries, socket tables) goes in, hops come out. Decisions are
taken from the strongest evidence available: conntrack says which endpoint a
DNAT chose and what masquerade wrote; a frame captured after a hook says it too;
counter deltas only confirm which rules matched (other traffic moves them as
well). A point the walk expects the probe at but no capture saw ends the trace
there, so it never reports a path the kernel did not take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netlab.trace.labview import LabView, Listener
from netlab.trace.model import Conntrack, Encap, FlowTuple, RuleHit, Trace, Verdict
from netlab.trace.netfilter import Outcome, Ruleset
from netlab.trace.routing import NetState
from netlab.trace.simulate import make_trace, walk
from netlab.trace.targets import Destination, Source
from netlab.trace.walk import Point, Seen, SocketAnswer


@dataclass(frozen=True)
class SeenFrame:
    """A captured frame recognised as the probe or an answer to it."""

    time: float
    netns: str
    ifname: str
    direction: str  # ingress | egress
    kind: str  # probe | reply | icmp-error
    flow: FlowTuple
    encap: Encap | None = None
    detail: str = ""


@dataclass
class Observations:
    frames: list[SeenFrame] = field(default_factory=list)
    nets: dict[str, NetState] = field(default_factory=dict)  # netns -> kernel state
    rulesets: dict[str, Ruleset] = field(default_factory=dict)  # node -> installed rules
    deltas: dict[str, dict[tuple[str, str, int], int]] = field(default_factory=dict)
    conntrack: dict[str, list[Conntrack]] = field(default_factory=dict)  # node -> entries
    listeners: dict[str, frozenset[Listener]] = field(default_factory=dict)  # netns ->
    send_error: str | None = None  # the source kernel refused the probe (EMSGSIZE)


class ObservedOracle:
    live = True

    def __init__(self, view: LabView, obs: Observations) -> None:
        self.view = view
        self.obs = obs
        self.frames = sorted(obs.frames, key=lambda f: f.time)
        self.used: set[int] = set()
        self.visited: set[str] = set()

    def net(self, netns: str) -> NetState | None:
        self.visited.add(netns)
        return self.obs.nets.get(netns)

    def ruleset(self, node: str) -> Ruleset:
        return self.obs.rulesets.get(node) or Ruleset()

    def _netns(self, node: str) -> str:
        return self.view.machines[node].netns

    def _entry(self, node: str, before: FlowTuple) -> Conntrack | None:
        for entry in self.obs.conntrack.get(node, []):
            o = entry.orig
            if (o.proto, o.src, o.sport) == (before.proto, before.src, before.sport):
                return entry
        entries = self.obs.conntrack.get(node, [])
        return entries[0] if len(entries) == 1 else None

    def _egress_flow(self, node: str) -> FlowTuple | None:
        netns = self._netns(node)
        for frame in self.frames:
            if frame.netns == netns and frame.kind == "probe" and frame.direction == "egress":
                return frame.flow
        return None

    def choose(self, node: str, hook: str, outcomes: list[Outcome],
               before: FlowTuple) -> tuple[Outcome, FlowTuple | None, list[str]]:
        entry = self._entry(node, before)
        egress = self._egress_flow(node)
        table = hook.split("/")[0]
        if table != "nat":
            return self._by_counters(node, outcomes), None, []
        if hook.endswith("POSTROUTING"):
            observed = None
            if entry is not None and "SRC_NAT" in entry.status:
                observed = before.with_src(entry.reply.dst, entry.reply.dport)
            elif egress is not None and egress.src != before.src:
                observed = before.with_src(egress.src, egress.sport)
            snat = [o for o in outcomes if o.nat in ("SNAT", "MASQUERADE")]
            if observed is not None and snat:
                return snat[0], observed, []
            plain = [o for o in outcomes if not o.nat]
            if observed is None and plain:
                return plain[0], None, []
            return outcomes[0], observed, []
        target = None
        if entry is not None and "DST_NAT" in entry.status:
            target = (entry.reply.src, entry.reply.sport)
        elif egress is not None and (egress.dst, egress.dport) != (before.dst, before.dport):
            target = (egress.dst, egress.dport)
        if target is None:
            plain = [o for o in outcomes if o.nat != "DNAT"]
            if plain:
                return plain[0], None, []
            chosen = self._by_counters(node, outcomes)
            return chosen, None, ["no capture or conntrack entry shows which endpoint was "
                                  "chosen; counters point at "
                                  f"{chosen.packet.flow.destination}"]
        flow = before.with_dst(*target)
        for outcome in outcomes:
            if (outcome.packet.flow.dst, outcome.packet.flow.dport) == target:
                return outcome, flow, []
        return outcomes[0], flow, [f"{node}: the kernel sent the probe to {flow.destination}, "
                                   "which no installed rule explains"]

    def _by_counters(self, node: str, outcomes: list[Outcome]) -> Outcome:
        deltas = self.obs.deltas.get(node, {})

        def score(outcome: Outcome) -> tuple[int, float]:
            hit = outcome.decisive
            counted = deltas.get((hit.table, hit.chain, hit.position), 0) if hit else 0
            return (1 if counted else 0, outcome.probability)

        return max(outcomes, key=score)

    def counters(self, node: str, hits: list[RuleHit]) -> list[RuleHit]:
        """Counter deltas of the rules; a verdict-map element (position 0) counts nothing."""
        deltas = self.obs.deltas.get(node, {})
        return [RuleHit(h.table, h.chain, h.position, h.rule, h.target, h.comment,
                        deltas.get((h.table, h.chain, h.position), 0) if h.position else None)
                for h in hits]

    def seen(self, netns: str, iface: str, direction: str,
             kind: str = "probe") -> Seen | None:
        self.visited.add(netns)
        for i, frame in enumerate(self.frames):
            if i in self.used or frame.kind != kind:
                continue
            if (frame.netns, frame.ifname, frame.direction) == (netns, iface, direction):
                self.used.add(i)
                return Seen(frame.flow, frame.encap)
        return None

    def mtu_drop(self, beyond: Point) -> tuple[bool, tuple[str, ...]]:
        """Dropped for its size unless captured beyond the device; what shows the drop."""
        if any(f.kind == "probe" and (f.netns, f.ifname, f.direction) == beyond
               for f in self.frames):
            return False, ()
        evidence = ["kernel MTU", "not captured beyond"]
        if self.obs.send_error:
            evidence.append(f"sendto: {self.obs.send_error}")
        if any(f.kind == "icmp-error" and f.detail == "frag-needed" and f.netns == beyond[0]
               for f in self.frames):
            evidence.append("ICMP frag-needed captured")
        return True, tuple(evidence)

    def conntrack(self, node: str) -> Conntrack | None:
        entries = self.obs.conntrack.get(node, [])
        return entries[0] if entries else None

    def socket(self, netns: str, flow: FlowTuple) -> SocketAnswer:
        for frame in self.frames:
            if frame.netns != netns or frame.direction != "egress" or frame.kind == "probe":
                continue
            if frame.kind == "icmp-error":
                return SocketAnswer(frame.detail != "port-unreachable",
                                    f"ICMP {frame.detail} sent")
            if frame.flow.proto == "tcp":
                return SocketAnswer(frame.detail != "RST", f"{frame.detail} sent")
            return SocketAnswer(True, f"{frame.detail or 'reply'} sent")
        table = self.obs.listeners.get(netns)
        if table is None or flow.proto == "icmp":
            return SocketAnswer(None, "no answer captured")
        listening = Listener(flow.proto, flow.dport) in table
        return SocketAnswer(listening, "socket table" + ("" if listening else
                                                         ": nothing bound"))


def assemble(view: LabView, src: Source, dst: Destination, flow: FlowTuple,
             obs: Observations, trace_id: str | None = None, size: int = 0) -> Trace:
    """The live trace from recorded observations; `size`: the probe's IP length."""
    oracle = ObservedOracle(view, obs)
    result, reply = walk(view, oracle, src, flow, size)
    trace = make_trace("live", src, dst, flow, result, trace_id, reply, size)
    trace.notes.extend(_answer_notes(oracle, src, trace))
    trace.notes.extend(_unexplained(oracle))
    return trace


def _answer_notes(oracle: ObservedOracle, src: Source, trace: Trace) -> list[str]:
    """What came back to the source: the end-to-end confirmation of the verdict."""
    answers = [f for f in oracle.frames if f.netns == src.netns and f.direction == "ingress"
               and f.kind in ("reply", "icmp-error")]
    if not answers:
        if trace.verdict in (Verdict.DELIVERED, Verdict.REJECTED):
            return ["no answer reached the source"]
        return []
    first = answers[0]
    what = f"ICMP {first.detail}" if first.kind == "icmp-error" else first.detail
    sender = trace.reply_source if first.kind == "reply" and trace.reply_source \
        else first.flow.source  # a node's own answer is captured before conntrack un-NATs it
    return [f"answer at the source: {what} from {sender}"]


def _unexplained(oracle: ObservedOracle) -> list[str]:
    places = sorted({(f.netns, f.ifname, f.direction) for i, f in enumerate(oracle.frames)
                     if f.kind == "probe" and i not in oracle.used
                     and f.netns not in oracle.visited})
    return [f"probe also seen in {ns} on {iface} ({direction}), off the explained path"
            for ns, iface, direction in places]
