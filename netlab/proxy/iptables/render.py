"""The `iptables-restore --noflush` payload kube-proxy's iptables mode writes.

Pure: a snapshot and the node's settings in, text out, no kernel. The rules,
their order, comments and spellings follow kube-proxy's syncProxyRules line by
line (see /work/shared/reference/kube-proxy.md §1), so a learner reading
`iptables-save` in a lab sees what a kubeadm node shows. Services are visited
in name order rather than Go's random map order, so that two syncs of the same
state write the same text.

A partial sync rewrites every top-level chain (KUBE-SERVICES, KUBE-NODEPORTS,
the filter chains …) but the per-service chains (SVC, SVL, EXT, FW, SEP) only
for services whose Service or EndpointSlices changed; with `--noflush` the
chains it does not mention stay as they are. Text is built as lists of
f-strings and joined once: 10,000 services × 10 endpoints is ~320,000 lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from netlab.proxy.changes import Snapshot
from netlab.proxy.iptables import names
from netlab.proxy.iptables.names import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_FIREWALL,
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_CANARY,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
)
from netlab.proxy.model import Endpoint, ServicePort
from netlab.proxy.topology import Categorized, categorize_endpoints, policy_chains

LARGE_CLUSTER_ENDPOINTS = 1000  # above this, SEP and SVC->SEP comments are dropped


@dataclass(frozen=True)
class NodeConfig:
    """The per-node settings the rules depend on (kube-proxy's flags, our lab defaults)."""

    node_name: str
    node_ips: tuple[str, ...] = ()  # first is the primary (used for LB source ranges)
    cluster_cidr: str | None = "10.244.0.0/16"  # local-traffic detector; None: none
    masquerade_bit: int = 14
    masquerade_all: bool = False
    localhost_nodeports: bool = True
    random_fully: bool = True
    conntrack_tcp_liberal: bool = False  # nf_conntrack_tcp_be_liberal set: no INVALID drop

    @property
    def mark(self) -> str:
        """The masquerade mark as kube-proxy prints it (Go `%#08x`: `0x00004000`)."""
        return f"0x{1 << self.masquerade_bit:08x}"


@dataclass(frozen=True)
class JumpRule:
    """A rule in a built-in chain that hooks a kube-proxy chain in (§1.1).

    Not part of the regular payload: kube-proxy must not own PREROUTING and
    friends, so these are only inserted (at position 1) when missing.
    """

    table: str
    chain: str
    target: str
    comment: str = ""
    matches: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """Arguments for `iptables -t TABLE -C/-I CHAIN …`."""
        args = list(self.matches)
        if self.comment:
            args += ["-m", "comment", "--comment", self.comment]
        return args + ["-j", self.target]

    def _spec(self) -> str:
        parts = list(self.matches)
        if self.comment:
            parts += ["-m", "comment", "--comment", f'"{self.comment}"']
        return " ".join([*parts, "-j", self.target])

    def save_line(self) -> str:
        """The rule as iptables-legacy-save prints it, to spot it without `-C`."""
        return f"-A {self.chain} {self._spec()}"

    def insert_line(self) -> str:
        """The rule as an iptables-restore line prepending it."""
        return f"-I {self.chain} 1 {self._spec()}"


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMP_RULES: tuple[JumpRule, ...] = (
    JumpRule("filter", "INPUT", KUBE_EXTERNAL_SERVICES,
             "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_EXTERNAL_SERVICES,
             "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    JumpRule("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall",
             _NEW),
    JumpRule("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    # kubelet's anti-martian chain, duplicated by kube-proxy (only written with
    # localhost NodePorts, so only hooked then).
    JumpRule("filter", "INPUT", KUBE_FIREWALL),
    JumpRule("filter", "OUTPUT", KUBE_FIREWALL),
)

CANARY_TABLES = ("mangle", "nat", "filter")


def jump_rules(node: NodeConfig) -> tuple[JumpRule, ...]:
    """The hooks this node needs (KUBE-FIREWALL only with localhost NodePorts)."""
    if node.localhost_nodeports:
        return JUMP_RULES
    return tuple(j for j in JUMP_RULES if j.target != KUBE_FIREWALL)


@dataclass(frozen=True)
class RenderResult:
    payload: str
    filter_rules: int  # filter rules written (kube-proxy's iptables_last{table=filter})
    nat_rules: int  # nat rules written, `-X` lines excluded (iptables_last{table=nat})
    nat_rules_total: int  # nat rules owned after this sync (iptables_total{table=nat})
    active_nat_chains: frozenset[str] | None  # computed only when cleanup ran
    deleted_chains: tuple[str, ...]
    large_cluster: bool
    no_local_internal: int  # services with iTP=Local and no local endpoints
    no_local_external: int  # services with eTP=Local and no local endpoints


_PROBABILITIES = ["<bad value>"] + [f"{1.0 / n:0.10f}" for n in range(1, 1001)]


def _probability(n: int) -> str:
    return _PROBABILITIES[n] if n < len(_PROBABILITIES) else f"{1.0 / n:0.10f}"


def is_large_cluster(snapshot: Snapshot) -> bool:
    """More than 1000 endpoints: kube-proxy trades readability for speed."""
    endpoints = snapshot.endpoints
    total = sum(len(endpoints.get(spn, ())) for spn in snapshot.services)
    return total > LARGE_CLUSTER_ENDPOINTS


def render(snapshot: Snapshot, node: NodeConfig, *, full: bool = True,
           existing_nat_chains: Collection[str] | None = None,
           insert_jumps: Sequence[JumpRule] = (),
           canaries: bool = False) -> RenderResult:
    """The restore payload for one sync.

    `existing_nat_chains` (from iptables-save) enables stale-chain removal;
    None skips it, as kube-proxy does between cleanups in large clusters.
    `insert_jumps` and `canaries` add the hooks and the flush-detector chains
    the kernel lacks; kube-proxy does both outside the payload, so the regular
    text stays exactly kube-proxy's.
    """
    body = draft(snapshot, node, full=full, track_chains=existing_nat_chains is not None)
    return finish(body, existing_nat_chains=existing_nat_chains, insert_jumps=insert_jumps,
                  canaries=canaries)


@dataclass
class Draft:
    """A payload before the kernel's state is known: everything but stale chains and hooks.

    Splitting the two lets a full sync render while iptables-save still runs.
    """

    filter_chains: list[str]
    filter_rules: list[str]
    nat_chains: list[str]
    nat_rules: list[str]
    nat_tail: list[str]  # after the stale-chain deletions: the jump to KUBE-NODEPORTS
    active: set[str] | None  # per-service chains this state needs, if tracked
    skipped_rules: int
    large_cluster: bool
    no_local_internal: int
    no_local_external: int


def draft(snapshot: Snapshot, node: NodeConfig, *, full: bool = True,
          track_chains: bool = False) -> Draft:
    """The rules for a snapshot; `track_chains` collects the chain names stale removal needs."""
    mark = node.mark
    cidr = node.cluster_cidr
    masq_all = node.masquerade_all
    masq_cluster_ip = masq_all or cidr is not None
    not_local = f" ! -s {cidr}" if cidr is not None and not masq_all else ""
    node_ip = ipaddress.ip_address(node.node_ips[0]) if node.node_ips else None
    node_name = node.node_name
    zone = snapshot.zone
    services = snapshot.services
    endpoints = snapshot.endpoints
    changed = snapshot.changed

    filter_chains = [f":{c} - [0:0]" for c in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES,
                                               KUBE_FORWARD, KUBE_NODEPORTS,
                                               KUBE_PROXY_FIREWALL)]
    nat_chains = [f":{c} - [0:0]" for c in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING,
                                            KUBE_MARK_MASQ)]
    filter_rules: list[str] = []
    masquerade = (f'-A {KUBE_POSTROUTING} -m comment --comment '
                  f'"kubernetes service traffic requiring SNAT" -j MASQUERADE')
    nat_rules = [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
        masquerade + " --random-fully" if node.random_fully else masquerade,
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}",
    ]
    if node.localhost_nodeports:
        filter_chains.append(f":{KUBE_FIREWALL} - [0:0]")
        filter_rules.append(
            f'-A {KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" '
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
            "-j DROP")

    large = is_large_cluster(snapshot)
    active: set[str] = set()
    skipped_rules = 0
    no_local_internal = no_local_external = 0

    for spn in sorted(services):
        svc = services[spn]
        proto = spn.protocol.lower()
        name = str(spn)
        port_id = name + proto
        cat = categorize_endpoints(endpoints.get(spn, ()), svc, node_name, zone)
        has_endpoints = cat.has_any
        phash = names.port_hash(spn)
        cluster_chain = names.SVC + phash
        local_chain = names.SVL + phash
        ext_chain = names.EXT + phash
        fw_chain = names.FW + phash
        uses_cluster = bool(cat.cluster) and svc.uses_cluster_endpoints
        uses_local = bool(cat.local) and svc.uses_local_endpoints

        internal_chain, has_internal, external_policy_chain, has_external = policy_chains(
            svc, cat, has_endpoints, cluster_chain, local_chain)
        uses_ext = has_endpoints and svc.externally_accessible
        lb_ips = svc.load_balancer_ips
        ranges = svc.load_balancer_source_ranges
        uses_fw = has_endpoints and bool(lb_ips) and bool(ranges)
        lb_chain = fw_chain if uses_fw else ext_chain

        if not has_endpoints:
            internal_target = external_target = "REJECT"
            internal_comment = external_comment = f'"{name} has no endpoints"'
        else:
            internal_target = external_target = ""
            internal_comment = external_comment = ""
            if not has_internal:
                internal_target = "DROP"
                internal_comment = f'"{name} has no local endpoints"'
                no_local_internal += 1
            if not has_external:
                external_target = "DROP"
                external_comment = f'"{name} has no local endpoints"'
                no_local_external += 1

        match = f"-m {proto} -p {proto}"
        port = svc.port
        dst = f"{match} -d {svc.cluster_ip} --dport {port}"
        if has_internal:
            nat_rules.append(f'-A {KUBE_SERVICES} -m comment --comment "{name} cluster IP" '
                             f"{dst} -j {internal_chain}")
        else:
            filter_rules.append(f"-A {KUBE_SERVICES} -m comment --comment {internal_comment} "
                                f"{dst} -j {internal_target}")
        for ip in svc.external_ips:
            if has_endpoints:
                nat_rules.append(f'-A {KUBE_SERVICES} -m comment --comment "{name} external IP" '
                                 f"{match} -d {ip} --dport {port} -j {ext_chain}")
            if not has_external:
                filter_rules.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} "
                    f"{match} -d {ip} --dport {port} -j {external_target}")
        for ip in lb_ips:
            if has_endpoints:
                nat_rules.append(
                    f'-A {KUBE_SERVICES} -m comment --comment "{name} loadbalancer IP" '
                    f"{match} -d {ip} --dport {port} -j {lb_chain}")
            if uses_fw:
                filter_rules.append(
                    f'-A {KUBE_PROXY_FIREWALL} -m comment --comment "{name} traffic not accepted '
                    f'by {fw_chain}" {match} -d {ip} --dport {port} -j DROP')
        if not has_external:
            for ip in lb_ips:
                filter_rules.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} "
                    f"{match} -d {ip} --dport {port} -j {external_target}")
        if svc.node_port:
            if has_endpoints:
                nat_rules.append(f"-A {KUBE_NODEPORTS} -m comment --comment {name} {match} "
                                 f"--dport {svc.node_port} -j {ext_chain}")
            if not has_external:
                filter_rules.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} "
                    f"-m addrtype --dst-type LOCAL {match} --dport {svc.node_port} "
                    f"-j {external_target}")
        if svc.health_check_node_port:
            filter_rules.append(
                f'-A {KUBE_NODEPORTS} -m comment --comment "{name} health check node port" '
                f"-m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT")

        allow_from_node = uses_fw and node_ip is not None and any(
            node_ip in ipaddress.ip_network(r) for r in ranges)
        if track_chains:
            if uses_ext:
                active.add(ext_chain)
            if uses_fw:
                active.add(fw_chain)
            if uses_cluster:
                active.add(cluster_chain)
            if uses_local:
                active.add(local_chain)
            for ep in cat.reachable:
                active.add(names.endpoint_chain_of(port_id, ep.key))

        if not full and (spn.namespace, spn.name) not in changed:
            skipped_rules += _chain_rule_count(
                svc, cat, has_internal and masq_cluster_ip, uses_ext, has_external,
                uses_fw, len(lb_ips) if allow_from_node else 0, cidr is not None,
                uses_cluster, uses_local)
            continue

        if has_internal and masq_cluster_ip:
            nat_rules.append(f'-A {internal_chain} -m comment --comment "{name} cluster IP" '
                             f"{dst}{not_local} -j {KUBE_MARK_MASQ}")
        if uses_ext:
            nat_chains.append(f":{ext_chain} - [0:0]")
            if not svc.external_policy_local:
                nat_rules.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for '
                                 f'{name} external destinations" -j {KUBE_MARK_MASQ}')
            else:
                if cidr is not None:
                    nat_rules.append(f'-A {ext_chain} -m comment --comment "pod traffic for '
                                     f'{name} external destinations" -s {cidr} '
                                     f"-j {cluster_chain}")
                nat_rules.append(f'-A {ext_chain} -m comment --comment "masquerade LOCAL '
                                 f'traffic for {name} external destinations" '
                                 f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}")
                nat_rules.append(f'-A {ext_chain} -m comment --comment "route LOCAL traffic '
                                 f'for {name} external destinations" '
                                 f"-m addrtype --src-type LOCAL -j {cluster_chain}")
            if has_external:
                nat_rules.append(f"-A {ext_chain} -j {external_policy_chain}")
        if uses_fw:
            nat_chains.append(f":{fw_chain} - [0:0]")
            head = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
            for r in ranges:
                nat_rules.append(f"{head} -s {r} -j {ext_chain}")
            if allow_from_node:
                for ip in lb_ips:
                    nat_rules.append(f"{head} -s {ip} -j {ext_chain}")
            nat_rules.append(f'-A {fw_chain} -m comment --comment "other traffic to {name} '
                             f'will be dropped by KUBE-PROXY-FIREWALL"')
        seps = {ep.key: names.endpoint_chain_of(port_id, ep.key) for ep in cat.reachable}
        if uses_cluster:
            nat_chains.append(f":{cluster_chain} - [0:0]")
            _write_endpoint_jumps(nat_rules, name, seps, svc.affinity_timeout, cluster_chain,
                                  cat.cluster, large)
        if uses_local:
            nat_chains.append(f":{local_chain} - [0:0]")
            _write_endpoint_jumps(nat_rules, name, seps, svc.affinity_timeout, local_chain,
                                  cat.local, large)
        comment = "" if large else f" -m comment --comment {name}"
        for ep in cat.reachable:
            sep = seps[ep.key]
            nat_chains.append(f":{sep} - [0:0]")
            nat_rules.append(f"-A {sep}{comment} -s {ep.ip} -j {KUBE_MARK_MASQ}")
            recent = f" -m recent --name {sep} --set" if svc.affinity_timeout else ""
            nat_rules.append(f"-A {sep}{comment}{recent} {match} -j DNAT "
                             f"--to-destination {ep.key}")

    nodeports = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                 'this must be the last rule in this chain" -m addrtype --dst-type LOCAL')
    if not node.localhost_nodeports:
        nodeports += " ! -d 127.0.0.0/8"
    if not node.conntrack_tcp_liberal:
        filter_rules.append(f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP")
    filter_rules.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
                        f"-m mark --mark {mark}/{mark} -j ACCEPT")
    filter_rules.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding '
                        'conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    return Draft(filter_chains, filter_rules, nat_chains, nat_rules,
                 [f"{nodeports} -j {KUBE_NODEPORTS}"], active if track_chains else None,
                 skipped_rules, large, no_local_internal, no_local_external)


