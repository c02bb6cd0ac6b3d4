"""What `exec`, `capture` and `trace` accept as a place: `[ns/]pod`, a node, or `ext`."""

from __future__ import annotations

from netlab.errors import NetlabError
from netlab.kernel import netns
from netlab.lab.state import StateDir
from netlab.node.podfiles import pod_netns_name
from netlab.store.objects import Objects


def resolve_target(state: StateDir, objects: Objects, target: str,
                   namespace: str = "default") -> str:
    """The network namespace of a target, or a NetlabError listing what exists."""
    lab = state.read_lab()
    machines = {n["name"]: n["netns"] for n in lab["nodes"]}
    machines["ext"] = lab["ext"]["netns"]
    guests = guest_nodes(lab)
    if target in guests:
        raise NetlabError(in_guest(target))
    if target in machines:
        return machines[target]
    ns, _, name = target.rpartition("/")
    ns = ns or namespace
    pod = objects.get("Pod", ns, name)
    if pod is None:
        raise NetlabError(f"no pod {ns}/{name} and no node {target!r} "
                          f"(nodes: {', '.join(machines)})")
    if (pod.get("spec") or {}).get("nodeName") in guests:
        raise NetlabError(in_guest(f"pod {ns}/{name}"))
    netns_name = pod_netns_name(state.lab, ns, name)
    if not netns.exists(netns_name):
        raise NetlabError(f"pod {ns}/{name} has no network yet "
                          f"(phase {pod.get('status', {}).get('phase', 'Pending')})")
    return netns_name


def guest_nodes(lab: dict) -> dict[str, str]:
    """A VM lab's nodes and their guests' run dirs (lab.json); empty for a namespace lab."""
    return {n["name"]: n["vm"] for n in lab["nodes"] if "vm" in n}


def in_guest(what: str) -> str:
    """Why a command that works on host namespaces cannot reach `what` in a VM lab."""
    return (f"{what} is inside a VM (a `nodeBackend: vm` lab): trace, capture, proxy rules "
            "and checks read namespaces on this host and do not reach into guests; "
            "use `knetlab exec NODE -- COMMAND` there")
