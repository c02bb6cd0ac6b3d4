"""What one host can hold: the kernel's ARP table, shared by every network namespace.

Each pod takes about two neighbour entries (its gateway inside the pod, the pod on
its node's cni0). The table is one for the whole host, with a hard limit
(`net.ipv4.neigh.default.gc_thresh3`, 1024 by default): past it the kernel drops new
entries ("neighbor table overflow" in dmesg), pods stop answering their probes, and
every lab on the host suffers, not just the big one. `up` warns before that happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ENTRIES_PER_POD = 2
MARGIN = 100  # nodes, underlay, ext and whatever else runs on the host
WORKLOAD_KINDS = ("Deployment", "ReplicaSet")


def neighbour_room() -> tuple[int, int]:
    """(entries in use, gc_thresh3) of the kernel's ARP table."""
    with open("/proc/net/stat/arp_cache") as f:
        entries = int(f.readlines()[1].split()[0], 16)
    with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
        return entries, int(f.read())


def pods_in(manifests: Iterable[Mapping[str, Any]], dns_replicas: int = 0) -> int:
    """How many pods these manifests (and the DNS addon) will run."""
    pods = dns_replicas
    for obj in manifests:
        if obj.get("kind") == "Pod":
            pods += 1
        elif obj.get("kind") in WORKLOAD_KINDS:
            replicas = (obj.get("spec") or {}).get("replicas", 1)
            pods += replicas if isinstance(replicas, int) else 1
    return pods


def too_many_pods(pods: int) -> str | None:
    """Why `pods` more pods would overflow the ARP table, or None if they fit."""
    entries, limit = neighbour_room()
    if entries + ENTRIES_PER_POD * pods + MARGIN <= limit:
        return None
    return (f"{pods} pods need about {ENTRIES_PER_POD * pods} ARP entries; the host's "
            f"table (shared by every network namespace) has {entries} in use and holds "
            f"net.ipv4.neigh.default.gc_thresh3={limit}: raise it (with gc_thresh1/2) "
            "before running this many pods")