def finish(body: Draft, *, existing_nat_chains: Collection[str] | None = None,
           insert_jumps: Sequence[JumpRule] = (), canaries: bool = False) -> RenderResult:
    """Add stale-chain deletions, missing hooks and canaries; join the payload."""
    deleted: list[str] = []
    nat_chains = body.nat_chains
    filter_chains = body.filter_chains
    if existing_nat_chains is not None:
        if body.active is None:
            raise ValueError("stale-chain removal needs a draft made with track_chains=True")
        active = body.active
        deleted = sorted(c for c in existing_nat_chains
                         if names.is_service_chain(c) and c not in active)
        nat_chains = nat_chains + [f":{chain} - [0:0]" for chain in deleted]
    sections: list[str] = []
    if canaries:
        sections += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", "COMMIT"]
        filter_chains = filter_chains + [f":{KUBE_PROXY_CANARY} - [0:0]"]
        nat_chains = nat_chains + [f":{KUBE_PROXY_CANARY} - [0:0]"]
    filter_jumps = [j.insert_line() for j in insert_jumps if j.table == "filter"]
    nat_jumps = [j.insert_line() for j in insert_jumps if j.table == "nat"]
    sections += ["*filter", *filter_chains, *body.filter_rules, *filter_jumps, "COMMIT",
                 "*nat", *nat_chains, *body.nat_rules, *(f"-X {c}" for c in deleted),
                 *body.nat_tail, *nat_jumps, "COMMIT", ""]
    nat_written = len(body.nat_rules) + len(body.nat_tail)
    return RenderResult(
        payload="\n".join(sections),
        filter_rules=len(body.filter_rules),
        nat_rules=nat_written,
        nat_rules_total=nat_written + body.skipped_rules,
        active_nat_chains=frozenset(body.active) if body.active is not None else None,
        deleted_chains=tuple(deleted),
        large_cluster=body.large_cluster,
        no_local_internal=body.no_local_internal,
        no_local_external=body.no_local_external,
    )


