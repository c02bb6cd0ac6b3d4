"""The nftables-mode rules of one node, with counters, grouped by the Service they implement.

The nftables twin of `netlab.proxy.rules_view` (same result types). In this
mode a service port owns no rule in a top-level chain: the dispatch is a map
lookup, so what belongs to a service port is its map elements (service-ips,
service-nodeports, firewall-ips, no-endpoint-*) and its own chains
(`service-`, `local-`, `external-`, `firewall-`, `endpoint-`), whose names
carry `ns/name/proto/port`.

Counters: kube-proxy writes no `counter` statements; the lab's proxier adds
one to every rule (`NodeConfig.counters`) so this view can show where packets
went. Map elements have no counters. The packets of a service port are those
its endpoint chains' `dnat` rules counted: the first packet of each new
connection, as in iptables mode.
"""

from __future__ import annotations

import re
from typing import Any

from netlab.proxy.nftables import names as n
from netlab.proxy.nftables.kernel import NftKernel
from netlab.proxy.rules_view import Rule, RulesView, ServicePortRules

MAPS = (n.SERVICE_IPS, n.SERVICE_NODEPORTS, n.FIREWALL_IPS, n.NO_ENDPOINT_SERVICES,
        n.NO_ENDPOINT_NODEPORTS)
_CHAIN_ORDER = (*MAPS, n.FIREWALL, n.EXTERNAL, n.SERVICE, n.LOCAL, n.ENDPOINT)
_CHAIN_HEAD = re.compile(r"^\tchain (\S+) \{")
_RULE_LINE = re.compile(r"^\t\t(.*) # handle (\d+)$")
_COUNTER_VALUES = re.compile(r"counter packets \d+ bytes \d+")
_ACTIONS = ("jump", "goto", "vmap", "dnat", "snat", "masquerade", "reject", "drop", "accept",
            "return", "mangle", "set")


def port_of_chain(chain: str) -> str | None:
    """`ns/name:port` (kube-proxy's ServicePortName spelling) of a per-service chain."""
    if not n.is_service_chain(chain):
        return None
    readable = chain.split("-", 2)[-1].split("__", 1)[0]  # prefix-HASH8-ns/name/proto/port
    parts = readable.split("/")
    if len(parts) != 4:
        return None
    namespace, name, _, port = parts
    return f"{namespace}/{name}:{port}" if port else f"{namespace}/{name}"


def rule_texts(listing: str) -> dict[tuple[str, int], str]:
    """(chain, handle) -> the rule as `nft -a list table` prints it.

    The handle comment and the counter values are cut: the values are in
    Rule.packets and Rule.bytes, as iptables mode's spec leaves them out too.
    """
    texts: dict[tuple[str, int], str] = {}
    chain = ""
    for line in listing.splitlines():
        head = _CHAIN_HEAD.match(line)
        if head:
            chain = head.group(1)
            continue
        rule = _RULE_LINE.match(line)
        if rule and chain:
            texts[(chain, int(rule.group(2)))] = _COUNTER_VALUES.sub("counter", rule.group(1))
    return texts


def _value(v: Any) -> str:
    if isinstance(v, dict):
        if "concat" in v:
            return " . ".join(_value(x) for x in v["concat"])
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
    return str(v)


def _verdict(v: Any) -> tuple[str, str]:
    """A verdict as (text, target): {'goto': {'target': X}} -> ('goto X', X)."""
    if isinstance(v, dict) and v:
        kind, arg = next(iter(v.items()))
        target = arg.get("target", "") if isinstance(arg, dict) else ""
        return (f"{kind} {target}".strip(), target or kind)
    return str(v), str(v)


def _rule(item: dict[str, Any], position: int, texts: dict[tuple[str, int], str]) -> Rule:
    chain = item["chain"]
    packets = nbytes = 0
    target = ""
    for expr in item.get("expr", []):
        (kind, arg), = expr.items()
        if kind == "counter" and isinstance(arg, dict):
            packets += arg.get("packets", 0)
            nbytes += arg.get("bytes", 0)
        elif kind in ("jump", "goto"):
            target = arg.get("target", kind)
        elif kind in _ACTIONS and not target:
            target = kind
    spec = texts.get((chain, item["handle"]), "")
    return Rule(n.TABLE, chain, position, spec, target, item.get("comment", ""), packets, nbytes)


def _elements(item: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A verdict map's elements as (spec, target, comment, owning port or None)."""
    out = []
    for key, verdict in item.get("elem", []):
        comment = ""
        if isinstance(key, dict) and "elem" in key:
            comment = key["elem"].get("comment", "")
            key = key["elem"]["val"]
        text, target = _verdict(verdict)
        note = f' comment "{comment}"' if comment else ""
        owner = port_of_chain(target) or (comment or None)
        out.append((f"{_value(key)}{note} : {text}", target, comment, owner))
    return out


def group(items: list[dict[str, Any]], listing: str, service: str | None = None) -> RulesView:
    """Group a table's JSON listing by service port (pure; see `read_nft_rules`)."""
    texts = rule_texts(listing)
    grouped: dict[str, list[Rule]] = {}
    common: list[Rule] = []
    positions: dict[str, int] = {}
    for entry in items:
        if "map" in entry and entry["map"]["name"] in MAPS:
            name = entry["map"]["name"]
            for i, (spec, target, comment, owner) in enumerate(_elements(entry["map"]), 1):
                if owner is None or (service and owner.split(":")[0] != service):
                    continue
                verb = spec.rsplit(" : ", 1)[1].split(" ", 1)[0]
                grouped.setdefault(owner, []).append(
                    Rule(n.TABLE, name, i, spec, target if verb in ("goto", "jump") else verb,
                         comment, 0, 0))
        elif "rule" in entry:
            item = entry["rule"]
            chain = item["chain"]
            positions[chain] = positions.get(chain, 0) + 1
            owner = port_of_chain(chain)
            if owner is None:
                if service is None:
                    common.append(_rule(item, positions[chain], texts))
                continue
            if service and owner.split(":")[0] != service:
                continue
            grouped.setdefault(owner, []).append(_rule(item, positions[chain], texts))
    return RulesView(_by_service(grouped), common)


def _by_service(grouped: dict[str, list[Rule]]) -> dict[str, list[ServicePortRules]]:
    out: dict[str, list[ServicePortRules]] = {}
    for spn in sorted(grouped):
        svc, _, port = spn.partition(":")
        rules = sorted(grouped[spn], key=lambda r: (_chain_rank(r.chain), r.chain, r.position))
        out.setdefault(svc, []).append(ServicePortRules(svc, port, rules))
    return out


def _chain_rank(chain: str) -> int:
    """Maps first, then chains in the order a packet meets them."""
    for rank, prefix in enumerate(_CHAIN_ORDER):
        if chain == prefix or (prefix.endswith("-") and chain.startswith(prefix)):
            return rank
    return len(_CHAIN_ORDER)


def read_nft_rules(namespace: str | None, service: str | None = None) -> RulesView:
    """Read the `ip kube-proxy` table in a node namespace, grouped by service port.

    `service` ("ns/name") limits the answer to that Service. The whole table is
    listed either way (nft lists a table or one named object, nothing between).
    """
    items, listing = NftKernel(namespace).list_table()
    return group(items, listing, service)
