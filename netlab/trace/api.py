"""The trace front door for the CLI, the pytest plugin and scripts.

    from netlab.lab.session import running_lab
    from netlab.trace.api import trace

    with running_lab("topologies/default.yaml", name="demo") as lab:
        t = trace(lab, "client", "web", port=80)
        print(t.verdict, t.dnat.after)
"""

from __future__ import annotations

from typing import Any

from netlab.trace import observe
from netlab.trace.diff import compare
from netlab.trace.labview import LabView, load_view
from netlab.trace.model import Action, Trace
from netlab.trace.netfilter import Ruleset
from netlab.trace.pcap import write_pcapng
from netlab.trace.simulate import simulate, view_dns_name
from netlab.trace.targets import resolve_destination, resolve_source

MODES = ("live", "simulated", "diff")


def installed_rules(view: LabView) -> dict[str, Ruleset]:
    """Each node's rules as the kernel holds them now: iptables-legacy-save, kube-proxy's
    nftables table in nftables mode, and the session-affinity state they read."""
    return {m.name: observe.node_rules(m.netns, view.config.proxy_mode) for m in view.nodes}


def trace(lab: Any, src: str, dst: str, *, namespace: str = "default",
          port: str | int | None = None, proto: str | None = None, mode: str = "live",
          endpoint: str | None = None, timeout: float = 2.0, pcap: str | None = None,
          size: int | None = None) -> Trace:
    """Trace from SRC to DST in a RunningLab; see docs/trace.md for what they accept.

    `size`: the probe's payload in bytes (DF is always set), to find MTU drops.
    """
    from netlab.errors import NetlabError

    if mode not in MODES:
        raise NetlabError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    view = load_view(lab)
    source = resolve_source(view, src, namespace)
    destination = resolve_destination(view, dst, namespace, port, proto)
    if mode == "simulated":
        return simulate(view, installed_rules(view), source, destination, endpoint=endpoint,
                        size=size)
    from netlab.trace.live import trace_live

    result = trace_live(view, source, destination, timeout=timeout,
                        dns_name=view_dns_name(view), size=size)
    live = result.trace
    if pcap:
        write_pcapng(pcap, result.frames, result.labels)
    if mode == "diff":
        chosen = next((h.after.destination for h in live.hops if h.action ==
                       Action.TRANSLATED and h.after and h.before and
                       h.after.dst != h.before.dst), endpoint)
        twin = simulate(view, installed_rules(view), source, destination,
                        sport=live.probe.sport, endpoint=chosen, trace_id=live.trace_id,
                        size=size)
        live.mode = "diff"
        live.twin = twin
        live.diff = compare(twin, live)
    return live
