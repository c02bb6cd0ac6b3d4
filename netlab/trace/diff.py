"""Where the model and the kernel disagree: a simulated trace against its live twin.

Hops are aligned on (place, stage, interface); within aligned hops the fields
that carry a decision are compared (action, the rule or route that decided, the
translated destination, the tunnel's outer addresses, the drop reason). The
answer's way back is compared the same way (its labels start with "reply"), so
an answer that takes another path than the model's, or keeps the endpoint's
address, shows up too. Values that differ on every run by design (ephemeral and
masquerade ports, the VXLAN source port, counters, conntrack states) are not
differences.
"""

from __future__ import annotations

import difflib
import re

from netlab.trace.model import DiffEntry, Hop, Trace

_PORT = re.compile(r"(\d+\.\d+\.\d+\.\d+):\d+")


def _label(hop: Hop, prefix: str = "") -> str:
    return f"{prefix}{hop.place} {hop.stage}" + (f" {hop.interface}" if hop.interface else "")


def _fields(hop: Hop, reply: bool = False) -> dict[str, str]:
    """What must agree. On the way back the destination is the client's port, which a
    masquerade picked at random: only its address is compared, and the answer's source."""
    out = {"action": hop.action.value, "interface": hop.interface or "-"}
    out["match"] = _PORT.sub(r"\1", hop.match) if reply else hop.match
    if hop.after is not None:
        out["destination"] = hop.after.dst if reply else hop.after.destination
        out["source"] = hop.after.source if reply else hop.after.src
    if hop.encap is not None:
        e = hop.encap
        out["encap"] = f"vni={e.vni} {e.outer_src} -> {e.outer_dst}:{e.dport}"
    if hop.drop_reason is not None:
        out["drop_reason"] = hop.drop_reason.value
    return out


def _path(hops: list[Hop]) -> str:
    """Hops only one side has, as one line: where the two paths part."""
    if not hops:
        return "(nothing)"
    return " | ".join(f"{h.place} {h.stage} {h.interface or ''} {h.action.value}".replace(
        "  ", " ") for h in hops)


def _hops(simulated: list[Hop], live: list[Hop], reply: bool) -> list[DiffEntry]:
    prefix = "reply " if reply else ""
    entries: list[DiffEntry] = []
    matcher = difflib.SequenceMatcher(a=[h.key for h in simulated], b=[h.key for h in live],
                                      autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for sim_hop, live_hop in zip(simulated[i1:i2], live[j1:j2], strict=True):
                a, b = _fields(sim_hop, reply), _fields(live_hop, reply)
                for name in sorted(set(a) | set(b)):
                    if a.get(name) != b.get(name):
                        entries.append(DiffEntry(_label(live_hop, prefix), name,
                                                 a.get(name, "-"), b.get(name, "-")))
            continue
        sims, lives = simulated[i1:i2], live[j1:j2]
        key = _label((lives or sims)[0], prefix)
        entries.append(DiffEntry(key, "path", _path(sims), _path(lives)))
    return entries


def compare(simulated: Trace, live: Trace) -> list[DiffEntry]:
    entries = _hops(simulated.hops, live.hops, reply=False)
    if simulated.verdict != live.verdict:
        entries.append(DiffEntry("result", "verdict", simulated.verdict.value,
                                 live.verdict.value))
        return entries  # the answers of two different ends are not comparable
    entries += _hops(simulated.reply, live.reply, reply=True)
    sim_reply, live_reply = simulated.reply_verdict, live.reply_verdict
    if sim_reply != live_reply:
        entries.append(DiffEntry("reply", "verdict", sim_reply.value if sim_reply else "-",
                                 live_reply.value if live_reply else "-"))
    return entries
