"""The kube-proxy rules of one node, with packet counters, grouped by the Service they implement.

For `knetlab proxy rules NODE [--service ns/name]`: reads the node's legacy
iptables with python-iptables (inside the node's namespace) and returns data;
the CLI renders it. A node whose proxy runs in nftables or IPVS mode is read by
`netlab.proxy.nftables.rules_view` or `netlab.proxy.ipvs.rules_view` instead,
into the same types; `read_rules` picks the reader (by the mode given, or by
whether the `ip kube-proxy` nft table or the kube-ipvs0 device exists). A
rule belongs to a service port when its comment names it (`ns/svc:port
cluster IP`, `ns/svc:port -> ip:port`, …) or when it sits in
a per-service chain (KUBE-SVC/SVL/EXT/FW/SEP) reached from such a rule. The
second path matters in large clusters, where kube-proxy drops the comments
of endpoint rules.

With `service` given, only the top-level chains and the chains reachable from
that service's rules are decoded, so asking about one service on a node with
10,000 of them does not decode 400,000 rules.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netlab.kernel import netns
from netlab.proxy.iptables import names

# Chains whose rules name the service in a comment, per table.
ENTRY_CHAINS = {
    "nat": (names.KUBE_SERVICES, names.KUBE_NODEPORTS),
    "filter": (names.KUBE_SERVICES, names.KUBE_EXTERNAL_SERVICES, names.KUBE_NODEPORTS,
               names.KUBE_PROXY_FIREWALL),
}
COMMON_CHAINS = {
    "nat": (names.KUBE_POSTROUTING, names.KUBE_MARK_MASQ),
    "filter": (names.KUBE_FORWARD, names.KUBE_FIREWALL),
}
_SERVICE_IN_COMMENT = re.compile(
    r"(?:^|\s)([a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*(?::[-a-z0-9]+)?)(?:\s|$)")
NFT_TABLE = "kube-proxy"  # Rule.table of rules read from nftables mode's table
IPVS_TABLE = "ipvs"  # Rule.table of IPVS mode's real servers (one Rule each)
IPSET_TABLE = "ipset"  # Rule.table of IPVS mode's ipset members (one Rule each)
_iptc_lock = threading.Lock()  # python-iptables caches one handle per table, process-wide


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    position: int  # 1-based, as `iptables -L --line-numbers`
    spec: str  # match and target, spelled like `iptables -S` after the chain name
    target: str
    comment: str
    packets: int
    bytes: int


@dataclass
class ServicePortRules:
    """The rules implementing one service port, in table/chain/position order."""

    service: str  # ns/name
    port: str  # port name ("" for an unnamed port)
    rules: list[Rule] = field(default_factory=list)

    @property
    def packets(self) -> int:
        """First packets of the connections this service port took in.

        iptables: what its rules in the top-level chains counted. nftables has
        no per-service rules there (a map lookup dispatches), so: what its
        endpoint chains' `dnat` rules counted. IPVS counts every packet, not
        first packets: there, the packets its real servers received.
        """
        return sum(r.packets for r in self.rules
                   if r.chain in ENTRY_CHAINS.get(r.table, ())
                   or (r.table == NFT_TABLE and r.target == "dnat")
                   or r.table == IPVS_TABLE)


@dataclass
class RulesView:
    services: dict[str, list[ServicePortRules]]  # "ns/name" -> its ports
    common: list[Rule]  # kube-proxy rules that serve every service (masquerade, forward)


def _spec(rule: Any) -> tuple[str, str, str]:
    """A python-iptables rule as (spec, target, comment)."""
    parts: list[str] = []
    for flag, value in (("-s", rule.src), ("-d", rule.dst)):
        if value.endswith("/0.0.0.0"):
            continue
        negate = value.startswith("!")
        address, mask = value.lstrip("!").split("/")
        prefix = sum(bin(int(octet)).count("1") for octet in mask.split("."))
        parts += (["!"] if negate else []) + [flag, f"{address}/{prefix}"]
    if rule.protocol not in ("ip", "0"):
        parts += ["-p", rule.protocol]
    for flag, value in (("-i", rule.in_interface), ("-o", rule.out_interface)):
        if value:
            parts += [flag, value]
    comment = ""
    for match in rule.matches:
        parts += ["-m", match.name]
        for key, values in match.get_all_parameters().items():
            if key == "comment" and match.name == "comment":
                comment = " ".join(values)
            parts += _option(key, values)
    target = rule.target.name if rule.target else ""
    if target:
        parts += ["-j", target]
        for key, values in rule.target.get_all_parameters().items():
            parts += _option(key, values)
    return " ".join(parts), target, comment


def _option(key: str, values: list[str]) -> list[str]:
    negate = bool(values) and values[0] == "!"
    quote = key == "comment"  # iptables-save always quotes comments
    rest = [f'"{v}"' if quote or " " in v else v for v in (values[1:] if negate else values)]
    return (["!"] if negate else []) + [f"--{key}", *rest]


def _read_chain(iptc: Any, table: str, chain: str) -> list[Rule]:
    tab = iptc.Table(table)
    if not tab.is_chain(chain):
        return []
    rules = []
    for i, raw in enumerate(iptc.Chain(tab, chain).rules, start=1):
        spec, target, comment = _spec(raw)
        packets, nbytes = raw.get_counters()
        rules.append(Rule(table, chain, i, spec, target, comment, packets, nbytes))
    return rules


def _service_of(comment: str) -> str | None:
    match = _SERVICE_IN_COMMENT.search(comment)
    return match.group(1) if match else None


def read_rules(namespace: str | None, service: str | None = None,
               mode: str | None = None,
               services: Sequence[Mapping[str, Any]] = ()) -> RulesView:
    """Read kube-proxy's rules and counters in a node namespace, grouped by service port.

    `service` ("ns/name") limits the answer to that Service. `mode` is the
    lab's proxy mode ("iptables", "ipvs" or "nftables"); None looks at the
    node. IPVS keeps no names: `services` (Service objects) name its virtual
    servers.
    """
    if mode is None:
        from netlab.proxy.ipvs.kernel import IpvsKernel
        from netlab.proxy.nftables.kernel import NftKernel

        mode = "nftables" if NftKernel(namespace).table_exists() else \
            "ipvs" if IpvsKernel(namespace).dummy_index() is not None else "iptables"
    if mode == "nftables":
        from netlab.proxy.nftables.rules_view import read_nft_rules  # it imports this module

        return read_nft_rules(namespace, service)
    if mode == "ipvs":
        from netlab.proxy.ipvs.rules_view import read_ipvs_rules  # it imports this module

        return read_ipvs_rules(namespace, service, services)
    return _read_iptables(namespace, service)


def read_chains(namespace: str | None, chains: Mapping[str, Sequence[str]]) -> list[Rule]:
    """Every rule of the named chains ({table: chains}), in that order, with counters."""
    import iptc  # python-iptables; imported late, it loads libiptc

    context = netns.entered(namespace) if namespace else contextlib.nullcontext()
    rules: list[Rule] = []
    with _iptc_lock, context:
        for table, names_ in chains.items():
            iptc.Table(table).refresh()
            for chain in names_:
                rules.extend(_read_chain(iptc, table, chain))
    return rules


def _read_iptables(namespace: str | None, service: str | None) -> RulesView:
    import iptc  # python-iptables; imported late, it loads libiptc

    context = netns.entered(namespace) if namespace else contextlib.nullcontext()
    with _iptc_lock, context:
        for table in ("nat", "filter"):
            iptc.Table(table).refresh()  # first use, or re-read: always inside the namespace
        owner: dict[tuple[str, str], str] = {}  # per-service chain -> "ns/svc:port"
        grouped: dict[str, list[Rule]] = {}
        common: list[Rule] = []
        queue: list[tuple[str, str]] = []
        for table, chains in ENTRY_CHAINS.items():
            for chain in chains:
                for rule in _read_chain(iptc, table, chain):
                    spn = _service_of(rule.comment)
                    if spn is None:
                        if service is None:
                            common.append(rule)  # e.g. the final jump to KUBE-NODEPORTS
                        continue
                    if service and spn.split(":")[0] != service:
                        continue
                    grouped.setdefault(spn, []).append(rule)
                    if names.is_service_chain(rule.target) and (table, rule.target) not in owner:
                        owner[(table, rule.target)] = spn
                        queue.append((table, rule.target))
        while queue:  # per-service chains, following jumps (EXT -> SVC -> SEP …)
            table, chain = queue.pop(0)
            spn = owner[(table, chain)]
            for rule in _read_chain(iptc, table, chain):
                grouped[spn].append(rule)
                if names.is_service_chain(rule.target) and (table, rule.target) not in owner:
                    owner[(table, rule.target)] = spn
                    queue.append((table, rule.target))
        if service is None:
            for table, chains in COMMON_CHAINS.items():
                for chain in chains:
                    common.extend(_read_chain(iptc, table, chain))
    return RulesView(_by_service(grouped), common)


def _by_service(grouped: dict[str, list[Rule]]) -> dict[str, list[ServicePortRules]]:
    out: dict[str, list[ServicePortRules]] = {}
    for spn in sorted(grouped):
        svc, _, port = spn.partition(":")
        rules = sorted(grouped[spn], key=lambda r: (r.table != "nat", _chain_rank(r.chain),
                                                    r.chain, r.position))
        out.setdefault(svc, []).append(ServicePortRules(svc, port, rules))
    return out


def _chain_rank(chain: str) -> int:
    """Top-level chains first, then in the order a packet meets them."""
    order = (names.KUBE_SERVICES, names.KUBE_NODEPORTS, names.KUBE_EXTERNAL_SERVICES,
             names.KUBE_PROXY_FIREWALL, names.FW, names.EXT, names.SVC, names.SVL, names.SEP)
    for rank, prefix in enumerate(order):
        if chain.startswith(prefix):
            return rank
    return len(order)
