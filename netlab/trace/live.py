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
from netlab.trace.netfilter import parse_save
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
               dns_name: str | None = None, trace_id: str | None = None) -> LiveResult:
    probe = probes.ProbeId.new()
    src_ip = src.pod.ip if src.pod else probes.source_address(src.netns, dst.ip)
    namespaces = candidate_namespaces(view, src, dst)
    nodes = {m.name: m.netns for m in view.nodes}
    rules = {name: parse_save(observe.ruleset_text(ns)) for name, ns in nodes.items()}
    nets = {ns: observe.net_state(ns) for ns in namespaces if ns != view.underlay_netns}
    with probes.PortHold(src.netns, dst.proto, src_ip) as hold:
        sport = probe.icmp_id if dst.proto == "icmp" else hold.port
        flow = FlowTuple(dst.proto, src_ip, sport, dst.ip, dst.port)
        before = {name: observe.rule_counters(ns) for name, ns in nodes.items()}
        captures: list[NamespaceCapture] = []
        try:
            for ns in namespaces:
                captures.append(NamespaceCapture(ns, probes.bpf_filter(probe)).start())
            probes.send(src.netns, probes.build(flow, probe, dns_name), dst.ip)
            _wait(captures[0], probe, timeout)
        finally:
            for capture in captures:
                capture.request_stop()
            raw = [f for c in captures for f in c.stop()]
        after = {name: observe.rule_counters(ns) for name, ns in nodes.items()}
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
                   if view.pod_by_netns(ns) is not None})
    trace = assemble(view, src, dst, flow, obs, trace_id or new_trace_id())
    return LiveResult(trace, frames, labels(view))


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
