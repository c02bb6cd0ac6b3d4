"""One point of a packet's walk (nat PREROUTING, filter FORWARD, ...) across every rule source.

On a node both iptables (flannel's chains, and kube-proxy's in iptables mode)
and nftables (kube-proxy's `ip kube-proxy` table in nftables mode) hook the
same places. The kernel runs them by priority: nft's filter-prerouting-pre-dnat
(-110) before any DNAT, the nat chains at -100, filter at 0, source NAT at 100.
Among nat chains of one hook the first that translates wins: the kernel does
not consult the others for that connection. At equal priority nft's chain is
taken first here (the kernel orders them by registration, which a lab does not
fix; kube-proxy's and flannel's chains never both translate one packet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netlab.trace.netfilter import HookContext, Outcome, Packet, Ruleset, evaluate

# Priority of the legacy iptables tables at the walk's points (NF_IP_PRI_*).
IPTABLES_PRIORITY = {("nat", "PREROUTING"): -100, ("nat", "OUTPUT"): -100,
                     ("nat", "POSTROUTING"): 100, ("filter", "INPUT"): 0,
                     ("filter", "FORWARD"): 0, ("filter", "OUTPUT"): 0}


@dataclass(frozen=True)
class _Source:
    priority: int
    order: int  # ties: nft (0) before iptables (1)
    translates: bool  # a nat-type chain: skipped once the connection is translated
    run: Callable[[Packet], list[Outcome]]


def evaluate_point(rules: Ruleset, table: str, hook: str, packet: Packet,
                   ctx: HookContext) -> list[Outcome]:
    """Every way the packet can leave this point, most probable first."""
    sources = [_Source(IPTABLES_PRIORITY.get((table, hook), 0), 1, table == "nat",
                       lambda p: evaluate(rules, table, hook, p, ctx))]
    if rules.nft is not None:
        from netlab.trace.nft import evaluate_chain

        nft = rules.nft
        for chain in nft.base_chains(table, hook):
            sources.append(_Source(chain.priority, 0, chain.kind == "nat",
                                   lambda p, c=chain: evaluate_chain(nft, c, p, ctx)))
    sources.sort(key=lambda s: (s.priority, s.order))
    outcomes = [Outcome("ACCEPT", packet, [])]
    for source in sources:
        step: list[Outcome] = []
        for before in outcomes:
            if before.verdict != "ACCEPT" or (source.translates and before.nat):
                step.append(before)
                continue
            for o in source.run(before.packet):
                step.append(Outcome(o.verdict, o.packet, before.hits + o.hits,
                                    before.probability * o.probability, o.reject_with,
                                    o.nat or before.nat, before.notes + [
                                        n for n in o.notes if n not in before.notes]))
        outcomes = step
    outcomes.sort(key=lambda o: -o.probability)
    return outcomes
