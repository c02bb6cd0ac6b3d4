"""The `nft -f` transaction kube-proxy's nftables mode writes.

Pure: a snapshot, the node's settings and what the previous sync left in the
table go in; the transaction text and the new table state come out. No
kernel. The objects, their names, rules and order follow kube-proxy's
nftables proxier (kube-proxy.md §4, upstream `baseRules` and
`TestOverallNFTablesRules`), so `nft list table ip kube-proxy` in a lab reads
like a real node's.

How a sync updates the table, as kube-proxy does it:

* A full sync re-declares the table, base chains, top-level chains, sets and
  maps, flushes the maps and re-adds every element, and re-creates every
  per-service chain (`add chain` + `flush chain` + its rules). On the first
  sync of a proxier the base chains are deleted and re-created once, so a
  changed hook priority takes effect.
* A partial sync writes the chains only of services whose Service or
  EndpointSlices changed, and only the map elements that differ from what the
  table holds (delete + add for a changed verdict, delete for a gone key).
* Per-service chains no longer needed are flushed at once and deleted by a
  later, separate transaction at least a second after (`cleanup`): before
  kernel 6.2 a chain just unreferenced by a map element cannot be deleted
  right away. Affinity sets no longer needed are deleted at once.

Services are visited in name order rather than Go's random map order, so two
syncs of the same state write the same text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from netlab.proxy.changes import Snapshot
from netlab.proxy.nftables import names as n
from netlab.proxy.topology import categorize_endpoints, policy_chains

STALE_CHAIN_DELAY = 1.0  # seconds between flushing a stale chain and deleting it

_T = f"{n.FAMILY} {n.TABLE}"  # "ip kube-proxy", as every command names the table


@dataclass(frozen=True)
class NodeConfig:
    """The per-node settings the rules depend on (kube-proxy's flags, our lab defaults)."""

    node_name: str
    node_ips: tuple[str, ...] = ()  # the first is the node's primary IP
    cluster_cidr: str | None = "10.244.0.0/16"  # local-traffic detector; None: none
    service_cidrs: tuple[str, ...] = ("10.96.0.0/12",)  # unallocated ClusterIPs are dropped
    masquerade_bit: int = 14
    masquerade_all: bool = False
    # --nodeport-addresses: CIDRs and/or "primary" (nftables mode's default); () is
    # "every local address" (fib daddr type local), as iptables mode does.
    nodeport_addresses: tuple[str, ...] = ("primary",)
    # A `counter` statement in every rule, for `knetlab proxy rules` and traces.
    # kube-proxy writes none; off, the transaction is kube-proxy's to the byte.
    counters: bool = False

    @property
    def mark(self) -> str:
        """The masquerade mark as kube-proxy prints it (Go `%#08x`: `0x00004000`)."""
        return f"0x{1 << self.masquerade_bit:08x}"

    def nodeport_ips(self) -> tuple[str, ...] | None:
        """The addresses NodePorts answer on; None for every local address."""
        if not self.nodeport_addresses:
            return None
        nets = [ipaddress.ip_network(a, strict=False)
                for a in self.nodeport_addresses if a != "primary"]
        ips: list[str] = []
        for i, ip in enumerate(self.node_ips):
            addr = ipaddress.ip_address(ip)
            wanted = (i == 0 and "primary" in self.nodeport_addresses) or any(
                addr in net for net in nets)
            if wanted and not addr.is_loopback and ip not in ips:
                ips.append(ip)  # kube-proxy: localhost NodePorts are not supported
        return tuple(ips)


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class TableState:
    """What the table holds after a successful sync, as far as the next sync needs to know.

    `elements` mirrors kube-proxy's nftElementStorage (key -> verdict, "" in a
    set); `chains` and `affinity_sets` are the per-service objects present in
    the table (on a full sync the backend fills them from `nft list`, so
    leftovers of an earlier run are found); `stale_since` holds flushed chains
    awaiting deletion.
    """

    elements: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    chains: frozenset[str] = frozenset()
    affinity_sets: frozenset[str] = frozenset()
    stale_since: Mapping[str, float] = field(default_factory=dict)
    # The base chains are known to exist with the right type, hook and priority.
    # False (a new proxier) makes the next full sync delete and re-create them,
    # so a changed priority takes effect, as kube-proxy does once per start.
    base_chains_ok: bool = False


@dataclass(frozen=True)
class RenderResult:
    text: str  # the `nft -f -` transaction
    state: TableState  # the table once the transaction is applied
    commands: int  # lines in the transaction
    chains_written: int  # per-service chains (re)written by this sync
    stale_flushed: tuple[str, ...]
    no_local_internal: int  # services with iTP=Local and no local endpoints
    no_local_external: int  # services with eTP=Local and no local endpoints


# (chain, hook, chain type, priority): dstnat-10 is -110, filter 0, dstnat -100, srcnat 100.
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    (n.FILTER_PREROUTING_PRE_DNAT, "filter", "prerouting", -110),
    (n.FILTER_OUTPUT_PRE_DNAT, "filter", "output", -110),
    (n.FILTER_INPUT, "filter", "input", 0),
    (n.FILTER_FORWARD, "filter", "forward", 0),
    (n.FILTER_OUTPUT, "filter", "output", 0),
    (n.NAT_PREROUTING, "nat", "prerouting", -100),
    (n.NAT_OUTPUT, "nat", "output", -100),
    (n.NAT_POSTROUTING, "nat", "postrouting", 100),
)

