"""Guests share an L2 network that exists only inside a namespace the fixture owns."""

from __future__ import annotations

from tests.vm.conftest import CLUSTER_GATEWAY, VmCluster


def test_guests_ping_each_other_on_the_l2(vm_cluster: VmCluster) -> None:
    first, *others = vm_cluster.vms
    for other in others:
        first.run(["ping", "-c", "2", "-W", "5", other.ip], check=True)  # type: ignore[list-item]


def test_guest_sees_its_peers_by_mac_on_one_segment(vm_cluster: VmCluster) -> None:
    first, second = vm_cluster[0], vm_cluster[1]
    first.run(["ping", "-c", "1", "-W", "5", second.ip], check=True)  # type: ignore[list-item]
    neighbours = first.run(["ip", "neigh", "show", "dev", "eth0"], check=True).stdout
    mac = second.config.nic.mac  # type: ignore[union-attr]
    assert f"{second.ip} lladdr {mac}" in neighbours


def test_gateway_on_the_bridge_answers(vm_cluster: VmCluster) -> None:
    vm_cluster[2].run(["ping", "-c", "1", "-W", "5", CLUSTER_GATEWAY], check=True)
