"""A trace as text, at ovn-trace's three levels, or as JSON.

minimal  only what changed the packet (DNAT, SNAT, encapsulation) and where it
         ended, with constants that do not vary between runs (no ephemeral ports):
         the level tests should pin, and the same for a live trace and its
         simulated twin.
summary  one line per hop; netfilter hooks only when they decided something; the
         answer's way back in one line.
detailed every hop, every rule matched (with counter deltas when live),
         conntrack entries, alternatives and the evidence behind each hop, and the
         answer's way back hop by hop (conntrack undoing the NAT).
"""

from __future__ import annotations

import json

from netlab.trace.model import Action, Hop, Trace, Verdict

LEVELS = ("minimal", "summary", "detailed")
_CHANGES = (Action.TRANSLATED, Action.ENCAP, Action.DELIVERED, Action.DROPPED,
            Action.REJECTED)


def render(trace: Trace, level: str = "summary") -> str:
    if level == "json":
        return json.dumps(trace.to_dict(), indent=2)
    if level == "minimal":
        return _minimal(trace)
    detailed = level == "detailed"
    lines = [_header(trace)]
    lines += _hops(trace.hops, detailed)
    lines.append(_result(trace))
    if trace.reply_verdict is not None:
        lines += _reply(trace, detailed)
    lines += [f"  note: {n}" for n in trace.notes]
    if trace.diff is not None:
        lines += _diff(trace)
    return "\n".join(lines)


def _header(trace: Trace) -> str:
    size = f"  ({trace.size} bytes, DF)" if trace.size else ""
    return (f"trace {trace.trace_id}  {trace.source} -> {trace.destination}  "
            f"[{trace.mode}]\n probe {trace.probe}{size}")


def _stage(hop: Hop) -> str:
    kind, _, detail = hop.stage.partition(":")
    if kind == "netfilter":
        return detail.replace("/", " ")
    if kind == "bridge":
        return f"{detail} {hop.interface or ''}".strip()
    if kind == "vxlan":
        return f"{hop.interface} {detail}"
    if kind == "underlay":
        return "br-underlay"
    if kind in ("egress", "ingress"):
        return f"{hop.interface} {kind}"
    return hop.stage if not hop.interface or kind == "socket" else f"{kind} {hop.interface}"


def _what(hop: Hop) -> str:
    if hop.action == Action.ENCAP and hop.encap:
        return str(hop.encap)
    return hop.match


def _shown(hop: Hop, detailed: bool) -> bool:
    return detailed or not hop.stage.startswith("netfilter:") or hop.action != Action.FORWARDED


def _hops(hops: list[Hop], detailed: bool) -> list[str]:
    lines = []
    for hop in hops:
        if not _shown(hop, detailed):
            continue
        lines.append(f"{hop.seq:>3} {hop.place:<28} {_stage(hop):<22} {_what(hop):<56} "
                     f"{hop.action.value}")
        pad = " " * 33
        if hop.k8s_ref and (detailed or hop.action != Action.FORWARDED):
            lines.append(f"{pad}{hop.k8s_ref}")
        if hop.alternatives:
            alts = ", ".join(str(a) for a in hop.alternatives)
            lines.append(f"{pad}other endpoints: {alts}")
        if hop.drop_reason:
            lines.append(f"{pad}reason: {hop.drop_reason.value}")
        if not detailed:
            continue
        if hop.before and hop.after and hop.before != hop.after:
            lines.append(f"{pad}{hop.before}  =>  {hop.after}")
        elif hop.before:
            lines.append(f"{pad}{hop.before}")
        for rule in hop.rules:
            count = f"  [+{rule.counter}]" if rule.counter is not None else ""
            lines.append(f"{pad}  {rule.table} {rule.rule}{count}")
        if hop.conntrack:
            lines.append(f"{pad}{hop.conntrack}")
        if hop.evidence:
            lines.append(f"{pad}evidence: {', '.join(hop.evidence)}")
    return lines


def _result(trace: Trace) -> str:
    text = f" result: {trace.verdict.value}"
    if trace.reason:
        text += f"  {trace.reason}"
    if trace.verdict == Verdict.DELIVERED and trace.server_sees:
        preserved = ("source IP preserved" if trace.server_sees.src == trace.probe.src
                     else "source NATed")
        text += f"\n  server sees {trace.server_sees.source} ({preserved})"
    return text


def _reply(trace: Trace, detailed: bool) -> list[str]:
    """The answer's way back: hop by hop in detailed, its NAT undone in one line otherwise."""
    assert trace.reply_verdict is not None
    head = f" reply: {trace.reply_verdict.value}  {trace.reply_reason}".rstrip()
    if detailed:
        return [head] + _hops(trace.reply, True)
    undone = [f"{h.match.split(' (')[0]} on {h.node}" for h in trace.reply
              if h.action == Action.TRANSLATED]
    return [head + (f"  ({'; '.join(undone)})" if undone else "")]


def minimal_lines(trace: Trace) -> list[str]:
    """The minimal level as lines: stable between runs and between live and simulated."""
    lines = []
    for hop in trace.hops:
        if hop.action not in _CHANGES:
            continue
        where = hop.place
        if hop.action == Action.TRANSLATED and hop.before and hop.after:
            if hop.before.dst != hop.after.dst or hop.before.dport != hop.after.dport:
                ref = f" [{hop.k8s_ref.service}:{hop.k8s_ref.port_name or hop.k8s_ref.port}]" \
                    if hop.k8s_ref and hop.k8s_ref.service else ""
                lines.append(f"{where} {_stage(hop)}: DNAT {hop.before.destination} -> "
                             f"{hop.after.destination}{ref}")
            else:
                lines.append(f"{where} {_stage(hop)}: SNAT {hop.before.src} -> "
                             f"{hop.after.src}")
        elif hop.action == Action.ENCAP and hop.encap:
            e = hop.encap
            lines.append(f"{where} {hop.interface}: ENCAP vni={e.vni} {e.outer_src} -> "
                         f"{e.outer_dst}:{e.dport}")
        elif hop.action == Action.DELIVERED and hop.before:
            lines.append(f"{where}: DELIVERED {hop.before.destination} from "
                         f"{hop.before.src}")
        else:
            reason = hop.drop_reason.value if hop.drop_reason else ""
            lines.append(f"{where} {_stage(hop)}: {hop.action.value} {reason}".rstrip())
    verdict = trace.verdict.value
    if trace.verdict != Verdict.DELIVERED and trace.hops and trace.hops[-1].drop_reason:
        verdict += f" ({trace.hops[-1].drop_reason.value})"
    lines.append(f"verdict: {verdict}")
    return lines


def _minimal(trace: Trace) -> str:
    return "\n".join(minimal_lines(trace))


def _diff(trace: Trace) -> list[str]:
    assert trace.diff is not None
    if not trace.diff:
        return [" diff: the model and the kernel agree"]
    lines = [f" diff: {len(trace.diff)} disagreement(s) between the model and the kernel"]
    lines += [f"  ! {d}" for d in trace.diff]
    return lines