# (target, from base chain, match): reject is only valid from input, forward and
# output (before kernel 5.9), hence the endpoint checks there, post-DNAT.
JUMPS: tuple[tuple[str, str, str], ...] = (
    (n.NODEPORT_ENDPOINTS_CHECK, n.FILTER_INPUT, "ct state new"),
    (n.SERVICE_ENDPOINTS_CHECK, n.FILTER_INPUT, "ct state new"),
    (n.SERVICE_ENDPOINTS_CHECK, n.FILTER_FORWARD, "ct state new"),
    (n.SERVICE_ENDPOINTS_CHECK, n.FILTER_OUTPUT, "ct state new"),
    (n.FIREWALL_CHECK, n.FILTER_PREROUTING_PRE_DNAT, "ct state new"),
    (n.FIREWALL_CHECK, n.FILTER_OUTPUT_PRE_DNAT, "ct state new"),
    (n.SERVICES, n.NAT_OUTPUT, ""),
    (n.SERVICES, n.NAT_PREROUTING, ""),
    (n.MASQUERADING, n.NAT_POSTROUTING, ""),
    (n.CLUSTER_IPS_CHECK, n.FILTER_FORWARD, "ct state new"),
    (n.CLUSTER_IPS_CHECK, n.FILTER_OUTPUT, "ct state new"),
)

_ADDR = "ipv4_addr"
_SERVICE_KEY = f"{_ADDR} . inet_proto . inet_service : verdict"
_NODEPORT_KEY = "inet_proto . inet_service : verdict"
# The six containers kube-proxy tracks element by element: (kind, name).
TRACKED = (("set", n.CLUSTER_IPS), ("map", n.SERVICE_IPS), ("map", n.FIREWALL_IPS),
           ("map", n.NO_ENDPOINT_SERVICES), ("map", n.NO_ENDPOINT_NODEPORTS),
           ("map", n.SERVICE_NODEPORTS))


class _Rules:
    """Formats `add rule` lines; with counters on, `counter` goes before the action."""

    def __init__(self, out: list[str], counters: bool) -> None:
        self.out = out
        self.counter = "counter " if counters else ""

    def add(self, chain: str, match: str, action: str, comment: str = "") -> None:
        text = f"add rule {_T} {chain} {match} {self.counter}{action}" if match else \
            f"add rule {_T} {chain} {self.counter}{action}"
        self.out.append(f'{text} comment "{comment}"' if comment else text)


