"""The CNI bridge plugin's work, done in-process (flannel delegates to it on each node).

cni0 holds the gateway address of the node's pod subnet; each pod gets a veth pair
whose host end (`veth` + 8 hex characters) is a hairpin-enabled port of cni0 and
whose other end is `eth0` in the pod's namespace, with the pod's address and a
default route via the gateway, both ends at the pod MTU. Everything runs over raw
rtnetlink sockets (netlab.kernel.rtnl): nothing forks, and a pod costs a handful of
netlink messages, so bring-up time is the kernel's.

All methods run in the node's network namespace (the agent lives there).
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
from dataclasses import dataclass

from netlab.kernel import netns
from netlab.kernel.rtnl import Rtnl, RtnlError

BRIDGE = "cni0"
POD_IFNAME = "eth0"


def host_veth_name(container_id: str) -> str:
    """`veth` + 8 hex characters, derived from the container ID so a restart finds it."""
    return "veth" + hashlib.sha256(container_id.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class PodAttachment:
    netns: str
    ip: str
    host_veth: str
    mac: str


class BridgeNetwork:
    """cni0 and the pods attached to it, in the namespace `rtnl` was opened in."""

    def __init__(self, rtnl: Rtnl, subnet: str, mtu: int) -> None:
        self.rtnl = rtnl
        self.subnet = ipaddress.ip_network(subnet)
        self.gateway = str(self.subnet[1])
        self.mtu = mtu
        self.bridge_index = 0

    def ensure_bridge(self) -> None:
        """Create cni0 with the gateway address (isGateway), or adopt the existing one."""
        bridge = self.rtnl.link(BRIDGE) or self.rtnl.add_bridge(BRIDGE, self.mtu)
        self.bridge_index = bridge.index
        # Set the bridge's MAC to itself, as the CNI bridge plugin does: a bridge whose
        # MAC was never set takes its lowest port's, so the gateway MAC the pods have
        # cached would change whenever a pod with a lower veth MAC came or went.
        self.rtnl.set_link(self.bridge_index, mtu=self.mtu, up=True, mac=bridge.mac)
        # A restarted agent finds its gateway in place.
        self.rtnl.add_address(self.bridge_index, self.gateway, self.subnet.prefixlen,
                              exist_ok=True)

    def attach(self, pod_netns: str, container_id: str, ip: str) -> PodAttachment:
        """ADD: namespace, veth pair, address and default route; idempotent.

        A new pod costs two requests here and five in its namespace. After an agent
        restart the same calls find what exists and complete whatever is missing.
        """
        veth = host_veth_name(container_id)
        fresh = not netns.exists(pod_netns)
        if fresh:
            netns.create(pod_netns)
        host_end = None if fresh else self.rtnl.link(veth)
        if host_end is None:
            fd = os.open(netns.path_of(pod_netns), os.O_RDONLY)
            try:
                self.rtnl.add_veth(veth, self.mtu, POD_IFNAME, fd, master=self.bridge_index,
                                   up=True)
            finally:
                os.close(fd)
        else:
            self.rtnl.set_link(host_end.index, master=self.bridge_index, up=True)
        self.rtnl.set_hairpin(veth)
        with netns.entered(pod_netns):
            pod = Rtnl()
        with pod:
            pod.set_link(1, up=True)  # lo
            eth0 = pod.link(POD_IFNAME)
            if eth0 is None:
                raise RtnlError(f"{POD_IFNAME} in {pod_netns}", errno.ENODEV)
            pod.set_link(eth0.index, up=True)
            pod.add_address(eth0.index, ip, self.subnet.prefixlen, exist_ok=not fresh)
            pod.add_default_route(eth0.index, self.gateway, exist_ok=not fresh)
        return PodAttachment(pod_netns, ip, veth, eth0.mac)

    @staticmethod
    def detach(pod_netns: str) -> None:
        """DEL: removing the namespace takes eth0 and, with it, the host veth."""
        netns.delete(pod_netns)
