"""What kube-proxy's IPVS mode wants in the kernel, for one snapshot.

Pure: a snapshot, the node's settings and its local addresses go in; the
virtual servers with their real servers, the addresses kube-ipvs0 must hold,
the members of every ipset and the `iptables-restore` payload come out. No
kernel; `netlab.proxy.ipvs.diff` turns this into the few changes a sync makes.

It follows kube-proxy's syncProxyRules (kube-proxy.md §3; pkg/proxy/ipvs/proxier.go):

* every ClusterIP, externalIP and LoadBalancer IP of a service port is a
  virtual server, and so is every local node address for its NodePort; real
  servers are the endpoints, weight 1, forwarded by NAT ("Masq"); the
  scheduler is `rr` unless configured; ClientIP affinity makes the virtual
  server persistent for timeoutSeconds;
* ClusterIPs, and externalIP/LB IPs that are not node addresses, are bound to
  the kube-ipvs0 dummy, so the kernel delivers their packets locally, where
  IPVS takes them;
* a Local traffic policy gives the virtual server the node's own endpoints,
  or, where the node has none, every cluster endpoint (kube-proxy PR #97081,
  unlike iptables mode, which drops); a Service without endpoints keeps its
  virtual servers with no real server (the kernel answers ICMP unreachable);
* the ipsets name what the constant set of iptables rules acts on, so the
  rules do not grow with the number of Services.

Services are visited in name order rather than Go's random map order, so two
renders of the same state are equal.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from netlab.proxy.changes import Snapshot
from netlab.proxy.iptables.render import JumpRule
from netlab.proxy.ipvs import names as n
from netlab.proxy.model import Endpoint, NamespacedName, ServicePort, ServicePortName
from netlab.proxy.topology import Categorized, categorize_endpoints

LOOPBACK = "127.0.0.0/8"


@dataclass(frozen=True)
class NodeConfig:
    """The per-node settings the IPVS state depends on (kube-proxy's flags, lab defaults)."""

    node_name: str
    node_ips: tuple[str, ...] = ()  # the first is the primary (LB source ranges)
    cluster_cidr: str | None = "10.244.0.0/16"  # local-traffic detector; None: none
    masquerade_bit: int = 14
    masquerade_all: bool = False
    scheduler: str = n.DEFAULT_SCHEDULER  # --ipvs-scheduler
    random_fully: bool = True  # MASQUERADE --random-fully (iptables >= 1.6.2)
    strict_arp: bool = False  # --ipvs-strict-arp: arp_ignore=1, arp_announce=2

    def __post_init__(self) -> None:
        if self.scheduler not in n.SCHEDULERS:
            raise ValueError(f"unknown IPVS scheduler {self.scheduler!r}; expected one of "
                             f"{', '.join(n.SCHEDULERS)}")

    @property
    def mark(self) -> str:
        """The masquerade mark as kube-proxy prints it (Go `%#08x`: `0x00004000`)."""
        return f"0x{1 << self.masquerade_bit:08x}"


VSKey = tuple[str, str, int]  # (protocol, address, port): what identifies a virtual server
Real = tuple[str, int]  # (address, port) of a real server


class VirtualServer(NamedTuple):
    """One IPVS service (kube-proxy's utilipvs.VirtualServer, IPv4 only)."""

    protocol: str  # TCP, UDP or SCTP
    address: str
    port: int
    scheduler: str = n.DEFAULT_SCHEDULER
    flags: int = 0  # FLAG_PERSISTENT, FLAG_SOURCE_HASH; never FLAG_HASHED
    timeout: int = 0  # persistence timeout, seconds

    @property
    def key(self) -> VSKey:
        return (self.protocol, self.address, self.port)

    def __str__(self) -> str:
        """As `ipvsadm -Ln` prints it: `TCP  10.96.0.1:443 rr persistent 10800`."""
        text = f"{self.protocol}  {self.address}:{self.port} {self.scheduler}"
        return text + (f" persistent {self.timeout}" if self.flags & n.FLAG_PERSISTENT else "")


@dataclass(frozen=True)
class Desired:
    """Everything one IPVS-mode sync makes the kernel hold."""

    services: dict[VSKey, VirtualServer]
    reals: dict[VSKey, frozenset[Real]]
    owners: dict[VSKey, ServicePortName]  # which service port each virtual server serves
    bound: frozenset[str]  # addresses on kube-ipvs0 (and the members of KUBE-IPVS-IPS)
    ipsets: dict[str, frozenset[str]]  # every set, by name, members as `ipset list` prints them
    iptables: str  # the iptables-restore payload, hooks excluded
    nat_rules: int
    filter_rules: int
    no_local_internal: int  # services with iTP=Local and no local endpoints
    no_local_external: int  # services with eTP=Local and no local endpoints


def ip_port(ip: str, protocol: str, port: int) -> str:
    """A hash:ip,port member: `10.96.0.1,tcp:443`."""
    return f"{ip},{protocol}:{port}"


class _Builder:
    """Accumulates one render; kept apart from `render` so each step reads on its own."""

    def __init__(self, node: NodeConfig, local_addresses: Collection[str]) -> None:
        self.node = node
        self.local = frozenset(local_addresses)
        self.node_ips = tuple(sorted(self.local, key=ipaddress.IPv4Address))
        self.services: dict[VSKey, VirtualServer] = {}
        self.reals: dict[VSKey, frozenset[Real]] = {}
        self.owners: dict[VSKey, ServicePortName] = {}
        self.bound: set[str] = set()
        self.sets: dict[str, set[str]] = {info.name: set() for info in n.IPSETS}
        self.no_local_internal: set[NamespacedName] = set()
        self.no_local_external: set[NamespacedName] = set()
        self.lb_no_node_access: list[tuple[str, str, int]] = []
        primary = node.node_ips[0] if node.node_ips else None
        self.primary = ipaddress.IPv4Address(primary) if primary else None

    def virtual_server(self, spn: ServicePortName, svc: ServicePort, address: str, port: int,
                       cat: Categorized, local_only: bool, bind: bool) -> None:
        flags = timeout = 0
        if svc.affinity_timeout:
            flags |= n.FLAG_PERSISTENT
            timeout = svc.affinity_timeout
        if self.node.scheduler == "mh":
            flags |= n.FLAG_SOURCE_HASH
        vs = VirtualServer(spn.protocol, address, port, self.node.scheduler, flags, timeout)
        self.services[vs.key] = vs
        self.owners[vs.key] = spn
        self.reals[vs.key] = frozenset((ep.ip, ep.port) for ep in self.endpoints(spn, svc, cat,
                                                                                  local_only))
        if bind:
            self.bound.add(address)

    def endpoints(self, spn: ServicePortName, svc: ServicePort, cat: Categorized,
                  local_only: bool) -> tuple[Endpoint, ...]:
        """kube-proxy's syncEndpoint: Local falls back to cluster endpoints (PR #97081)."""
        if not local_only:
            return cat.cluster
        if cat.local:
            return cat.local
        if cat.has_any and svc.internal_policy_local:
            self.no_local_internal.add(spn.service)
        if cat.has_any and svc.external_policy_local:
            self.no_local_external.add(spn.service)
        return cat.cluster

    def service_port(self, spn: ServicePortName, svc: ServicePort,
                     endpoints: Sequence[Endpoint], zone: str) -> None:
        proto = spn.protocol.lower()
        port = svc.port
        sets = self.sets
        for ep in endpoints:  # hairpin: every local endpoint, ready or not
            if ep.is_local:
                sets[n.LOOP_BACK].add(f"{ep.ip},{proto}:{ep.port},{ep.ip}")
        cat = categorize_endpoints(endpoints, svc, self.node.node_name, zone)
        sets[n.CLUSTER_IP].add(ip_port(svc.cluster_ip, proto, port))
        self.virtual_server(spn, svc, svc.cluster_ip, port, cat, svc.internal_policy_local,
                            bind=True)
        external_local = svc.external_policy_local
        for ip in svc.external_ips:
            sets[n.EXTERNAL_IP_LOCAL if external_local else n.EXTERNAL_IP].add(
                ip_port(ip, proto, port))
            self.virtual_server(spn, svc, ip, port, cat, external_local,
                                bind=ip not in self.local)
        for ip in svc.load_balancer_ips:
            member = ip_port(ip, proto, port)
            sets[n.LOAD_BALANCER].add(member)
            if external_local:
                sets[n.LOAD_BALANCER_LOCAL].add(member)
            ranges = svc.load_balancer_source_ranges
            if ranges:
                sets[n.LOAD_BALANCER_FW].add(member)
                for cidr in ranges:
                    sets[n.LOAD_BALANCER_SOURCE_CIDR].add(f"{member},{cidr}")
                if self.primary is not None and any(
                        self.primary in ipaddress.ip_network(cidr) for cidr in ranges):
                    sets[n.LOAD_BALANCER_SOURCE_IP].add(f"{member},{ip}")
                else:  # the node may not reach the LB IP either (kubernetes #119656)
                    self.lb_no_node_access.append((ip, proto, port))
            self.virtual_server(spn, svc, ip, port, cat, external_local,
                                bind=ip not in self.local)
        if svc.node_port and self.node_ips:
            self.node_port(spn, svc, cat, proto)
        if svc.health_check_node_port:
            sets[n.HEALTH_CHECK_NODE_PORT].add(str(svc.health_check_node_port))

    def node_port(self, spn: ServicePortName, svc: ServicePort, cat: Categorized,
                  proto: str) -> None:
        local = svc.external_policy_local
        if proto == "sctp":
            members = [ip_port(ip, proto, svc.node_port) for ip in self.node_ips]
            self.sets[n.NODE_PORT_SCTP].update(members)
            if local:
                self.sets[n.NODE_PORT_LOCAL_SCTP].update(members)
        else:
            plain, local_set = ((n.NODE_PORT_TCP, n.NODE_PORT_LOCAL_TCP) if proto == "tcp"
                                else (n.NODE_PORT_UDP, n.NODE_PORT_LOCAL_UDP))
            self.sets[plain].add(str(svc.node_port))
            if local:
                self.sets[local_set].add(str(svc.node_port))
        for ip in self.node_ips:  # node addresses are never bound to kube-ipvs0
            self.virtual_server(spn, svc, ip, svc.node_port, cat, local, bind=False)


def render(snapshot: Snapshot, node: NodeConfig, local_addresses: Collection[str]) -> Desired:
    """The desired IPVS, ipset and iptables state for a snapshot.

    `local_addresses` are the node's IPv4 addresses on every link but
    kube-ipvs0, loopback excluded: kube-proxy makes a NodePort virtual server
    on each (its default, empty --nodeport-addresses) and does not bind an
    externalIP that is one of them.
    """
    build = _Builder(node, local_addresses)
    endpoints = snapshot.endpoints
    for spn in sorted(snapshot.services):
        build.service_port(spn, snapshot.services[spn], endpoints.get(spn, ()), snapshot.zone)
    build.sets[n.IPVS_IPS] = set(build.bound)
    ipsets = {name: frozenset(members) for name, members in build.sets.items()}
    nat, filt = iptables_rules(node, ipsets, build.lb_no_node_access)
    payload = "\n".join(["*nat", *(f":{c} - [0:0]" for c in n.NAT_CHAINS), *nat, "COMMIT",
                         "*filter", *(f":{c} - [0:0]" for c in n.FILTER_CHAINS), *filt,
                         "COMMIT", ""])
    return Desired(build.services, build.reals, build.owners, frozenset(build.bound), ipsets,
                   payload, len(nat), len(filt), len(build.no_local_internal),
                   len(build.no_local_external))


# (set, table, from chain, to, match type, protocol): kube-proxy's ipsetWithIptablesChain.
# A set's rule is written only while the set has members.
SET_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    (n.LOOP_BACK, "nat", n.KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (n.LOAD_BALANCER, "nat", n.KUBE_SERVICES, n.KUBE_LOAD_BALANCER, "dst,dst", ""),
    (n.LOAD_BALANCER_LOCAL, "nat", n.KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    (n.NODE_PORT_LOCAL_TCP, "nat", n.KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (n.NODE_PORT_TCP, "nat", n.KUBE_NODE_PORT, n.KUBE_MARK_MASQ, "dst", "tcp"),
    (n.NODE_PORT_LOCAL_UDP, "nat", n.KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (n.NODE_PORT_UDP, "nat", n.KUBE_NODE_PORT, n.KUBE_MARK_MASQ, "dst", "udp"),
    (n.NODE_PORT_LOCAL_SCTP, "nat", n.KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (n.NODE_PORT_SCTP, "nat", n.KUBE_NODE_PORT, n.KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (n.LOAD_BALANCER_FW, "filter", n.KUBE_PROXY_FIREWALL, n.KUBE_SOURCE_RANGES_FIREWALL,
     "dst,dst", ""),
    (n.LOAD_BALANCER_SOURCE_CIDR, "filter", n.KUBE_SOURCE_RANGES_FIREWALL, "RETURN",
     "dst,dst,src", ""),
    (n.LOAD_BALANCER_SOURCE_IP, "filter", n.KUBE_SOURCE_RANGES_FIREWALL, "RETURN",
     "dst,dst,src", ""),
)


def _set_match(name: str, match: str) -> str:
    return f'-m comment --comment "{n.IPSET_BY_NAME[name].comment}" -m set --match-set ' \
           f"{name} {match}"


def iptables_rules(node: NodeConfig, ipsets: dict[str, frozenset[str]],
                   lb_no_node_access: Sequence[tuple[str, str, int]] = ()
                   ) -> tuple[list[str], list[str]]:
    """The nat and filter rules, in kube-proxy's writeIptablesRules order.

    Their number does not depend on how many Services there are: only on
    which ipsets have members (and on LB IPs the node may not reach).
    """
    nat = [f"-A {n.KUBE_SERVICES} -s {LOOPBACK} -j RETURN"]
    filt: list[str] = []
    for name, table, chain, target, match, protocol in SET_RULES:
        if ipsets[name]:
            proto = f"-p {protocol} " if protocol else ""
            (filt if table == "filter" else nat).append(
                f"-A {chain} {proto}{_set_match(name, match)} -j {target}")
    if ipsets[n.CLUSTER_IP]:
        masq = f"-A {n.KUBE_SERVICES} {{}} -j {n.KUBE_MARK_MASQ}"
        if node.masquerade_all:
            nat.append(masq.format(_set_match(n.CLUSTER_IP, "dst,dst")))
        elif node.cluster_cidr is not None:
            # Off-cluster traffic to a VIP (a node process, a routed client) may
            # leave the node again towards the endpoint: masquerade it.
            nat.append(masq.format(_set_match(n.CLUSTER_IP, "dst,dst")
                                   + f" ! -s {node.cluster_cidr}"))
        else:
            # No detector: a node process reaching a VIP picks the VIP itself as
            # source (it is on kube-ipvs0); masquerade exactly that.
            nat.append(masq.format(_set_match(n.CLUSTER_IP, "src,dst")))
    for name, masquerade in ((n.EXTERNAL_IP, True), (n.EXTERNAL_IP_LOCAL, False)):
        if not ipsets[name]:
            continue
        head = f"-A {n.KUBE_SERVICES} {_set_match(name, 'dst,dst')}"
        if masquerade:
            nat.append(f"{head} -j {n.KUBE_MARK_MASQ}")
        # Off-machine traffic (not from a bridge port, not from this host) ...
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL "
                   "-j ACCEPT")
        # ... and traffic to an external IP the node holds itself stay here.
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")
    nat.append(f"-A {n.KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {n.KUBE_NODE_PORT}")
    nat.append(f"-A {n.KUBE_LOAD_BALANCER} -j {n.KUBE_MARK_MASQ}")
    filt.append(f"-A {n.KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in lb_no_node_access:
        filt.append(f"-A {n.KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} "
                    f"--vproto {proto} --vport {port} -j DROP")
    # Accept what IPVS will take, whatever other rules later in the chain say.
    for name in (n.CLUSTER_IP, n.LOAD_BALANCER):
        if ipsets[name]:
            nat.append(f"-A {n.KUBE_SERVICES} -m set --match-set {name} dst,dst -j ACCEPT")
    mark = f"{node.mark}/{node.mark}"
    filt.append(f'-A {n.KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
                f"-m mark --mark {mark} -j ACCEPT")
    filt.append(f'-A {n.KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack '
                'rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    filt.append(f"-A {n.KUBE_NODE_PORT} {_set_match(n.HEALTH_CHECK_NODE_PORT, 'dst')} -j ACCEPT")
    # A host service must not answer on a VIP (kubernetes #72236): RETURN for the
    # service ports, REJECT new connections to anything else on kube-ipvs0.
    for name, match in ((n.LOAD_BALANCER, "dst,dst"), (n.CLUSTER_IP, "dst,dst"),
                        (n.EXTERNAL_IP, "dst,dst"), (n.EXTERNAL_IP_LOCAL, "dst,dst"),
                        (n.HEALTH_CHECK_NODE_PORT, "dst")):
        filt.append(f"-A {n.KUBE_IPVS_FILTER} -m set --match-set {name} {match} -j RETURN")
    filt.append(f"-A {n.KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set "
                f"{n.IPVS_IPS} dst -j REJECT")
    nat.append(f"-A {n.KUBE_POSTROUTING} -m mark ! --mark {mark} -j RETURN")
    # Clear the mark so a packet that goes round again is not masqueraded twice.
    nat.append(f"-A {n.KUBE_POSTROUTING} -j MARK --xor-mark {node.mark}")
    nat.append(f'-A {n.KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic '
               f'requiring SNAT" -j MASQUERADE' + (" --random-fully" if node.random_fully
                                                  else ""))
    nat.append(f"-A {n.KUBE_MARK_MASQ} -j MARK --or-mark {node.mark}")
    return nat, filt


# The hooks (kube-proxy's iptablesJumpChain), each prepended when missing.
JUMP_RULES: tuple[JumpRule, ...] = (
    JumpRule("nat", "OUTPUT", n.KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "PREROUTING", n.KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "POSTROUTING", n.KUBE_POSTROUTING, "kubernetes postrouting rules"),
    JumpRule("filter", "FORWARD", n.KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("filter", "INPUT", n.KUBE_NODE_PORT, "kubernetes health check rules"),
    JumpRule("filter", "INPUT", n.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    JumpRule("filter", "FORWARD", n.KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    JumpRule("filter", "INPUT", n.KUBE_IPVS_FILTER, "kubernetes ipvs access filter"),
    JumpRule("filter", "OUTPUT", n.KUBE_IPVS_OUT_FILTER, "kubernetes ipvs access filter"),
)


def with_jumps(payload: str, missing: Sequence[JumpRule]) -> str:
    """The payload with `-I CHAIN 1` lines for missing hooks, at the end of their table.

    In list order, each at position 1: the same built-in chains as kube-proxy's
    EnsureRule(Prepend) calls one by one leave.
    """
    if not missing:
        return payload
    lines = payload.split("\n")
    out: list[str] = []
    table = ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:]
        elif line == "COMMIT":
            out += [j.insert_line() for j in missing if j.table == table]
        out.append(line)
    return "\n".join(out)
