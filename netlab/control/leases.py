"""Subnet leases follow their Nodes: a removed node's lease goes, and peers drop it.

flanneld's leases expire (etcd TTL) when a node stops renewing, and with the kube
subnet manager they vanish with the Node object. Here the control plane deletes a
lease whose subnet is no longer any Node's podCIDR; every agent watching the
leases then removes that peer's route, neighbour and FDB entries.
"""

from __future__ import annotations

import logging

from netlab.api import keys
from netlab.control.view import View
from netlab.errors import ConflictError
from netlab.store.base import Delete
from netlab.store.objects import Objects

log = logging.getLogger(__name__)


def stale_subnets(lease_subnets: list[str], view: View) -> list[str]:
    """Leased subnets that belong to no Node in the view."""
    owned = {n.get("spec", {}).get("podCIDR") for n in view.nodes.values()}
    return [s for s in lease_subnets if s not in owned]


def sync(objects: Objects, view: View) -> None:
    items, _ = objects.store.list(keys.FLANNEL_SUBNETS_PREFIX)
    by_subnet = {keys.subnet_of_key(kv.key): kv for kv in items}
    for subnet in stale_subnets(list(by_subnet), view):
        kv = by_subnet[subnet]
        # Look again in the store itself: the view may lag behind a Node just created.
        if any(n.get("spec", {}).get("podCIDR") == subnet for n in objects.list("Node")[0]):
            continue
        try:
            objects.store.commit([Delete(kv.key, expect_revision=kv.mod_revision)])
            log.info("lease %s released: no node holds it", subnet)
        except ConflictError:
            continue
