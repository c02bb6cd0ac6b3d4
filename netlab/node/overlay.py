"""flannel's role on a node: the subnet lease, the VXLAN device, per-peer entries, masquerade.

Laid out as flannel's vxlan backend lays it out (see shared/reference/flannel-cni.md):
`flannel.<VNI>` with `nolearning`, the node's subnet network address as /32 on it,
and for each peer lease a permanent neighbour (peer subnet .0 -> peer VtepMAC), a
permanent FDB entry (VtepMAC -> peer public IP) and an onlink route (peer subnet via
peer subnet .0). host-gw programs one route per peer via its public IP instead.
Leases live under /coreos.com/network/subnets/ exactly as flanneld writes them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.api.cluster import ClusterConfig
from netlab.errors import KernelError
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.iptables.render import JumpRule

log = logging.getLogger(__name__)

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
EEXIST = 17
ENOENT = 2
ESRCH = 3
RTPROT_BOOT = 3


@dataclass(frozen=True)
class Lease:
    """One node's subnet lease, as flanneld stores it."""

    subnet: str
    public_ip: str
    backend_type: str
    vtep_mac: str | None = None
    vni: int = 1

    def to_value(self) -> dict[str, Any]:
        data: dict[str, Any] = {"PublicIP": self.public_ip, "PublicIPv6": None,
                                "BackendType": self.backend_type}
        if self.backend_type == "vxlan":
            data["BackendData"] = {"VNI": self.vni, "VtepMAC": self.vtep_mac}
        return data

    @classmethod
    def from_value(cls, subnet: str, value: dict[str, Any]) -> Lease:
        data = value.get("BackendData") or {}
        return cls(subnet, value["PublicIP"], value.get("BackendType", "vxlan"),
                   data.get("VtepMAC"), data.get("VNI", 1))


def network_config(config: ClusterConfig) -> dict[str, Any]:
    """The value of /coreos.com/network/config (flannel's net-conf.json)."""
    backend: dict[str, Any] = {"Type": config.backend}
    if config.backend == "vxlan":
        backend.update({"VNI": config.vxlan_vni, "Port": config.vxlan_port})
    return {"Network": config.pod_cidr, "SubnetLen": config.node_subnet_len, "Backend": backend}


MASQ_HOOK = JumpRule("nat", "POSTROUTING", "FLANNEL-POSTRTG", comment="flanneld masq")
FORWARD_HOOK = JumpRule("filter", "FORWARD", "FLANNEL-FWD", comment="flanneld forward")


def masquerade_payload(pod_cidr: str, node_subnet: str,
                       missing_hooks: tuple[JumpRule, ...] = ()) -> str:
    """flannel's nat FLANNEL-POSTRTG and filter FLANNEL-FWD chains as a restore payload.

    Hooks from the built-in chains missing in the kernel are inserted at the top,
    as flanneld inserts them, in the same atomic restore.
    """
    c = '-m comment --comment "flanneld masq"'

    def hooks(table: str) -> list[str]:
        return [f'-I {h.chain} 1 -m comment --comment "{h.comment}" -j {h.target}'
                for h in missing_hooks if h.table == table]

    return "\n".join([
        "*nat",
        ":FLANNEL-POSTRTG - [0:0]",
        "-F FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {pod_cidr} -d {pod_cidr} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {pod_cidr} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s {pod_cidr} -d {node_subnet} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {pod_cidr} -d {pod_cidr} {c} -j MASQUERADE --random-fully",
        *hooks("nat"),
        "COMMIT",
        "*filter",
        ":FLANNEL-FWD - [0:0]",
        "-F FLANNEL-FWD",
        f'-A FLANNEL-FWD -s {pod_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
        f'-A FLANNEL-FWD -d {pod_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
        *hooks("filter"),
        "COMMIT",
        "",
    ])


def subnet_env(config: ClusterConfig, node_subnet: str) -> str:
    """/run/flannel/subnet.env, which flannel's CNI plugin reads."""
    gateway = ipaddress.ip_network(node_subnet)[1]
    prefix = ipaddress.ip_network(node_subnet).prefixlen
    return (f"FLANNEL_NETWORK={config.pod_cidr}\nFLANNEL_SUBNET={gateway}/{prefix}\n"
            f"FLANNEL_MTU={config.pod_mtu}\nFLANNEL_IPMASQ=true\n")


