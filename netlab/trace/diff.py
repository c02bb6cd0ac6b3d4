"""Where the model and the kernel disagree: a simulated trace against its live twin.

Hops are aligned on (place, stage, interface); within aligned hops the fields
that carry a decision are compared (action, the rule or route that decided, the
translated destination, the tunnel's outer addresses, the drop reason). Values
that differ on every run by design (ephemeral and masquerade ports, the VXLAN
source port, counters, conntrack states) are not differences.
"""

from __future__ import annotations

import difflib

from netlab.trace.model import DiffEntry, Hop, Trace


def _label(hop: Hop) -> str:
    return f"{hop.place} {hop.stage}" + (f" {hop.interface}" if hop.interface else "")


def _fields(hop: Hop) -> dict[str, str]:
    out = {"action": hop.action.value, "match": hop.match, "interface": hop.interface or "-"}
    if hop.after is not None:
        out["destination"] = hop.after.destination
        out["source"] = hop.after.src
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


def compare(simulated: Trace, live: Trace) -> list[DiffEntry]:
    sim_keys = [h.key for h in simulated.hops]
    live_keys = [h.key for h in live.hops]
    entries: list[DiffEntry] = []
    matcher = difflib.SequenceMatcher(a=sim_keys, b=live_keys, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for sim_hop, live_hop in zip(simulated.hops[i1:i2], live.hops[j1:j2], strict=True):
                a, b = _fields(sim_hop), _fields(live_hop)
                for name in sorted(set(a) | set(b)):
                    if a.get(name) != b.get(name):
                        entries.append(DiffEntry(_label(live_hop), name, a.get(name, "-"),
                                                 b.get(name, "-")))
            continue
        sims, lives = simulated.hops[i1:i2], live.hops[j1:j2]
        key = _label((lives or sims)[0])
        entries.append(DiffEntry(key, "path", _path(sims), _path(lives)))
    if simulated.verdict != live.verdict:
        entries.append(DiffEntry("result", "verdict", simulated.verdict.value,
                                 live.verdict.value))
    return entries
