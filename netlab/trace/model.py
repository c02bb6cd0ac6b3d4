"""The trace as data: hops, verdicts and the tuples they carry, with their JSON form.

One schema for every producer (live, simulated) and every consumer (the three
text levels, `--json`, `--diff`, the pytest plugin). Field names follow the hop
schema of ux-anchors §4.8: what a learner reads in the text is what a test reads
in the JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any


class Verdict(enum.StrEnum):
    DELIVERED = "DELIVERED"
    REJECTED = "REJECTED"
    DROPPED = "DROPPED"
    TIMEOUT = "TIMEOUT"


class Action(enum.StrEnum):
    """What one hop did with the packet (Hubble's and Antrea's vocabulary)."""

    FORWARDED = "FORWARDED"
    TRANSLATED = "TRANSLATED"  # DNAT or SNAT; see Hop.match
    ENCAP = "ENCAP"
    DECAP = "DECAP"
    DELIVERED = "DELIVERED"
    DROPPED = "DROPPED"
    REJECTED = "REJECTED"


class DropReason(enum.StrEnum):
    NO_ENDPOINTS = "no-endpoints"
    NO_LOCAL_ENDPOINTS = "no-local-endpoints"  # eTP/iTP Local, none on this node
    NO_ROUTE = "no-route"
    NO_LISTENER = "no-listener"
    FILTERED = "filtered"
    MTU = "mtu"
    NO_NEIGHBOUR = "no-neighbour"  # nobody on the segment has the address
    LOST = "lost"  # seen at one point, never at the next (live only)


@dataclass(frozen=True)
class FlowTuple:
    """The 5-tuple at one point; for ICMP the ports hold the echo identifier."""

    proto: str  # tcp | udp | icmp
    src: str
    sport: int
    dst: str
    dport: int

    def __str__(self) -> str:
        if self.proto == "icmp":
            return f"icmp {self.src} -> {self.dst} id={self.sport}"
        return f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}"

    @property
    def destination(self) -> str:
        return self.dst if self.proto == "icmp" else f"{self.dst}:{self.dport}"

    @property
    def source(self) -> str:
        return self.src if self.proto == "icmp" else f"{self.src}:{self.sport}"

    def with_dst(self, dst: str, dport: int | None = None) -> FlowTuple:
        return FlowTuple(self.proto, self.src, self.sport, dst,
                         self.dport if dport is None else dport)

    def with_src(self, src: str, sport: int | None = None) -> FlowTuple:
        return FlowTuple(self.proto, src, self.sport if sport is None else sport,
                         self.dst, self.dport)

    def reverse(self) -> FlowTuple:
        """The answer's tuple (ICMP keeps its identifier in `sport` both ways)."""
        if self.proto == "icmp":
            return FlowTuple("icmp", self.dst, self.sport, self.src, 0)
        return FlowTuple(self.proto, self.dst, self.dport, self.src, self.sport)


@dataclass(frozen=True)
class Encap:
    """The outer headers a VXLAN device put around the packet."""

    outer_src: str
    outer_dst: str
    dport: int
    vni: int
    sport: int | None = None  # a flow hash: known live, not in a simulation
    mtu: int | None = None  # the tunnel device's MTU: the largest inner packet it carries

    def __str__(self) -> str:
        sport = f":{self.sport}" if self.sport else ""
        return f"VXLAN vni={self.vni} {self.outer_src}{sport} -> {self.outer_dst}:{self.dport}"


@dataclass(frozen=True)
class Conntrack:
    """The node's conntrack entry for the probe: what NAT did, both ways."""

    state: str  # NEW, or the TCP state the kernel reports (SYN_SENT, ...)
    orig: FlowTuple
    reply: FlowTuple
    mark: int = 0
    status: tuple[str, ...] = ()  # SRC_NAT, DST_NAT, ...

    def __str__(self) -> str:
        nat = f" [{','.join(self.status)}]" if self.status else ""
        return f"ct {self.state} orig {self.orig} reply {self.reply}{nat}"


