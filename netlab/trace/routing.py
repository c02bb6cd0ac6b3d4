"""A machine's layer-3 state (routes, addresses, neighbours, VXLAN FDB) and lookups on it.

Both modes ask the same questions (which route, which source address, which
VTEP) of a `NetState`: the simulator builds it from the lab's model (what
flannel and the CNI plugin should have programmed), the live trace from the
kernel's tables read in each namespace. When the two answers differ, `--diff`
shows it, which is how a missing route or a stale FDB entry shows up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from netlab.node.cni import BRIDGE
from netlab.trace.labview import LabView, Machine, PodView


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR; 0.0.0.0/0 for the default route
    dev: str
    gateway: str | None = None
    kind: str = "unicast"  # unicast | local | unreachable | blackhole | prohibit
    prefsrc: str | None = None
    onlink: bool = False

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local {self.dst.split('/')[0]} dev {self.dev}"
        dst = "default" if self.dst == "0.0.0.0/0" else self.dst
        if self.kind != "unicast":
            return f"{self.kind} {dst}"
        text = dst + (f" via {self.gateway}" if self.gateway else "") + f" dev {self.dev}"
        return text + (" onlink" if self.onlink else "")


@dataclass
class NetState:
    """Routes (main table), addresses per device (primary first), neighbours, FDB, MTUs."""

    routes: list[Route] = field(default_factory=list)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    neighbours: dict[tuple[str, str], str] = field(default_factory=dict)  # (dev, ip) -> mac
    fdb: dict[tuple[str, str], str] = field(default_factory=dict)  # (dev, mac) -> remote ip
    mtu: dict[str, int] = field(default_factory=dict)

    @property
    def local_addresses(self) -> set[str]:
        return {a for addrs in self.addresses.values() for a in addrs}

    def is_local(self, ip: str) -> bool:
        return ip in self.local_addresses or ipaddress.ip_address(ip).is_loopback

    def lookup(self, dst: str) -> Route | None:
        """The route the kernel would pick: local addresses first, then longest prefix."""
        if self.is_local(dst):
            dev = next((d for d, addrs in self.addresses.items() if dst in addrs), "lo")
            return Route(f"{dst}/32", dev, kind="local")
        addr = ipaddress.ip_address(dst)
        best: Route | None = None
        best_len = -1
        for route in self.routes:
            net = ipaddress.ip_network(route.dst, strict=False)
            if addr in net and net.prefixlen > best_len:
                best, best_len = route, net.prefixlen
        return best

    def source_for(self, dst: str) -> str | None:
        """The source address the kernel gives a locally generated packet to dst."""
        route = self.lookup(dst)
        if route is None:
            return None
        if route.kind == "local":
            return dst
        if route.prefsrc:
            return route.prefsrc
        addrs = self.addresses.get(route.dev) or []
        return addrs[0] if addrs else None

    def primary_address(self, dev: str) -> str | None:
        """What MASQUERADE writes as the new source on this egress device."""
        addrs = self.addresses.get(dev) or []
        return addrs[0] if addrs else None


def node_state(view: LabView, machine: Machine) -> NetState:
    """What flannel, the CNI bridge plugin and the lab's machine set-up program on a node."""
    state = NetState()
    mtu = view.config.underlay_mtu
    state.addresses = {"lo": ["127.0.0.1"], "eth0": [machine.address]}
    state.mtu = {"eth0": mtu, "lo": 65536}
    state.routes = [Route("0.0.0.0/0", "eth0", view.underlay_gateway),
                    Route(view.underlay_cidr, "eth0", prefsrc=machine.address)]
    if not machine.is_node or machine.pod_cidr is None:
        return state
    vxlan = view.config.backend == "vxlan"
    device = view.vxlan_device
    state.addresses[BRIDGE] = [machine.bridge_address or ""]
    state.mtu[BRIDGE] = view.config.pod_mtu
    for pod in view.pods.values():  # the CNI plugin gives both veth ends the pod MTU
        if pod.node == machine.name:
            state.mtu[pod.host_veth] = view.config.pod_mtu
    state.routes.append(Route(machine.pod_cidr, BRIDGE, prefsrc=machine.bridge_address))
    if vxlan:
        state.addresses[device] = [machine.vtep_address or ""]
        state.mtu[device] = view.config.pod_mtu
    for peer in view.nodes:
        if peer.name == machine.name or not peer.pod_cidr:
            continue
        if vxlan:
            gateway = peer.vtep_address or ""
            state.routes.append(Route(peer.pod_cidr, device, gateway, onlink=True))
            if peer.vtep_mac:
                state.neighbours[(device, gateway)] = peer.vtep_mac
                state.fdb[(device, peer.vtep_mac)] = peer.address
        else:
            state.routes.append(Route(peer.pod_cidr, "eth0", peer.address))
    return state


def pod_state(view: LabView, pod: PodView) -> NetState:
    """A pod: eth0 with its address in the node's subnet, default route via cni0's address."""
    node = view.machines[pod.node]
    cidr = node.pod_cidr or f"{pod.ip}/32"
    return NetState(
        routes=[Route("0.0.0.0/0", "eth0", node.bridge_address),
                Route(cidr, "eth0", prefsrc=pod.ip)],
        addresses={"lo": ["127.0.0.1"], "eth0": [pod.ip]},
        mtu={"eth0": view.config.pod_mtu, "lo": 65536})