class Overlay:
    """The overlay on one node; methods run in the node's network namespace."""

    def __init__(self, ipr: IPRoute, iptables: IptablesKernel, config: ClusterConfig,
                 public_ip: str, public_iface: str) -> None:
        self.ipr = ipr
        self.iptables = iptables
        self.config = config
        self.public_ip = public_ip
        self.public_iface = public_iface
        self.device = f"flannel.{config.vxlan_vni}"
        self.subnet: str | None = None  # this node's, once set up
        self.peers: dict[str, Lease] = {}

    def _index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise KernelError(f"no interface {ifname} on this node")
        return found[0]

    def setup(self, node_subnet: str, state_dir: str) -> Lease:
        """Create the local side and return this node's lease (to be written to the store)."""
        self.subnet = node_subnet
        if self.config.backend == "vxlan":
            lease = self._setup_vxlan(node_subnet)
        else:
            lease = Lease(node_subnet, self.public_ip, "host-gw")
        missing = tuple(h for h in (MASQ_HOOK, FORWARD_HOOK) if not self.iptables.has_rule(h))
        self.iptables.restore(masquerade_payload(self.config.pod_cidr, node_subnet, missing))
        os.makedirs(state_dir, exist_ok=True)
        with open(os.path.join(state_dir, "subnet.env"), "w") as f:
            f.write(subnet_env(self.config, node_subnet))
        return lease

    def _setup_vxlan(self, node_subnet: str) -> Lease:
        self._remove_incompatible_device()
        if not self.ipr.link_lookup(ifname=self.device):
            try:
                self.ipr.link("add", ifname=self.device, kind="vxlan",
                              vxlan_id=self.config.vxlan_vni,
                              vxlan_local=self.public_ip,
                              vxlan_link=self._index(self.public_iface),
                              vxlan_port=self.config.vxlan_port,
                              vxlan_learning=0,
                              mtu=self.config.pod_mtu)
            except NetlinkError as exc:
                raise KernelError(f"creating {self.device}: {exc}") from exc
        index = self._index(self.device)
        network = str(ipaddress.ip_network(node_subnet).network_address)
        try:
            self.ipr.addr("add", index=index, address=network, prefixlen=32)
        except NetlinkError as exc:
            if exc.code != EEXIST:
                raise KernelError(f"{self.device} address: {exc}") from exc
        self.ipr.link("set", index=index, state="up")
        mac = self.ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
        return Lease(node_subnet, self.public_ip, "vxlan", mac, self.config.vxlan_vni)

    def _remove_incompatible_device(self) -> None:
        """Delete a flannel.<VNI> left by an earlier start with other settings.

        flanneld does the same when it finds the device incompatible (another VNI,
        local address, port or underlying interface, e.g. after `--iface` changed):
        it deletes and recreates it, so the new lease matches the kernel. Everything
        programmed on the old device goes with it and is made again from the leases.
        """
        found = self.ipr.link_lookup(ifname=self.device)
        if not found:
            return
        info = self.ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        wanted = {"IFLA_VXLAN_ID": self.config.vxlan_vni, "IFLA_VXLAN_LOCAL": self.public_ip,
                  "IFLA_VXLAN_PORT": self.config.vxlan_port,
                  "IFLA_VXLAN_LINK": self._index(self.public_iface)}
        if data is not None and all(data.get_attr(k) == v for k, v in wanted.items()):
            return
        log.warning("%s does not match the wanted settings (%s); recreating it", self.device,
                    ", ".join(f"{k.removeprefix('IFLA_VXLAN_').lower()} {v}"
                              for k, v in wanted.items()))
        try:
            self.ipr.link("del", index=found[0])
        except NetlinkError as exc:
            raise KernelError(f"removing {self.device}: {exc}") from exc

    def apply_peer(self, lease: Lease) -> None:
        """Program the entries that make a peer's pod subnet reachable.

        Its own lease is skipped by subnet, as flannel's lease watcher does; so when
        several nodes announce the same public IP (Vagrant's NAT address on every
        VM), each still programs the others, towards that useless address.
        """
        if lease.subnet == self.subnet:
            return
        old = self.peers.get(lease.subnet)
        if old == lease:
            return
        if old is not None:
            self.remove_peer(old.subnet)
        if lease.backend_type == "vxlan":
            self._add_vxlan_peer(lease)
        else:
            self._route("replace", dst=lease.subnet, gateway=lease.public_ip,
                        oif=self._index(self.public_iface))
        self.peers[lease.subnet] = lease
        log.info("peer %s via %s added", lease.subnet, lease.public_ip)

    def _add_vxlan_peer(self, lease: Lease) -> None:
        index = self._index(self.device)
        gateway = str(ipaddress.ip_network(lease.subnet).network_address)
        try:
            self.ipr.neigh("replace", ifindex=index, dst=gateway, lladdr=lease.vtep_mac,
                           state=NUD_PERMANENT)
            self.ipr.fdb("replace", ifindex=index, lladdr=lease.vtep_mac,
                          dst=lease.public_ip, state=NUD_PERMANENT, flags=NTF_SELF)
        except NetlinkError as exc:
            raise KernelError(f"peer {lease.subnet} entries: {exc}") from exc
        self._route("replace", dst=lease.subnet, gateway=gateway, oif=index,
                    flags=4)  # RTNH_F_ONLINK

    def remove_peer(self, subnet: str) -> None:
        lease = self.peers.pop(subnet, None)
        if lease is None:
            return
        if lease.backend_type == "vxlan":
            index = self._index(self.device)
            gateway = str(ipaddress.ip_network(lease.subnet).network_address)
            self._route("del", dst=lease.subnet, gateway=gateway, oif=index)
            self._quiet(lambda: self.ipr.fdb("del", ifindex=index, lladdr=lease.vtep_mac,
                                             dst=lease.public_ip, flags=NTF_SELF))
            self._quiet(lambda: self.ipr.neigh("del", ifindex=index, dst=gateway,
                                               lladdr=lease.vtep_mac))
        else:
            self._route("del", dst=lease.subnet, gateway=lease.public_ip)
        log.info("peer %s removed", subnet)

    def _route(self, command: str, **kw: Any) -> None:
        dst = kw.pop("dst")
        net = ipaddress.ip_network(dst)
        kw.update(dst=str(net.network_address), dst_len=net.prefixlen, family=socket.AF_INET,
                  proto=RTPROT_BOOT)  # what flanneld's routes show (no "proto static")
        if command == "del":
            self._quiet(lambda: self.ipr.route("del", **kw))
            return
        try:
            self.ipr.route(command, **kw)
        except NetlinkError as exc:
            raise KernelError(f"route {dst}: {exc}") from exc

    @staticmethod
    def _quiet(action) -> None:  # type: ignore[no-untyped-def]
        """Deleting what is already gone is fine (idempotent teardown)."""
        try:
            action()
        except NetlinkError as exc:
            if exc.code not in (ENOENT, ESRCH, 19):
                raise KernelError(str(exc)) from exc
