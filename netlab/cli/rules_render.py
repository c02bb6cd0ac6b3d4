"""`knetlab proxy rules`: a node's kube-proxy rules as a tree, Service by Service.

    default/web
    └── port http   31 packets
        ├── nat KUBE-SERVICES
        │     #  pkts  bytes  rule
        │     2    31  1.9K   -d 10.107.164.13/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-…
        ├── nat KUBE-SVC-CDGGSHYLG3RE2FKL
        …

Chains appear in the order a packet meets them (rules_view sorts them), each
rule with its position and packet/byte counters, so a learner can follow a
connection and see which rule it took. The `-m comment` part is cut from each
rule (the tree already says which Service it serves); `iptables-save` shows it.
In IPVS mode a group is a virtual server (`ipvs TCP  10.96.0.1:443 rr`) with a
row per real server, or an ipset with the members that serve the port; ipset
members have no counters (`-`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from netlab.proxy.rules_view import IPSET_TABLE, Rule, RulesView

_COMMENT = re.compile(r'\s*-m comment --comment ("[^"]*"|\S+)')


def short_spec(rule: Rule) -> str:
    """The rule without its comment match, for a narrower line."""
    return _COMMENT.sub("", rule.spec).strip()


def human_bytes(count: int) -> str:
    """Counters as `iptables -L -v` prints them: 1.9K, 12M."""
    value = float(count)
    for unit in ("", "K", "M", "G"):
        if value < 1000 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "" or value >= 10 else f"{value:.1f}{unit}"
        value /= 1000
    return str(count)


def _rules_table(rules: Iterable[Rule]) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
    table.add_column("#", justify="right")
    table.add_column("pkts", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("rule", overflow="fold")
    for rule in rules:
        counted = rule.table != IPSET_TABLE
        table.add_row(str(rule.position), str(rule.packets) if counted else "-",
                      human_bytes(rule.bytes) if counted else "-", short_spec(rule))
    return table


def _chains(rules: list[Rule]) -> list[tuple[str, list[Rule]]]:
    """Consecutive rules of one chain grouped, keeping rules_view's order."""
    groups: list[tuple[str, list[Rule]]] = []
    for rule in rules:
        label = f"{rule.table} {rule.chain}"
        if not groups or groups[-1][0] != label:
            groups.append((label, []))
        groups[-1][1].append(rule)
    return groups


def rules_tree(view: RulesView, node: str, mode: str) -> Tree | Text:
    """The whole view as one rich renderable (a Text when there is nothing to show)."""
    if not view.services and not view.common:
        return Text(f"no kube-proxy rules on {node}")
    tree = Tree(Text.assemble((node, "bold"), f"  kube-proxy rules ({mode} mode)"))
    for service, ports in view.services.items():
        branch = tree.add(Text(service, style="bold cyan"))
        for port in ports:
            name = port.port or "<unnamed>"
            count = f"{port.packets} packet" + ("" if port.packets == 1 else "s")
            leaf = branch.add(Text.assemble(f"port {name}   ", (count, "green")))
            for label, rules in _chains(port.rules):
                leaf.add(Group(Text(label, style="yellow"), _rules_table(rules)))
    if view.common:
        shared = tree.add(Text("shared by every Service", style="bold"))
        for label, rules in _chains(view.common):
            shared.add(Group(Text(label, style="yellow"), _rules_table(rules)))
    return tree
