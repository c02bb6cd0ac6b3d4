"""How a netfilter outcome reads in a hop: the Service behind it, its match text, why it dropped.

Pure functions over the rules a packet matched (RuleHit), for both rule sources:
iptables, where kube-proxy's comments name the Service port (`ns/name:port`), and
kube-proxy's nftables table, where per-service chain names carry it
(`service-SUSTUHLJ-default/web/tcp/http`) and verdict-map elements decide what
happens to a Service without (local) endpoints.
"""

from __future__ import annotations

from netlab.trace.model import DropReason, FlowTuple, RuleHit
from netlab.trace.netfilter import Outcome
from netlab.trace.nft import NO_ENDPOINT_MAPS, TABLE_LABEL


def service_in_comment(comment: str) -> tuple[str, str | None] | None:
    """`ns/name:port ...` at the start of kube-proxy's comments -> (ns/name, port)."""
    words = comment.replace('"', "").split()
    for word in words:
        if word.count("/") == 1 and not word[0].isdigit():
            svc, _, port = word.partition(":")
            return svc, port or None
    return None


def service_of_chains(hit: RuleHit) -> tuple[str, str | None] | None:
    """nftables mode: the Service port a per-service chain's name carries
    (`service-SUSTUHLJ-default/web/tcp/http` -> default/web:http), for the chain
    the rule is in or the one a map element sends to."""
    if hit.table != TABLE_LABEL:
        return None
    from netlab.proxy.nftables.rules_view import port_of_chain

    for name in (hit.chain, hit.target):
        port = port_of_chain(name)
        if port:
            return service_in_comment(port)
    return None


def _no_endpoint_element(hits: list[RuleHit]) -> RuleHit | None:
    """nftables mode: the no-endpoint-services / -nodeports element that decided."""
    return next((h for h in reversed(hits) if h.table == TABLE_LABEL
                 and h.chain.lstrip("@") in NO_ENDPOINT_MAPS), None)


def drop_reason(hits: list[RuleHit]) -> DropReason:
    element = _no_endpoint_element(hits)
    if element is not None:  # `drop` for Local policies, `goto reject-chain` for none at all
        return DropReason.NO_LOCAL_ENDPOINTS if element.target == "drop" \
            else DropReason.NO_ENDPOINTS
    comment = hits[-1].comment if hits else ""
    if "has no local endpoints" in comment:
        return DropReason.NO_LOCAL_ENDPOINTS
    if "has no endpoints" in comment:
        return DropReason.NO_ENDPOINTS
    return DropReason.FILTERED


def verdict_reason(hits: list[RuleHit], reject_with: str | None) -> str:
    if not hits:
        return "chain policy"
    reason = drop_reason(hits)
    element = _no_endpoint_element(hits)
    if element is not None:
        local = " local" if reason == DropReason.NO_LOCAL_ENDPOINTS else ""
        text = f"{element.table} {element.chain}: {element.comment} has no{local} endpoints"
    else:
        hit = hits[-1]
        text = f"{hit.table} {hit.chain}: {hit.comment or hit.rule}"
    if reason == DropReason.NO_LOCAL_ENDPOINTS:
        text += " (externalTrafficPolicy/internalTrafficPolicy Local: no endpoint on this node)"
    if reject_with:
        text += f" ({reject_with})"
    return text


def describe(outcome: Outcome, before: FlowTuple, after: FlowTuple) -> str:
    decisive = outcome.decisive
    nft = decisive is not None and decisive.table == TABLE_LABEL
    where = f" ({decisive.chain})" if nft and decisive else ""
    if outcome.nat == "DNAT":
        return f"DNAT {before.destination} -> {after.destination}{where}"
    if outcome.nat in ("SNAT", "MASQUERADE"):
        return f"{outcome.nat} {before.src} -> {after.src}{where}"
    if nft and decisive and outcome.verdict in ("DROP", "REJECT"):
        return (_no_endpoint_element(outcome.hits) or decisive).rule
    if decisive and (outcome.verdict in ("DROP", "REJECT") or decisive.target == "ACCEPT"):
        why = f'"{decisive.comment}"' if decisive.comment else f"rule {decisive.position}"
        return f"{decisive.chain} {why} -j {decisive.target}"
    if not outcome.hits:
        return "no rule matched (policy ACCEPT)"
    count = len(outcome.hits)
    return f"{count} rule{'s' if count > 1 else ''} matched, none decided (policy ACCEPT)"
