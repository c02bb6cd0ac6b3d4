"""A live trace: send one marked probe and record what the kernel did with it.

Order matters. Rules and counters are read first, the captures start (one
socket per namespace the probe may cross), the probe leaves the source
namespace, the trace waits for an answer at the source (or the timeout), the
captures stop, and then counters, conntrack (the probe's entries are deleted
once read) and socket tables are read. Everything the trace opened is closed
in `finally` blocks: no capture, socket or thread outlives it, and it adds no
rule anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from netlab.trace import observe
from netlab.trace import probe as probes
from netlab.trace.assemble import Observations, SeenFrame, assemble
from netlab.trace.capture import Frame, NamespaceCapture
from netlab.trace.labview import LabView
from netlab.trace.model import FlowTuple, Trace
from netlab.trace.netfilter import Ruleset
from netlab.trace.simulate import new_trace_id
from netlab.trace.targets import Destination, Source

GRACE = 0.15  # after the answer: let frames still in flight be captured
MAX_DESTINATION_PODS = 32


@dataclass
class LiveResult:
    trace: Trace
    frames: list[Frame]  # the probe's own frames, for --pcap
    labels: dict[str, str]  # netns -> readable name


def candidate_namespaces(view: LabView, src: Source, dst: Destination) -> list[str]:
    """Where the probe may go: the source, every machine, the underlay, possible receivers."""
    names = [src.netns, view.underlay_netns] + [m.netns for m in view.machines.values()]
    ips = [dst.ip]
    if dst.service:
        ns, name = dst.service.split("/", 1)
        for eps in view.slices_of(ns, name):
            for ep in eps.get("endpoints") or []:
                ips += ep.get("addresses") or []
    for ip in ips[:MAX_DESTINATION_PODS]:
        pod = view.pod_by_ip(ip)
        if pod is not None:
            names.append(pod.netns)
    return list(dict.fromkeys(names))


def labels(view: LabView) -> dict[str, str]:
    out = {m.netns: m.name for m in view.machines.values()}
    out[view.underlay_netns] = "underlay"
    out.update({p.netns: f"{p.node}/pod:{p.key}" for p in view.pods.values()})
    return out


def _answered(capture: NamespaceCapture, probe: probes.ProbeId, checked: int) -> tuple[bool,
                                                                                        int]:
    frames = capture.frames
    for frame in frames[checked:]:
        seen = probes.classify(frame.data, probe)
        if seen and seen.kind != "probe" and frame.direction == "ingress":
            return True, len(frames)
    return False, len(frames)


def trace_live(view: LabView, src: Source, dst: Destination, *, timeout: float = 2.0,
               dns_name: str | None = None, trace_id: str | None = None,
               size: int | None = None) -> LiveResult:
    """Send one probe (`size`: its payload in bytes, DF set) and assemble its trace."""
    probe = probes.ProbeId.new()
    src_ip = src.pod.ip if src.pod else probes.source_address(src.netns, dst.ip)
    namespaces = candidate_namespaces(view, src, dst)
    nodes = {m.name: m.netns for m in view.nodes}
    mode = view.config.proxy_mode
    rules = {name: observe.node_rules(ns, mode) for name, ns in nodes.items()}
    nets = {ns: observe.net_state(ns) for ns in namespaces if ns != view.underlay_netns}
    send_error = None
    with probes.PortHold(src.netns, dst.proto, src_ip) as hold:
        sport = probe.icmp_id if dst.proto == "icmp" else hold.port
        flow = FlowTuple(dst.proto, src_ip, sport, dst.ip, dst.port)
        packet = probes.build(flow, probe, dns_name, size)
        before = {name: _counters(ns, mode) for name, ns in nodes.items()}
        captures: list[NamespaceCapture] = []
        try:
            for ns in namespaces:
                captures.append(NamespaceCapture(ns, probes.bpf_filter(probe)).start())
            send_error = probes.send(src.netns, packet, dst.ip)
            if send_error is None:
                _wait(captures[0], probe, timeout)
        finally:
            for capture in captures:
                capture.request_stop()
            raw = [f for c in captures for f in c.stop()]
        after = {name: _counters(ns, mode) for name, ns in nodes.items()}
        _unpin(nodes, rules, src_ip)
    frames: list[Frame] = []
    seen: list[SeenFrame] = []
    for frame in raw:
        found = probes.classify(frame.data, probe)
        if found is None:
            continue
        frames.append(frame)
        seen.append(SeenFrame(frame.time, frame.netns, frame.ifname, frame.direction,
                              found.kind, found.flow, found.encap, found.detail))
    obs = Observations(
        frames=seen, nets=nets, rulesets=rules,
        deltas={n: observe.counter_deltas(before[n], after[n]) for n in nodes},
        conntrack={n: observe.conntrack_entries(ns, _flows_in(seen, ns, flow))
                   for n, ns in nodes.items()},
        listeners={ns: observe.listeners(ns) for ns in namespaces
                   if view.pod_by_netns(ns) is not None},
        send_error=send_error)
    trace = assemble(view, src, dst, flow, obs, trace_id or new_trace_id(), len(packet))
    if send_error:
        trace.notes.append(f"the source kernel refused to send the probe: {send_error}")
    return LiveResult(trace, frames, labels(view))


def _counters(netns_name: str, mode: str) -> dict[tuple[str, str, int], int]:
    counts = observe.rule_counters(netns_name)
    if mode == "nftables":
        counts.update(observe.nft_rule_counters(netns_name))
    return counts


def _unpin(nodes: dict[str, str], rules: dict[str, Ruleset], client: str) -> None:
    """Remove the session-affinity pins the probe created (ones that were there stay).

    Only nodes with affinity lists or sets (Services with sessionAffinity) are read again.
    """
    from netlab.trace import nft

    for name, ns in nodes.items():
        had = rules[name]
        sets = nft.affinity_entries(had.nft) if had.nft is not None else {}
        if not had.recent and not sets:
            continue
        before = {n for n, ips in had.recent.items() if client in ips}
        before |= {n for n, ips in sets.items() if client in ips}
        now = {n for n, ips in observe.recent_lists(ns).items() if client in ips}
        if sets:
            table = nft.parse_table(*observe.nft_listing(ns))
            now |= {n for n, ips in nft.affinity_entries(table).items() if client in ips}
        observe.forget_affinity(ns, [(n, client) for n in sorted(now - before)])
def _wait(source: NamespaceCapture, probe: probes.ProbeId, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    checked = 0
    while time.monotonic() < deadline:
        answered, checked = _answered(source, probe, checked)
        if answered:
            time.sleep(GRACE)
            return
        time.sleep(0.01)


def _flows_in(frames: list[SeenFrame], netns: str, flow: FlowTuple) -> list[FlowTuple]:
    """The probe's tuples as they entered a namespace (conntrack keys its entries on them)."""
    flows = [f.flow for f in frames if f.netns == netns and f.kind == "probe"]
    return list(dict.fromkeys([flow, *flows]))
