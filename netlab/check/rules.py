"""Does a node's kube-proxy rule set implement a service port? Pure, for both proxy modes.

The rules are read by netlab.proxy.rules_view (python-iptables in iptables
mode, `nft` in nftables mode) into one shape; this module finds in them the
three things a packet needs: a frontend that catches ClusterIP:port (and the
NodePort), and DNAT rules to the endpoints kube-proxy should use on that node.
What is missing or extra becomes the step's evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlab.proxy.iptables import names
from netlab.proxy.model import ServicePort
from netlab.proxy.nftables import names as nft
from netlab.proxy.rules_view import NFT_TABLE, Rule

_DNAT = re.compile(r"(?:--to-destination|dnat (?:ip )?to) (\d+\.\d+\.\d+\.\d+:\d+)")


@dataclass(frozen=True)
class Found:
    """What one node's rules hold for one service port."""

    cluster_ip: bool  # a frontend for ClusterIP:port
    node_port: bool  # a frontend for the NodePort (False when the port has none)
    no_endpoints: bool  # the REJECT kube-proxy writes for a port without endpoints
    dnat: frozenset[str]  # IP:port targets of its DNAT rules
    rules: int


def _catches(rule: Rule, ip: str, port: int, proto: str) -> bool:
    """Does the rule match destination ip:port/proto (an nft map element, or -d/--dport)?"""
    if rule.table == NFT_TABLE:  # `IP . proto . port : verdict`
        return rule.spec.startswith(f"{ip} . {proto} . {port} ")
    spec = f"{rule.spec} "
    return f"-d {ip}/32 " in spec and f"--dport {port} " in spec and f"-p {proto} " in spec


def _is_frontend(rule: Rule) -> bool:
    if rule.table == NFT_TABLE:
        return rule.chain == nft.SERVICE_IPS
    return rule.table == "nat" and rule.chain == names.KUBE_SERVICES


def _is_no_endpoints(rule: Rule) -> bool:
    if rule.table == NFT_TABLE:
        return rule.chain == nft.NO_ENDPOINT_SERVICES
    return rule.table == "filter" and rule.chain == names.KUBE_SERVICES \
        and rule.target == "REJECT"


def _catches_nodeport(rule: Rule, node_port: int, proto: str) -> bool:
    if rule.table == NFT_TABLE:
        return rule.chain == nft.SERVICE_NODEPORTS \
            and rule.spec.startswith(f"{proto} . {node_port} ")
    return rule.table == "nat" and rule.chain == names.KUBE_NODEPORTS \
        and f"--dport {node_port} " in f"{rule.spec} " and f"-p {proto} " in f"{rule.spec} "


def found(rules: list[Rule], port: ServicePort) -> Found:
    proto = port.protocol.lower()
    ip, number = port.cluster_ip, port.port
    return Found(
        cluster_ip=any(_is_frontend(r) and _catches(r, ip, number, proto) for r in rules),
        node_port=bool(port.node_port) and any(_catches_nodeport(r, port.node_port, proto)
                                               for r in rules),
        no_endpoints=any(_is_no_endpoints(r) and _catches(r, ip, number, proto)
                         for r in rules),
        dnat=frozenset(m.group(1) for r in rules if (m := _DNAT.search(r.spec))),
        rules=len(rules))


def problems(have: Found, port: ServicePort, required: set[str],
             allowed: set[str]) -> list[str]:
    """What keeps these rules from sending ClusterIP (and NodePort) traffic where it belongs."""
    out = []
    if not have.cluster_ip:
        out.append(f"no rule catches {port.cluster_ip}:{port.port}/{port.protocol}"
                   + (" (only the no-endpoints REJECT)" if have.no_endpoints else ""))
    if port.node_port and not have.node_port:
        out.append(f"no rule catches NodePort {port.node_port}/{port.protocol}")
    missing = sorted(required - have.dnat)
    if missing:
        out.append(f"no DNAT to {', '.join(missing)} reachable from its rules")
    stale = sorted(have.dnat - allowed)
    if stale:
        out.append(f"DNAT to {', '.join(stale)}, which is no endpoint (stale rules)")
    return out


def summary(have: Found, port: ServicePort) -> str:
    """The evidence line for rules that are fine."""
    parts = [f"{port.cluster_ip}:{port.port}"]
    if port.node_port:
        parts.append(f"NodePort {port.node_port}")
    targets = ", ".join(sorted(have.dnat)) or "none"
    return f"{' + '.join(parts)} -> DNAT to {targets} ({have.rules} rules)"
