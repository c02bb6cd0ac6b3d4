"""Node IPAM: one pod subnet per node (kube-controller-manager --allocate-node-cidrs).

The pod network (10.244.0.0/16) is cut into node_subnet_len blocks (/24). A node
without spec.podCIDR gets the first block no node holds, so with kubeadm's habits
the control plane gets 10.244.0.0/24 and the workers .1, .2 in the order they
registered. Nothing is remembered outside the Node objects: a restarted control
plane rebuilds the used set from them, and a deleted node's block is free again.
All of a pass's assignments go in one commit guarded by each node's
resourceVersion, so a pass on a stale view cannot hand one block out twice.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from netlab.api.cluster import ClusterConfig
from netlab.control.meta import Obj, labels_of
from netlab.control.view import View, Writer

log = logging.getLogger(__name__)

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_control_plane(node: Obj) -> bool:
    return CONTROL_PLANE_LABEL in labels_of(node)


def pod_cidr_of(node: Obj) -> str | None:
    return node.get("spec", {}).get("podCIDR") or None


def _registration_order(node: Obj) -> tuple[bool, str, str]:
    """Control planes first (kubeadm brings them up first), then by registration time."""
    meta = node["metadata"]
    return not is_control_plane(node), meta.get("creationTimestamp", ""), meta["name"]


def plan_pod_cidrs(nodes: Iterable[Obj], pod_cidr: str, subnet_len: int) -> dict[str, str | None]:
    """For each node without a podCIDR: the block to give it, or None if none is free."""
    nodes = list(nodes)
    network = ipaddress.ip_network(pod_cidr)
    used: list[Network] = []
    for node in nodes:
        for cidr in node.get("spec", {}).get("podCIDRs") or [pod_cidr_of(node)]:
            if cidr:
                used.append(ipaddress.ip_network(cidr, strict=False))
    exact = {net for net in used if net.prefixlen == subnet_len}
    odd = [net for net in used if net.prefixlen != subnet_len]
    blocks = (b for b in network.subnets(new_prefix=subnet_len)
              if b not in exact and not any(b.overlaps(net) for net in odd))
    plan: dict[str, str | None] = {}
    for node in sorted((n for n in nodes if not pod_cidr_of(n)), key=_registration_order):
        block = next(blocks, None)
        plan[node["metadata"]["name"]] = None if block is None else str(block)
    return plan


def with_pod_cidr(node: Obj, cidr: str) -> Obj:
    spec = {**node.get("spec", {}), "podCIDR": cidr, "podCIDRs": [cidr]}
    return {**node, "spec": spec}


def sync(writer: Writer, view: View, config: ClusterConfig) -> None:
    plan = plan_pod_cidrs(view.nodes.values(), config.pod_cidr, config.node_subnet_len)
    for name, cidr in plan.items():
        if cidr is None:
            log.warning("node %s: no free /%d left in the pod network %s (CIDRNotAvailable)",
                        name, config.node_subnet_len, config.pod_cidr)
    assigned = {name: cidr for name, cidr in plan.items() if cidr}
    if not assigned:
        return
    updates = [with_pod_cidr(view.nodes[name], cidr) for name, cidr in assigned.items()]
    if writer.commit("pod CIDRs", update=updates):
        for name, cidr in assigned.items():
            log.info("node %s: podCIDR %s", name, cidr)
