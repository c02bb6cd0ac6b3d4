"""Which interface and address a node uses for the cluster, and whether the machine is ready.

The flannel-on-Vagrant pitfall: a Vagrant VM's eth0 is VirtualBox's NAT (10.0.2.15 on
every VM, default route), its eth1 the private network the VMs share. flanneld's
default `--iface` is the default route's interface, so every node announced
10.0.2.15 as its VXLAN endpoint and no pod reached another node. Here the default is
the interface holding the node's cluster address, and that address is the source the
kernel picks to reach the store (the control plane): on a Vagrant VM, eth1's. The
choice is a pure function (`choose_interface`); `host_addresses` and `route_source`
are the thin kernel reads it is given.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute

from netlab.errors import NetlabError

# kubeadm's preflight checks these (and flannel's and kube-proxy's docs ask for them):
# without forwarding no pod leaves its node; without bridge-nf-call-iptables a Service
# reached from a pod on the same bridge skips kube-proxy's DNAT.
REQUIRED_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}


class NodeSetupError(NetlabError):
    """The machine cannot run a node as asked (interface, address, sysctls)."""


@dataclass(frozen=True)
class HostAddress:
    """One IPv4 address of the machine and the interface holding it."""

    ifname: str
    address: str
    prefixlen: int


def _listing(addresses: Sequence[HostAddress]) -> str:
    return ", ".join(f"{a.ifname} {a.address}" for a in addresses) or "none"


def choose_interface(addresses: Sequence[HostAddress], *, iface: str | None = None,
                     address: str | None = None, route_source: str | None = None,
                     store_host: str = "the store") -> tuple[str, str]:
    """The (interface, address) a node uses for the overlay and registers as InternalIP.

    - `address` given: the interface holding it (and `iface`, if also given, must be it);
    - `iface` given: its first IPv4 address;
    - neither: the address the kernel uses as source towards the store host
      (`route_source`), and the interface holding it. Never the default route's
      interface for its own sake: on a Vagrant VM that is the NAT one.
    """
    usable = [a for a in addresses if not ipaddress.ip_address(a.address).is_loopback]
    if address is not None:
        holders = [a for a in usable if a.address == address]
        if not holders:
            raise NodeSetupError(f"--address {address}: no interface of this machine holds "
                                 f"it (addresses: {_listing(usable)})")
        if iface is not None and holders[0].ifname != iface:
            raise NodeSetupError(f"--address {address} is on {holders[0].ifname}, not on "
                                 f"--iface {iface}")
        return holders[0].ifname, address
    if iface is not None:
        on_iface = [a for a in usable if a.ifname == iface]
        if not on_iface:
            raise NodeSetupError(f"--iface {iface}: no such interface with an IPv4 address "
                                 f"(addresses: {_listing(usable)})")
        return iface, on_iface[0].address
    if route_source is None or ipaddress.ip_address(route_source).is_loopback:
        raise NodeSetupError(
            f"cannot tell this node's cluster address: {store_host} is not reached over a "
            "network interface (give --address IP or --iface NAME)")
    holders = [a for a in usable if a.address == route_source]
    if not holders:
        raise NodeSetupError(f"the route to {store_host} leaves from {route_source}, which no "
                             f"interface holds (addresses: {_listing(usable)}); give --address")
    return holders[0].ifname, route_source


def preflight_problems(read: Callable[[str], str | None]) -> list[str]:
    """What kubeadm's preflight would complain about; `read` gives a sysctl (None: absent)."""
    problems = []
    for name, wanted in REQUIRED_SYSCTLS.items():
        value = read(name)
        if value is None and name.startswith("net.bridge."):
            problems.append(f"{name} is missing: load br_netfilter (modprobe br_netfilter)")
        elif value != wanted:
            problems.append(f"{name} is {value}, needs {wanted} (sysctl -w {name}={wanted})")
    return problems


# kernel reads ---------------------------------------------------------------------------

def host_addresses() -> list[HostAddress]:
    """Every IPv4 address of the current network namespace."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [HostAddress(names.get(a["index"], "?"), a.get_attr("IFA_ADDRESS"),
                            a["prefixlen"]) for a in ipr.get_addr(family=socket.AF_INET)]


def route_source(host: str) -> str | None:
    """The source address the kernel picks to reach host (None: no route)."""
    try:
        destination = socket.gethostbyname(host)
    except OSError:
        return None
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=destination)
        except OSError:
            return None
    return routes[0].get_attr("RTA_PREFSRC") if routes else None


def interface_mtu(ifname: str) -> int:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise NodeSetupError(f"no interface {ifname}")
        return int(ipr.get_links(found[0])[0].get_attr("IFLA_MTU"))


def read_sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None
