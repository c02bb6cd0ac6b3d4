"""The IPVS-mode state of one node, with counters, grouped by the Service it implements.

The IPVS twin of `netlab.proxy.rules_view` (same result types), read from the
kernel: what `ipvsadm -Ln --stats` and `ipset list` show. IPVS keeps no names,
so the Services (plain dicts from the store) say which virtual server belongs
to which service port: its ClusterIP, externalIPs or LB IPs with the port, or
its NodePort on any node address. What matches no Service (a leftover, or
one the proxy ignores) is listed under "shared by every Service", with the
few iptables rules IPVS mode writes.

Each virtual server becomes a group of rows, one per real server, spelled
like `ipvsadm -Ln` (`-> 10.244.1.3:8080 Masq weight 1 active 0 inactive 2`),
with the packets and bytes IPVS counted towards that real server; ipset
members that serve the port follow, one group per set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netlab.errors import ManifestError
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.kernel import opened
from netlab.proxy.ipvs.netlink import Dest, Stats
from netlab.proxy.ipvs.render import VirtualServer, VSKey
from netlab.proxy.model import ServicePortName, service_ports
from netlab.proxy.rules_view import IPSET_TABLE, IPVS_TABLE, Rule, RulesView, ServicePortRules

FORWARD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route"}
IPTABLES_CHAINS = {"nat": n.NAT_CHAINS, "filter": n.FILTER_CHAINS}
NODE_PORT_SETS = {n.NODE_PORT_TCP: "TCP", n.NODE_PORT_LOCAL_TCP: "TCP",
                  n.NODE_PORT_UDP: "UDP", n.NODE_PORT_LOCAL_UDP: "UDP"}


class Owners:
    """Which service port an address, port and protocol belong to, from the Services."""

    def __init__(self, services: Sequence[Mapping[str, Any]]) -> None:
        self.by_address: dict[VSKey, ServicePortName] = {}
        self.by_node_port: dict[tuple[str, int], ServicePortName] = {}
        self.by_health_port: dict[int, ServicePortName] = {}
        for obj in services:
            try:
                ports = service_ports(obj)
            except ManifestError:
                continue  # the proxy skips it too
            for spn, svc in ports.items():
                for ip in (svc.cluster_ip, *svc.external_ips, *svc.load_balancer_ips):
                    self.by_address[(spn.protocol, ip, svc.port)] = spn
                if svc.node_port:
                    self.by_node_port[(spn.protocol, svc.node_port)] = spn
                if svc.health_check_node_port:
                    self.by_health_port[svc.health_check_node_port] = spn

    def of_server(self, vs: VirtualServer) -> ServicePortName | None:
        return self.by_address.get(vs.key) or self.by_node_port.get((vs.protocol, vs.port))

    def of_member(self, name: str, member: str,
                  real_owners: Mapping[tuple[str, str, int], set[ServicePortName]]
                  ) -> set[ServicePortName]:
        """The service ports an ipset member serves (an endpoint may serve several)."""
        parts = member.split(",")
        if name in NODE_PORT_SETS:
            spn = self.by_node_port.get((NODE_PORT_SETS[name], int(member)))
            return {spn} if spn else set()
        if name == n.HEALTH_CHECK_NODE_PORT:
            spn = self.by_health_port.get(int(member))
            return {spn} if spn else set()
        if name == n.IPVS_IPS:
            return {spn for (_, ip, _), spn in self.by_address.items() if ip == member}
        proto, _, port = parts[1].partition(":")
        if name == n.LOOP_BACK:
            return real_owners.get((proto.upper(), parts[0], int(port)), set())
        if name in (n.NODE_PORT_SCTP, n.NODE_PORT_LOCAL_SCTP):
            spn = self.by_node_port.get(("SCTP", int(port)))
            return {spn} if spn else set()
        spn = self.by_address.get((proto.upper(), parts[0], int(port)))
        return {spn} if spn else set()


def server_rows(vs: VirtualServer, stats: Stats, dests: Sequence[Dest]) -> list[Rule]:
    """A virtual server as `ipvsadm -Ln` rows: one per real server."""
    chain = str(vs)
    if not dests:
        return [Rule(IPVS_TABLE, chain, 1, "(no real server: new connections get ICMP port "
                     "unreachable)", "", "", stats.packets_in, stats.bytes_in)]
    return [Rule(IPVS_TABLE, chain, i,
                 f"-> {d.address}:{d.port} {FORWARD.get(d.forward, d.forward)} weight {d.weight} "
                 f"active {d.active} inactive {d.inactive}",
                 FORWARD.get(d.forward, str(d.forward)), "", d.stats.packets_in,
                 d.stats.bytes_in)
            for i, d in enumerate(sorted(dests, key=lambda d: (d.address, d.port)), 1)]


def group(servers: Sequence[tuple[VirtualServer, Stats, Sequence[Dest]]],
          sets: Mapping[str, frozenset[str]], services: Sequence[Mapping[str, Any]],
          iptables: Sequence[Rule] = (), service: str | None = None) -> RulesView:
    """Group what was read by service port (pure; see `read_ipvs_rules`)."""
    owners = Owners(services)
    grouped: dict[ServicePortName, list[Rule]] = {}
    common: list[Rule] = []
    real_owners: dict[tuple[str, str, int], set[ServicePortName]] = {}
    order = sorted(servers, key=lambda s: (owners.of_server(s[0]) is None,
                                           s[0].key not in owners.by_address, s[0].key))
    for vs, stats, dests in order:
        spn = owners.of_server(vs)
        rows = server_rows(vs, stats, dests)
        if spn is None:
            common.extend(rows)
            continue
        for d in dests:
            real_owners.setdefault((vs.protocol, d.address, d.port), set()).add(spn)
        grouped.setdefault(spn, []).extend(rows)
    for info in n.IPSETS:
        for member in sorted(sets.get(info.name, ())):
            found = owners.of_member(info.name, member, real_owners)
            row = Rule(IPSET_TABLE, info.name, 0, member, "", info.comment, 0, 0)
            if not found:
                common.append(row)
            for spn in found:
                grouped.setdefault(spn, []).append(row)
    if service:
        grouped = {spn: rules for spn, rules in grouped.items() if str(spn.service) == service}
        common = []
    else:
        common = list(iptables) + _numbered(common)
    out: dict[str, list[ServicePortRules]] = {}
    for spn in sorted(grouped):
        out.setdefault(str(spn.service), []).append(
            ServicePortRules(str(spn.service), spn.port, _numbered(grouped[spn])))
    return RulesView(out, common)


def _numbered(rules: Sequence[Rule]) -> list[Rule]:
    """ipset rows numbered within their set, as shown (one member may serve several ports)."""
    out: list[Rule] = []
    counts: dict[str, int] = {}
    for rule in rules:
        if rule.table == IPSET_TABLE:
            counts[rule.chain] = counts.get(rule.chain, 0) + 1
            rule = Rule(rule.table, rule.chain, counts[rule.chain], rule.spec, rule.target,
                        rule.comment, 0, 0)
        out.append(rule)
    return out


def read_ipvs_rules(namespace: str | None, service: str | None = None,
                    services: Sequence[Mapping[str, Any]] = ()) -> RulesView:
    """Read a node's IPVS state, ipsets and IPVS-mode iptables rules, by service port.

    `service` ("ns/name") limits the answer to that Service; `services` are
    the lab's Service objects, which name the virtual servers.
    """
    from netlab.proxy.rules_view import read_chains

    with opened(namespace) as kernel:
        servers = [(vs, stats, kernel.dests(vs)) for vs, stats in kernel.service_stats()]
        sets = kernel.read_sets()
    iptables = [] if service else read_chains(namespace, IPTABLES_CHAINS)
    return group(servers, sets, services, iptables, service)
