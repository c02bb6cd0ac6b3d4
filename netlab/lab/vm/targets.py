"""`knetlab exec` on a VM lab: a node is its guest, a pod is a namespace in its node's guest.

The namespace backend's targets are namespaces on the host (lab/targets.py); in a
VM lab they live inside guests, so a command goes through the guest's command
channel instead (`ip netns exec` inside the guest for a pod). `ext` stays a
namespace on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.errors import NetlabError
from netlab.lab.state import StateDir
from netlab.lab.targets import guest_nodes
from netlab.lab.vm.machine import VirtualMachine
from netlab.node.podfiles import pod_netns_name
from netlab.store.objects import Objects


@dataclass(frozen=True)
class GuestPlace:
    node: str
    run_dir: str  # the guest's run dir (VirtualMachine.attach)
    netns: str | None  # a pod's namespace inside the guest; None: the guest itself

    def argv(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    def run(self, command: list[str], timeout: float) -> tuple[int, str, str]:
        guest = VirtualMachine.attach(self.run_dir)
        try:
            result = guest.run(self.argv(command), timeout)
        finally:
            guest.detach()
        return result.rc, result.stdout, result.stderr


def guest_place(state: StateDir, objects: Objects, target: str,
                namespace: str = "default") -> GuestPlace | None:
    """Where `target` is in a VM lab; None for a namespace lab, `ext` or a remote store."""
    if not isinstance(state, StateDir):
        return None
    nodes = guest_nodes(state.read_lab())
    if not nodes or target == "ext":
        return None
    if target in nodes:
        return GuestPlace(target, nodes[target], None)
    ns, _, name = target.rpartition("/")
    ns = ns or namespace
    pod = objects.get("Pod", ns, name)
    if pod is None:
        raise NetlabError(f"no pod {ns}/{name} and no node {target!r} "
                          f"(nodes: {', '.join(nodes)}, ext)")
    node = (pod.get("spec") or {}).get("nodeName")
    if node not in nodes:
        raise NetlabError(f"pod {ns}/{name} is not scheduled to a node yet")
    return GuestPlace(node, nodes[node], pod_netns_name(state.lab, ns, name))
