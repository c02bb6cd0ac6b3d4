"""Flannel's VXLAN layout between two guests, built by hand with iproute2.

Each guest is a node: flannel.1 (VNI 1, UDP 8472, learning off), cni0 with the
node's pod subnet gateway, one pod namespace on cni0; for the peer, the route
`10.244.N.0/24 via 10.244.N.0 dev flannel.1 onlink`, a permanent neighbour entry
for the peer's VTEP and an FDB entry pointing its MAC at the peer's eth0. That is
what flanneld writes, so the packets cross two real kernels' VXLAN code.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netlab.lab.vm.machine import VirtualMachine
from tests.vm.conftest import VmCluster

POD_NETNS = "vmt-pod"


def vtep_mac(index: int) -> str:
    return f"0a:58:0a:f4:{index:02x}:00"


def node_script(index: int, address: str, peers: dict[int, str]) -> str:
    lines = [
        "sysctl -qw net.ipv4.ip_forward=1",
        f"ip link add flannel.1 type vxlan id 1 local {address} dev eth0 dstport 8472 "
        "nolearning",
        f"ip link set flannel.1 address {vtep_mac(index)} mtu 1450 up",
        f"ip addr add 10.244.{index}.0/32 dev flannel.1",
        "ip link add cni0 type bridge",
        f"ip addr add 10.244.{index}.1/24 dev cni0",
        "ip link set cni0 up",
        f"ip netns add {POD_NETNS}",
        f"ip link add veth-pod type veth peer name eth0 netns {POD_NETNS}",
        "ip link set veth-pod master cni0 up",
        f"ip -n {POD_NETNS} link set lo up",
        f"ip -n {POD_NETNS} addr add 10.244.{index}.2/24 dev eth0",
        f"ip -n {POD_NETNS} link set eth0 up",
        f"ip -n {POD_NETNS} route add default via 10.244.{index}.1",
    ]
    for peer, peer_address in peers.items():
        lines += [
            f"ip route add 10.244.{peer}.0/24 via 10.244.{peer}.0 dev flannel.1 onlink",
            f"ip neigh add 10.244.{peer}.0 lladdr {vtep_mac(peer)} dev flannel.1 nud permanent",
            f"bridge fdb add {vtep_mac(peer)} dev flannel.1 dst {peer_address}",
        ]
    return "\n".join(lines)


def rx_packets(guest: VirtualMachine, device: str) -> int:
    return int(guest.run(["cat", f"/sys/class/net/{device}/statistics/rx_packets"],
                         check=True).stdout)


@pytest.fixture
def overlay(vm_cluster: VmCluster) -> Iterator[tuple[VirtualMachine, VirtualMachine]]:
    nodes = {1: vm_cluster[0], 2: vm_cluster[1]}
    try:
        for index, guest in nodes.items():
            peers = {i: g.ip for i, g in nodes.items() if i != index}
            guest.sh(node_script(index, guest.ip, peers))  # type: ignore[arg-type]
        yield nodes[1], nodes[2]
    finally:
        for guest in nodes.values():
            guest.sh(f"ip netns del {POD_NETNS} 2>/dev/null; ip link del cni0 2>/dev/null; "
                     "ip link del flannel.1 2>/dev/null; true")


def test_pods_on_two_vms_talk_across_vxlan(overlay: tuple[VirtualMachine, VirtualMachine]
                                           ) -> None:
    first, second = overlay
    before = rx_packets(second, "flannel.1")
    first.run(["ip", "netns", "exec", POD_NETNS, "ping", "-c", "3", "-W", "5", "10.244.2.2"],
              check=True)
    assert rx_packets(second, "flannel.1") - before >= 3  # decapsulated by the peer's VTEP
    second.run(["ip", "netns", "exec", POD_NETNS, "ping", "-c", "1", "-W", "5", "10.244.1.2"],
               check=True)


def test_vxlan_frames_on_the_underlay_use_port_8472_and_vni_1(
        overlay: tuple[VirtualMachine, VirtualMachine]) -> None:
    first, second = overlay
    capture = "timeout 30 tcpdump -c 1 -nn -T vxlan -i eth0 -e udp dst port 8472 2>/dev/null"
    second.spawn(["sh", "-c", f"{capture} > /tmp/vmt-vxlan.txt"], "/tmp/vmt-vxlan.log")
    second.sh("sleep 2")  # tcpdump under TCG takes a moment to open its socket
    first.run(["ip", "netns", "exec", POD_NETNS, "ping", "-c", "3", "-W", "5", "10.244.2.2"],
              check=True)
    seen = second.sh("for i in $(seq 60); do [ -s /tmp/vmt-vxlan.txt ] && break; sleep 0.5; "
                     "done; cat /tmp/vmt-vxlan.txt").stdout
    assert f"{first.ip}." in seen and "VXLAN" in seen and "vni 1" in seen
