"""Machines as network namespaces: the default node backend.

An `underlay` namespace holds a bridge that plays the L2 network between machines
(with the gateway address, so nodes have a default route like real ones); each
node is a namespace whose eth0 is a veth into that bridge; `ext` is one more
machine on the underlay that plays a client outside the cluster. The agents then
do inside each node what kubelet, flannel and kube-proxy do on a real one.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute

from netlab.kernel import netns, sysctl
from netlab.lab.state import StateDir, netns_prefix

UNDERLAY_BRIDGE = "br-underlay"

# What kubeadm's preflight and a kube-proxy/flannel node set up.
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.bridge.bridge-nf-call-iptables": 1,
    "net.bridge.bridge-nf-call-ip6tables": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}


@dataclass(frozen=True)
class Machine:
    name: str  # node name, or "ext"
    address: str
    netns: str


@dataclass(frozen=True)
class Underlay:
    cidr: str
    gateway: str
    mtu: int = 1500


def machine_netns(lab: str, machine: str) -> str:
    return netns_prefix(lab) + machine


def underlay_netns(lab: str) -> str:
    return netns_prefix(lab) + "underlay"


class NetnsMachines:
    """Creates and removes the underlay and the machines of one lab."""

    def __init__(self, state: StateDir, underlay: Underlay) -> None:
        self.state = state
        self.underlay = underlay
        self.prefixlen = ipaddress.ip_network(underlay.cidr).prefixlen

    def create_underlay(self) -> None:
        name = underlay_netns(self.state.lab)
        self.state.record_netns(name)
        netns.create(name)
        with netns.entered(name):
            ipr = IPRoute()
        with ipr:
            ipr.link("set", index=1, state="up")
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge", mtu=self.underlay.mtu)
            index = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.addr("add", index=index, address=self.underlay.gateway,
                     prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")

    def create_machine(self, name: str, address: str, port_number: int) -> Machine:
        """A namespace with eth0 on the underlay, a default route and a node's sysctls."""
        lab = self.state.lab
        ns = machine_netns(lab, name)
        self.state.record_netns(ns)
        netns.create(ns)
        port = f"port{port_number}"
        under = underlay_netns(lab)
        with netns.entered(under):
            uipr = IPRoute()
        with uipr:
            fd = os.open(netns.path_of(ns), os.O_RDONLY)
            try:
                uipr.link("add", ifname=port, kind="veth", mtu=self.underlay.mtu,
                          peer={"ifname": "eth0", "net_ns_fd": fd, "mtu": self.underlay.mtu})
            finally:
                os.close(fd)
            bridge = uipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            index = uipr.link_lookup(ifname=port)[0]
            uipr.link("set", index=index, master=bridge, state="up")
        with netns.entered(ns):
            ipr = IPRoute()
            sysctl.apply(NODE_SYSCTLS)
        with ipr:
            ipr.link("set", index=1, state="up")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=address, prefixlen=self.prefixlen)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=self.underlay.gateway, oif=eth0)
        return Machine(name, address, ns)
