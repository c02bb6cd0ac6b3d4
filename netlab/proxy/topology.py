"""Which endpoints a node uses for a service port (kube-proxy's CategorizeEndpoints).

Shared by every mode. The rules encoded here are the ones users trip over:
`Local` traffic policies only see this node's endpoints, terminating endpoints
are used only when nothing is ready, and topology hints narrow the cluster list
only when every ready endpoint carries one that matches this node or zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from netlab.proxy.model import Endpoint, ServicePort


class Categorized(NamedTuple):
    cluster: tuple[Endpoint, ...]  # used with the Cluster policy
    local: tuple[Endpoint, ...]  # used with the Local policy
    reachable: tuple[Endpoint, ...]  # every endpoint some rule may send to (SEP chains)
    has_any: bool  # usable endpoints exist somewhere in the cluster


_NONE = Categorized((), (), (), False)


def _topology_mode(endpoints: Sequence[Endpoint], node_name: str, zone: str) -> str:
    """PreferSameNode / PreferSameZone when hints can be honoured, else ""."""
    all_node_hints = all_zone_hints = True
    node_hit = zone_hit = False
    for ep in endpoints:
        if not ep.ready:
            continue
        if not ep.zone_hints:
            all_zone_hints = False
        elif zone in ep.zone_hints:
            zone_hit = True
        if not ep.node_hints:
            all_node_hints = False
        elif node_name in ep.node_hints:
            node_hit = True
    if all_node_hints and node_hit:
        return "PreferSameNode"
    if all_zone_hints and zone_hit:
        return "PreferSameZone"
    return ""


def categorize_endpoints(endpoints: Sequence[Endpoint], svc: ServicePort,
                         node_name: str, zone: str = "") -> Categorized:
    """Split a port's endpoints into cluster, local and reachable lists."""
    if not endpoints:
        return _NONE
    cluster: tuple[Endpoint, ...] = ()
    has_any = False
    if svc.uses_cluster_endpoints:
        mode = ""
        for ep in endpoints:
            if ep.zone_hints or ep.node_hints:
                mode = _topology_mode(endpoints, node_name, zone)
                break
        if mode == "PreferSameNode":
            cluster = tuple(ep for ep in endpoints if ep.ready and node_name in ep.node_hints)
        elif mode == "PreferSameZone":
            cluster = tuple(ep for ep in endpoints if ep.ready and zone in ep.zone_hints)
        else:
            cluster = tuple(ep for ep in endpoints if ep.ready)
        if not cluster:
            cluster = tuple(ep for ep in endpoints if ep.serving and ep.terminating)
        has_any = bool(cluster)
    if not svc.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has_any)

    local_ready = local_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.is_local
        elif ep.serving and ep.terminating:
            has_any = True
            local_terminating = local_terminating or ep.is_local
    local: tuple[Endpoint, ...] = ()
    if local_ready:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.ready)
    elif local_terminating:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating)

    if not svc.uses_cluster_endpoints or not cluster:
        return Categorized(cluster, local, local, has_any)
    if not local:
        return Categorized(cluster, local, cluster, has_any)
    union = {ep.key: ep for ep in cluster}
    union.update((ep.key, ep) for ep in local)
    return Categorized(cluster, local, tuple(union[k] for k in sorted(union)), has_any)


class PolicyChains(NamedTuple):
    """Which chain each traffic policy sends to, and whether it has anything to send to.

    Every mode decides this the same way (kube-proxy's syncProxyRules): a Local
    policy uses the local-endpoints chain and needs local endpoints; Cluster uses
    the cluster chain and needs any endpoint.
    """

    internal: str
    has_internal: bool
    external: str
    has_external: bool


def policy_chains(svc: ServicePort, categories: Categorized, has_endpoints: bool,
                  cluster_chain: str, local_chain: str) -> PolicyChains:
    def pick(local: bool) -> tuple[str, bool]:
        if local:
            return local_chain, has_endpoints and bool(categories.local)
        return cluster_chain, has_endpoints

    internal, has_internal = pick(svc.internal_policy_local)
    external, has_external = pick(svc.external_policy_local)
    return PolicyChains(internal, has_internal, external, has_external)