class _Elements:
    """One set or map, element by element (kube-proxy's nftElementStorage).

    `ensure` writes an element only if the table lacks it or holds another
    verdict; whatever was not ensured by the end of the sync is deleted.
    """

    def __init__(self, kind: str, name: str, previous: Mapping[str, str], reset: bool,
                 out: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.items: dict[str, str] = {} if reset else dict(previous)
        self.leftover = set(self.items)
        self.out = out

    def ensure(self, key: str, value: str = "", comment: str = "") -> None:
        old = self.items.get(key)
        if old is not None:
            self.leftover.discard(key)
            if old == value:
                return
            self.out.append(f"delete element {_T} {self.name} {{ {key} }}")
        self.items[key] = value
        note = f' comment "{comment}"' if comment else ""
        verdict = f" : {value}" if self.kind == "map" else ""
        self.out.append(f"add element {_T} {self.name} {{ {key}{note}{verdict} }}")

    def cleanup(self) -> None:
        for key in sorted(self.leftover):
            self.out.append(f"delete element {_T} {self.name} {{ {key} }}")
            del self.items[key]
        self.leftover.clear()


def _setup(out: list[str], rules: _Rules, node: NodeConfig, recreate_base: bool) -> None:
    """The fixed skeleton a full sync re-declares (kube-proxy's setupNFTables)."""
    out.append(f'add table {_T} {{ comment "rules for kube-proxy" ; }}')
    if recreate_base:
        for name, *_ in BASE_CHAINS:  # add first: delete fails on a chain that is absent
            out += [f"add chain {_T} {name}", f"delete chain {_T} {name}"]
    for name, kind, hook, priority in BASE_CHAINS:
        out.append(f"add chain {_T} {name} {{ type {kind} hook {hook} priority {priority} ; }}")
        out.append(f"flush chain {_T} {name}")
    created: set[str] = set()

    def ensure(chain: str) -> None:
        if chain not in created:
            created.add(chain)
            out.extend((f"add chain {_T} {chain}", f"flush chain {_T} {chain}"))

    for target, source, match in JUMPS:
        ensure(target)
        rules.add(source, match, f"jump {target}")
    for chain in (n.SERVICES, n.CLUSTER_IPS_CHECK, n.MASQUERADING, n.MARK_FOR_MASQUERADE):
        ensure(chain)
    mark = node.mark
    rules.add(n.MARK_FOR_MASQUERADE, "", f"mark set mark or {mark}")
    rules.add(n.MASQUERADING, f"mark and {mark} == 0", "return")
    rules.add(n.MASQUERADING, "", f"mark set mark xor {mark}")
    rules.add(n.MASQUERADING, "", "masquerade fully-random")

    out.append(f'add set {_T} {n.CLUSTER_IPS} {{ type {_ADDR} ; comment "Active ClusterIPs" ; }}')
    rules.add(n.CLUSTER_IPS_CHECK, f"ip daddr @{n.CLUSTER_IPS}", "reject",
              "Reject traffic to invalid ports of ClusterIPs")
    if node.service_cidrs:
        rules.add(n.CLUSTER_IPS_CHECK, f"ip daddr {{ {','.join(node.service_cidrs)} }}", "drop",
                  "Drop traffic to unallocated ClusterIPs")

    nodeport_ips = node.nodeport_ips()
    out.append(f'add set {_T} {n.NODEPORT_IPS} {{ type {_ADDR} ; '
               'comment "IPs that accept NodePort traffic" ; }')
    if nodeport_ips is None:
        out.append(f"delete set {_T} {n.NODEPORT_IPS}")
    else:
        out.append(f"flush set {_T} {n.NODEPORT_IPS}")
        out += [f"add element {_T} {n.NODEPORT_IPS} {{ {ip} }}" for ip in nodeport_ips]

    out.append(f"add map {_T} {n.NO_ENDPOINT_SERVICES} {{ type {_SERVICE_KEY} ; "
               'comment "vmap to drop or reject packets to services with no endpoints" ; }')
    out.append(f"add map {_T} {n.NO_ENDPOINT_NODEPORTS} {{ type {_NODEPORT_KEY} ; "
               'comment "vmap to drop or reject packets to service nodeports with no '
               'endpoints" ; }')
    out.append(f"add chain {_T} {n.REJECT_CHAIN} {{ comment "
               '"helper for @no-endpoint-services / @no-endpoint-nodeports" ; }')
    out.append(f"flush chain {_T} {n.REJECT_CHAIN}")
    rules.add(n.REJECT_CHAIN, "", "reject")
    rules.add(n.SERVICE_ENDPOINTS_CHECK, "", f"ip daddr . meta l4proto . th dport "
              f"vmap @{n.NO_ENDPOINT_SERVICES}")
    nodeports = "ip daddr != 127.0.0.0/8" if nodeport_ips is None else \
        f"ip daddr @{n.NODEPORT_IPS}"
    rules.add(n.NODEPORT_ENDPOINTS_CHECK, nodeports,
              f"meta l4proto . th dport vmap @{n.NO_ENDPOINT_NODEPORTS}")

    out.append(f"add map {_T} {n.FIREWALL_IPS} {{ type {_SERVICE_KEY} ; "
               'comment "destinations that are subject to LoadBalancerSourceRanges" ; }')
    ensure(n.FIREWALL_CHECK)
    rules.add(n.FIREWALL_CHECK, "", f"ip daddr . meta l4proto . th dport vmap @{n.FIREWALL_IPS}")

    out.append(f"add map {_T} {n.SERVICE_IPS} {{ type {_SERVICE_KEY} ; "
               'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }')
    out.append(f"add map {_T} {n.SERVICE_NODEPORTS} {{ type {_NODEPORT_KEY} ; "
               'comment "NodePort traffic" ; }')
    rules.add(n.SERVICES, "", f"ip daddr . meta l4proto . th dport vmap @{n.SERVICE_IPS}")
    if nodeport_ips is None:
        rules.add(n.SERVICES, "fib daddr type local ip daddr != 127.0.0.0/8",
                  f"meta l4proto . th dport vmap @{n.SERVICE_NODEPORTS}")
    else:
        rules.add(n.SERVICES, f"ip daddr @{n.NODEPORT_IPS}",
                  f"meta l4proto . th dport vmap @{n.SERVICE_NODEPORTS}")
    for kind, name in TRACKED:
        out.append(f"flush {kind} {_T} {name}")


def _chain(out: list[str], active: set[str], chain: str, write: bool) -> None:
    """Note a per-service chain as needed; `write`: re-create it empty (ensureChain)."""
    active.add(chain)
    if write:
        out.extend((f"add chain {_T} {chain}", f"flush chain {_T} {chain}"))


def render(snapshot: Snapshot, node: NodeConfig, previous: TableState = TableState(), *,
           full: bool = True, now: float = 0.0) -> RenderResult:
    """The transaction for one sync, given what the table held after the previous one.

    `now` (seconds, any monotonic clock) stamps chains that become stale, for
    `cleanup` to delete them a second later.
    """
    out: list[str] = []
    rules = _Rules(out, node.counters)
    if full:
        _setup(out, rules, node, recreate_base=not previous.base_chains_ok)
    stores = {name: _Elements(kind, name, previous.elements.get(name, _EMPTY), full, out)
              for kind, name in TRACKED}
    cluster_ips = stores[n.CLUSTER_IPS]
    service_ips = stores[n.SERVICE_IPS]
    firewall_ips = stores[n.FIREWALL_IPS]
    no_endpoint_services = stores[n.NO_ENDPOINT_SERVICES]
    no_endpoint_nodeports = stores[n.NO_ENDPOINT_NODEPORTS]
    service_nodeports = stores[n.SERVICE_NODEPORTS]

    cidr = node.cluster_cidr
    node_ip = ipaddress.ip_address(node.node_ips[0]) if node.node_ips else None
    if node.masquerade_all:
        masq_match = "ip daddr {}"
    elif cidr is not None:
        masq_match = f"ip daddr {{}} ip saddr != {cidr}"
    else:
        masq_match = ""  # no detector: ClusterIP traffic is never masqueraded
    services = snapshot.services
    endpoints = snapshot.endpoints
    changed = snapshot.changed
    active: set[str] = set()
    active_sets: set[str] = set()
    written = 0
    no_local_internal = no_local_external = 0

    for spn in sorted(services):
        svc = services[spn]
        name = str(spn)
        proto = spn.protocol.lower()
        cat = categorize_endpoints(endpoints.get(spn, ()), svc, node.node_name, snapshot.zone)
        skip = not full and (spn.namespace, spn.name) not in changed
        affinity = svc.affinity_timeout

        ep_chains = {ep.key: n.endpoint_chain(spn, ep.key) for ep in cat.reachable}
        for ep in cat.reachable:
            _chain(out, active, ep_chains[ep.key], not skip)
            if affinity:
                active_sets.add(n.affinity_set(spn, ep.key))

        base = n.port_base(spn)
        cluster_chain = n.SERVICE + base
        local_chain = n.LOCAL + base
        ext_chain = n.EXTERNAL + base
        fw_chain = n.FIREWALL + base
        uses_cluster = bool(cat.cluster) and svc.uses_cluster_endpoints
        uses_local = bool(cat.local) and svc.uses_local_endpoints
        if uses_cluster:
            _chain(out, active, cluster_chain, not skip)
        if uses_local:
            _chain(out, active, local_chain, not skip)
        has_endpoints = cat.has_any
        internal_chain, has_internal, external_policy_chain, has_external = policy_chains(
            svc, cat, has_endpoints, cluster_chain, local_chain)
        # The external chain exists whenever there are endpoints anywhere: its
        # short-circuit rules for pod and node traffic need none locally.
        uses_ext = has_endpoints and svc.externally_accessible
        if uses_ext:
            _chain(out, active, ext_chain, not skip)

        internal_verdict = external_verdict = f"goto {n.REJECT_CHAIN}"
        if has_endpoints:
            internal_verdict = external_verdict = ""
            if not has_internal:
                internal_verdict = "drop"
                no_local_internal += 1
            if not has_external:
                external_verdict = "drop"
                no_local_external += 1

        port = svc.port
        cluster_ips.ensure(svc.cluster_ip)
        key = f"{svc.cluster_ip} . {proto} . {port}"
        if has_internal:
            service_ips.ensure(key, f"goto {internal_chain}")
        else:
            no_endpoint_services.ensure(key, internal_verdict, name)
        for ip in svc.external_ips:
            key = f"{ip} . {proto} . {port}"
            if has_endpoints:
                service_ips.ensure(key, f"goto {ext_chain}")
            if not has_external:
                no_endpoint_services.ensure(key, external_verdict, name)
        lb_ips = svc.load_balancer_ips
        ranges = svc.load_balancer_source_ranges
        uses_fw = bool(lb_ips) and bool(ranges)
        if uses_fw:
            _chain(out, active, fw_chain, not skip)
        for ip in lb_ips:
            key = f"{ip} . {proto} . {port}"
            if has_endpoints:
                service_ips.ensure(key, f"goto {ext_chain}")
            if uses_fw:
                firewall_ips.ensure(key, f"goto {fw_chain}")
        if not has_external:
            for ip in lb_ips:
                no_endpoint_services.ensure(f"{ip} . {proto} . {port}", external_verdict, name)
        if svc.node_port:
            key = f"{proto} . {svc.node_port}"
            if has_endpoints:
                # NodePorts are not subject to loadBalancerSourceRanges (upstream's choice).
                service_nodeports.ensure(key, f"goto {ext_chain}")
            if not has_external:
                no_endpoint_nodeports.ensure(key, external_verdict, name)

        if skip:
            continue
        written += len(ep_chains) + uses_cluster + uses_local + uses_ext + uses_fw

        if has_internal and masq_match:
            rules.add(internal_chain, masq_match.format(svc.cluster_ip),
                      f"jump {n.MARK_FOR_MASQUERADE}")
        if uses_ext:
            if not svc.external_policy_local:
                # Endpoints may be on other nodes: masquerade so replies come back here.
                rules.add(ext_chain, "", f"jump {n.MARK_FOR_MASQUERADE}")
            else:
                if cidr is not None:
                    rules.add(ext_chain, f"ip saddr {cidr}", f"goto {cluster_chain}",
                              "short-circuit pod traffic")
                rules.add(ext_chain, "fib saddr type local", f"jump {n.MARK_FOR_MASQUERADE}",
                          "masquerade local traffic")
                rules.add(ext_chain, "fib saddr type local", f"goto {cluster_chain}",
                          "short-circuit local traffic")
            if has_external:
                rules.add(ext_chain, "", f"goto {external_policy_chain}")
        if uses_fw:
            sources = list(ranges)
            if node_ip is not None and any(node_ip in ipaddress.ip_network(r) for r in ranges):
                sources += lb_ips  # a VIP bound locally is the source of node->LB traffic
            rules.add(fw_chain, f"ip saddr != {{ {' , '.join(sources)} }}", "drop")
        if affinity:
            for ep in cat.reachable:
                out.append(f"add set {_T} {n.affinity_set(spn, ep.key)} {{ type {_ADDR} ; "
                           f"flags dynamic,timeout ; timeout {affinity}s ; }}")
        for chain, eps, used in ((cluster_chain, cat.cluster, uses_cluster),
                                 (local_chain, cat.local, uses_local)):
            if not used:
                continue
            if affinity:
                for ep in eps:
                    rules.add(chain, f"ip saddr @{n.affinity_set(spn, ep.key)}",
                              f"goto {ep_chains[ep.key]}")
            choices = " , ".join(f"{i} : goto {ep_chains[ep.key]}" for i, ep in enumerate(eps))
            rules.add(chain, "", f"numgen random mod {len(eps)} vmap {{ {choices} }}")
        for ep in cat.reachable:
            chain = ep_chains[ep.key]
            # Hairpin: an endpoint reaching itself through the service is masqueraded.
            rules.add(chain, f"ip saddr {ep.ip}", f"jump {n.MARK_FOR_MASQUERADE}")
            if affinity:
                rules.add(chain, "", f"update @{n.affinity_set(spn, ep.key)} {{ ip saddr }}")
            rules.add(chain, f"meta l4proto {proto}", f"dnat to {ep.key}")

    stale_since = {c: t for c, t in previous.stale_since.items() if c not in active}
    flushed: list[str] = []
    for chain in sorted(previous.chains - active):
        if n.is_service_chain(chain) and chain not in stale_since:
            out.append(f"flush chain {_T} {chain}")
            stale_since[chain] = now
            flushed.append(chain)
    for name in sorted(previous.affinity_sets - active_sets):
        out.append(f"delete set {_T} {name}")
    for store in stores.values():
        store.cleanup()

    state = TableState(
        elements={name: store.items for name, store in stores.items()},
        chains=frozenset(active) | frozenset(stale_since),
        affinity_sets=frozenset(active_sets),
        stale_since=stale_since,
        base_chains_ok=previous.base_chains_ok or full,
    )
    text = "\n".join(out) + "\n" if out else ""
    return RenderResult(text, state, len(out), written, tuple(flushed),
                        no_local_internal, no_local_external)


def cleanup(state: TableState, now: float) -> tuple[str, TableState]:
    """`delete chain` for stale chains flushed at least STALE_CHAIN_DELAY ago.

    kube-proxy runs this as its own transaction before the sync's, so a failed
    deletion never costs a sync. Returns ("", state) when nothing is due.
    """
    due = sorted(c for c, t in state.stale_since.items() if now - t >= STALE_CHAIN_DELAY)
    if not due:
        return "", state
    text = "".join(f"delete chain {_T} {chain}\n" for chain in due)
    gone = frozenset(due)
    return text, TableState(
        elements=state.elements,
        chains=state.chains - gone,
        affinity_sets=state.affinity_sets,
        stale_since={c: t for c, t in state.stale_since.items() if c not in gone},
        base_chains_ok=state.base_chains_ok,
    )