@dataclass(frozen=True)
class K8sRef:
    """The Kubernetes objects behind a decision: Service port and EndpointSlice entry."""

    service: str | None = None  # ns/name
    port_name: str = ""
    port: int | None = None
    protocol: str = "TCP"
    endpoint: str | None = None  # ip:port
    endpointslice: str | None = None  # name of the slice holding the endpoint
    endpoint_index: int | None = None
    pod: str | None = None  # ns/name of the endpoint's pod
    node: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.service:
            port = f":{self.port_name}" if self.port_name else ""
            number = f" {self.port}/{self.protocol}" if self.port else ""
            parts.append(f"svc {self.service}{port}{number}")
        if self.endpoint:
            where = []
            if self.endpointslice:
                where.append(f"EndpointSlice {self.endpointslice}[{self.endpoint_index}]")
            if self.pod:
                where.append(f"pod {self.pod}" + (f" on {self.node}" if self.node else ""))
            parts.append(f"ep {self.endpoint}" + (f" ({', '.join(where)})" if where else ""))
        return " -> ".join(parts)


@dataclass(frozen=True)
class Alternative:
    """Another way the same decision could have gone (an endpoint not chosen)."""

    endpoint: str
    probability: float
    k8s_ref: K8sRef | None = None

    def __str__(self) -> str:
        return f"{self.endpoint} p={self.probability:.2f}"


@dataclass(frozen=True)
class RuleHit:
    """One rule the packet matched, in traversal order; counter delta when live."""

    table: str
    chain: str
    position: int
    rule: str  # as iptables-save prints it, `-A CHAIN ...`
    target: str
    comment: str = ""
    counter: int | None = None  # packets added during the trace (live only)


@dataclass(frozen=True)
class Hop:
    seq: int
    node: str  # node name, "ext" or "underlay"
    netns: str
    stage: str  # route, bridge:cni0, netfilter:nat/PREROUTING, vxlan:encap, underlay, socket
    action: Action
    interface: str | None = None
    direction: str | None = None  # ingress | egress
    pod: str | None = None  # ns/name when the hop is inside a pod
    match: str = ""  # the rule text or route that decided
    k8s_ref: K8sRef | None = None
    before: FlowTuple | None = None
    after: FlowTuple | None = None
    encap: Encap | None = None
    conntrack: Conntrack | None = None
    drop_reason: DropReason | None = None
    alternatives: tuple[Alternative, ...] = ()
    rules: tuple[RuleHit, ...] = ()  # every rule matched on the way (detailed level)
    evidence: tuple[str, ...] = ()  # captured, counter +1, conntrack, kernel route, model

    @property
    def place(self) -> str:
        """Where the hop happened, as the text levels print it: `worker-1/pod:default/a`."""
        if self.pod:
            return f"{self.node}/pod:{self.pod}"
        return self.node if self.node in ("ext", "underlay") else f"{self.node}/root"

    @property
    def key(self) -> tuple[str, str]:
        """What --diff aligns on: the same place and stage in both traces."""
        return (self.place, self.stage)


@dataclass(frozen=True)
class DiffEntry:
    """A point where the model and the kernel disagree."""

    key: str
    field: str
    simulated: str
    live: str

    def __str__(self) -> str:
        return f"{self.key}: {self.field}: model {self.simulated!r}, kernel {self.live!r}"


