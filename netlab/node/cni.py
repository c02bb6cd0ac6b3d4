"""The CNI bridge plugin's work, done in-process (flannel delegates to it on each node).

cni0 holds the gateway address of the node's pod subnet; each pod gets a veth pair
whose host end (`veth` + 8 hex characters) is a hairpin-enabled port of cni0 and
whose other end is `eth0` in the pod's namespace, with the pod's address and a
default route via the gateway. Everything runs over netlink sockets opened once per
namespace; nothing forks.

All methods run in the node's network namespace (the agent lives there).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import KernelError
from netlab.kernel import netns

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
    """cni0 and the pods attached to it, in the calling thread's namespace."""

    def __init__(self, ipr: IPRoute, subnet: str, mtu: int) -> None:
        self.ipr = ipr
        self.subnet = ipaddress.ip_network(subnet)
        self.gateway = str(self.subnet[1])
        self.mtu = mtu
        self.bridge_index = 0

    def ensure_bridge(self) -> None:
        """Create cni0 with the gateway address (isGateway), or adopt the existing one."""
        found = self.ipr.link_lookup(ifname=BRIDGE)
        if not found:
            self.ipr.link("add", ifname=BRIDGE, kind="bridge", mtu=self.mtu)
            found = self.ipr.link_lookup(ifname=BRIDGE)
        self.bridge_index = found[0]
        self.ipr.link("set", index=self.bridge_index, mtu=self.mtu, state="up")
        try:
            self.ipr.addr("add", index=self.bridge_index, address=self.gateway,
                          prefixlen=self.subnet.prefixlen)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: a restarted agent finds its gateway in place
                raise KernelError(f"{BRIDGE} address {self.gateway}: {exc}") from exc

    def attach(self, pod_netns: str, container_id: str, ip: str) -> PodAttachment:
        """ADD: namespace, veth pair, address and default route; idempotent."""
        veth = host_veth_name(container_id)
        if not netns.exists(pod_netns):
            netns.create(pod_netns)
        existing = self.ipr.link_lookup(ifname=veth)
        if existing:
            mac = self._pod_mac(pod_netns)
            if mac:
                return PodAttachment(pod_netns, ip, veth, mac)
            self.ipr.link("del", index=existing[0])
        fd = os.open(netns.path_of(pod_netns), os.O_RDONLY)
        try:
            self.ipr.link("add", ifname=veth, kind="veth", mtu=self.mtu,
                          peer={"ifname": POD_IFNAME, "net_ns_fd": fd, "mtu": self.mtu})
        except NetlinkError as exc:
            raise KernelError(f"veth {veth} for {pod_netns}: {exc}") from exc
        finally:
            os.close(fd)
        index = self.ipr.link_lookup(ifname=veth)[0]
        self.ipr.link("set", index=index, master=self.bridge_index, state="up")
        self.ipr.link("set", index=index, kind="bridge_slave", mode=1)  # hairpin
        with netns.entered(pod_netns):
            pod = IPRoute()
        try:
            pod.link("set", index=1, state="up")
            eth0 = pod.link_lookup(ifname=POD_IFNAME)[0]
            pod.addr("add", index=eth0, address=ip, prefixlen=self.subnet.prefixlen)
            pod.link("set", index=eth0, state="up")
            pod.route("add", dst="0.0.0.0/0", gateway=self.gateway, oif=eth0)
            mac = pod.get_links(eth0)[0].get_attr("IFLA_ADDRESS")
        except NetlinkError as exc:
            raise KernelError(f"configuring eth0 in {pod_netns}: {exc}") from exc
        finally:
            pod.close()
        return PodAttachment(pod_netns, ip, veth, mac)

    @staticmethod
    def _pod_mac(pod_netns: str) -> str | None:
        with netns.entered(pod_netns):
            pod = IPRoute()
        try:
            found = pod.link_lookup(ifname=POD_IFNAME)
            if not found:
                return None
            link = pod.get_links(found[0])[0]
            has_addr = bool(pod.get_addr(index=found[0], family=2))
            return link.get_attr("IFLA_ADDRESS") if has_addr else None
        finally:
            pod.close()

    @staticmethod
    def detach(pod_netns: str) -> None:
        """DEL: removing the namespace takes eth0 and, with it, the host veth."""
        netns.delete(pod_netns)