def _write_endpoint_jumps(rules: list[str], name: str, sep_of: dict[str, str], affinity: int,
                          chain: str, endpoints: Sequence[Endpoint], large: bool) -> None:
    """The SVC/SVL body: affinity checks first, then the probability ladder."""
    seps = [sep_of[ep.key] for ep in endpoints]
    if large:
        comments = [""] * len(endpoints)
    else:
        comments = [f' -m comment --comment "{name} -> {ep.key}"' for ep in endpoints]
    if affinity:
        for sep, comment in zip(seps, comments, strict=True):
            rules.append(f"-A {chain}{comment} -m recent --name {sep} --rcheck "
                         f"--seconds {affinity} --reap -j {sep}")
    n = len(seps)
    last = n - 1
    for i, (sep, comment) in enumerate(zip(seps, comments, strict=True)):
        if i < last:
            rules.append(f"-A {chain}{comment} -m statistic --mode random "
                         f"--probability {_probability(n - i)} -j {sep}")
        else:
            rules.append(f"-A {chain}{comment} -j {sep}")


def _chain_rule_count(svc: ServicePort, cat: Categorized, masq_rule: bool, uses_ext: bool,
                      has_external: bool, uses_fw: bool, node_lb_rules: int, detector: bool,
                      uses_cluster: bool, uses_local: bool) -> int:
    """How many per-service nat rules a changed service would write (for the metrics)."""
    count = 1 if masq_rule else 0
    if uses_ext:
        count += 1 if not svc.external_policy_local else (3 if detector else 2)
        count += 1 if has_external else 0
    if uses_fw:
        count += len(svc.load_balancer_source_ranges) + node_lb_rules + 1
    per_endpoint = 2 if svc.affinity_timeout else 1
    if uses_cluster:
        count += per_endpoint * len(cat.cluster)
    if uses_local:
        count += per_endpoint * len(cat.local)
    return count + 2 * len(cat.reachable)