@dataclass(repr=False)
class Trace:
    trace_id: str
    mode: str  # live | simulated | diff
    source: str  # as given, resolved: "pod default/a (10.244.1.5)"
    destination: str  # "svc default/web:80/TCP (10.96.0.12)"
    probe: FlowTuple
    hops: list[Hop] = field(default_factory=list)
    verdict: Verdict = Verdict.TIMEOUT
    reason: str = ""
    server_sees: FlowTuple | None = None  # the tuple as the receiving socket saw it
    delivered_to: str | None = None  # "pod default/web-1" / "node worker-1"
    notes: list[str] = field(default_factory=list)
    diff: list[DiffEntry] | None = None  # only in diff mode
    twin: Trace | None = None  # in diff mode: the simulated trace (self is the live one)
    size: int = 0  # the probe's IP length in bytes (DF is always set)
    reply: list[Hop] = field(default_factory=list)  # the answer's way back, hop by hop
    reply_verdict: Verdict | None = None  # None: no answer to follow (nothing was sent back)
    reply_reason: str = ""

    def __repr__(self) -> str:
        return f"<Trace {self.trace_id} {self.source} -> {self.destination}: {self.verdict}>"

    # helpers for tests and scripts ---------------------------------------------------
    def hops_at(self, stage: str) -> list[Hop]:
        """Hops whose stage starts with `stage`: "netfilter", "netfilter:nat", "vxlan"..."""
        return [h for h in self.hops if h.stage.startswith(stage)]

    @property
    def dnat(self) -> Hop | None:
        """The hop that rewrote the destination (ClusterIP/NodePort -> endpoint), if any."""
        return next((h for h in self.hops if h.action == Action.TRANSLATED and h.before
                     and h.after and h.before.destination != h.after.destination), None)

    @property
    def snat(self) -> Hop | None:
        """The hop that rewrote the source (masquerade), if any."""
        return next((h for h in self.hops if h.action == Action.TRANSLATED and h.before
                     and h.after and h.before.src != h.after.src), None)

    def encapsulated(self, vni: int | None = None) -> bool:
        """Whether the probe crossed a VXLAN tunnel (with this VNI, if given)."""
        return any(h.action == Action.ENCAP and h.encap and (vni is None or h.encap.vni == vni)
                   for h in self.hops)

    @property
    def encap(self) -> Encap | None:
        return next((h.encap for h in self.hops if h.action == Action.ENCAP), None)

    @property
    def source_seen_by_server(self) -> str | None:
        """The source IP the receiving socket saw (the client's, unless something SNATed)."""
        return self.server_sees.src if self.server_sees else None

    @property
    def drop_reason(self) -> DropReason | None:
        return next((h.drop_reason for h in reversed(self.hops) if h.drop_reason), None)

    def reply_at(self, stage: str) -> list[Hop]:
        """Reply hops whose stage starts with `stage` (the un-NAT hops: "netfilter:nat")."""
        return [h for h in self.reply if h.stage.startswith(stage)]

    @property
    def reply_source(self) -> str | None:
        """Where the answer came from as the client saw it (`ip:port`): after un-DNAT the
        Service address it connected to, not the endpoint's."""
        end = next((h for h in reversed(self.reply) if h.action == Action.DELIVERED), None)
        return end.before.source if end and end.before else None

    @property
    def minimal(self) -> list[str]:
        """The minimal rendering as lines: what tests should pin."""
        from netlab.trace.render import minimal_lines

        return minimal_lines(self)

    def rendered(self, level: str = "summary") -> str:
        from netlab.trace.render import render

        return render(self, level)

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        if self.twin is None:
            out.pop("twin")
        if self.diff is None:
            out.pop("diff")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        return cls(
            trace_id=data["trace_id"], mode=data["mode"], source=data["source"],
            destination=data["destination"], probe=FlowTuple(**data["probe"]),
            hops=[_hop(h) for h in data.get("hops", [])],
            verdict=Verdict(data["verdict"]), reason=data.get("reason", ""),
            server_sees=FlowTuple(**data["server_sees"]) if data.get("server_sees") else None,
            delivered_to=data.get("delivered_to"), notes=list(data.get("notes", [])),
            diff=[DiffEntry(**d) for d in data["diff"]] if data.get("diff") is not None
            else None,
            twin=cls.from_dict(data["twin"]) if data.get("twin") else None,
            size=data.get("size", 0), reply=[_hop(h) for h in data.get("reply", [])],
            reply_verdict=Verdict(data["reply_verdict"]) if data.get("reply_verdict") else None,
            reply_reason=data.get("reply_reason", ""))


def _plain(value: Any) -> Any:
    """Dataclasses to JSON-ready dicts; enums to their values; None-valued keys kept."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _hop(data: dict[str, Any]) -> Hop:
    def tup(v: dict[str, Any] | None) -> FlowTuple | None:
        return FlowTuple(**v) if v else None

    ct = data.get("conntrack")
    return Hop(
        seq=data["seq"], node=data["node"], netns=data["netns"], stage=data["stage"],
        action=Action(data["action"]), interface=data.get("interface"),
        direction=data.get("direction"), pod=data.get("pod"), match=data.get("match", ""),
        k8s_ref=K8sRef(**data["k8s_ref"]) if data.get("k8s_ref") else None,
        before=tup(data.get("before")), after=tup(data.get("after")),
        encap=Encap(**data["encap"]) if data.get("encap") else None,
        conntrack=Conntrack(ct["state"], FlowTuple(**ct["orig"]), FlowTuple(**ct["reply"]),
                            ct.get("mark", 0), tuple(ct.get("status", ()))) if ct else None,
        drop_reason=DropReason(data["drop_reason"]) if data.get("drop_reason") else None,
        alternatives=tuple(
            Alternative(a["endpoint"], a["probability"],
                        K8sRef(**a["k8s_ref"]) if a.get("k8s_ref") else None)
            for a in data.get("alternatives", ())),
        rules=tuple(RuleHit(**r) for r in data.get("rules", ())),
        evidence=tuple(data.get("evidence", ())))

