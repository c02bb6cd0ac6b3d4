"""A lab file with `nodeBackend: vm` as `up` sees it: no host-kernel checks, etcd in a guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.errors import LabFileError
from netlab.lab.labfile import lab_from_data, load_lab
from netlab.lab.lifecycle import lab_info, store_info
from netlab.lab.plan import plan_from_lab
from netlab.lab.state import StateDir
from netlab.lab.vm.nodes import VmNodes

VM_LAB_FILE = Path(__file__).parents[2] / "topologies" / "vm.yaml"


def vm_lab(**fields: object):  # type: ignore[no-untyped-def]
    return lab_from_data({"name": "vmx", "nodeBackend": "vm", **fields})


def test_ipvs_mode_is_left_to_the_guest_kernel() -> None:
    """The host kernel may lack ip_vs; a VM lab's nodes run their own kernel."""
    plan = plan_from_lab(vm_lab(proxy={"mode": "ipvs"}))
    assert plan.node_backend == "vm" and plan.config.proxy_mode == "ipvs"


def test_guests_get_the_cluster_sections_without_manifests() -> None:
    plan = plan_from_lab(load_lab(VM_LAB_FILE), name="vmy")
    assert plan.manifests and plan.guest_lab is not None
    assert "manifests" not in plan.guest_lab
    assert plan.guest_lab["name"] == "vmy" and plan.guest_lab["nodeBackend"] == "vm"
    assert plan_from_lab(lab_from_data(plan.guest_lab)).config == plan.config


def test_a_vm_lab_runs_its_own_etcd_so_store_is_refused() -> None:
    with pytest.raises(LabFileError, match="store"):
        plan_from_lab(vm_lab(store={"backend": "etcd"}))


def test_host_reaches_the_guests_etcd_from_the_underlay_namespace() -> None:
    plan = plan_from_lab(vm_lab())
    assert store_info(plan) == {
        "backend": "etcd", "node_url": "etcd://192.168.10.2:2379",
        "url": "etcd://192.168.10.2:2379?netns=nl-vmx-underlay"}
    nodes = lab_info(plan)["nodes"]
    assert [n["vm"] for n in nodes] == [f"{StateDir('vmx').path}/vms/{n}"
                                        for n in ("control-plane", "worker-1", "worker-2")]


def test_each_guest_has_a_tap_and_its_node_address() -> None:
    plan = plan_from_lab(vm_lab(network={"underlay": {"mtu": 1400}}))
    guests = VmNodes(StateDir("vmx", "/nonexistent"), plan).guests
    nics = {name: guest.config.nic for name, guest in guests.items()}
    assert [(n.tap, n.address, n.gateway, n.mtu) for n in nics.values()] == [
        ("tap1", "192.168.10.2/24", "192.168.10.1", 1400),
        ("tap2", "192.168.10.3/24", "192.168.10.1", 1400),
        ("tap3", "192.168.10.4/24", "192.168.10.1", 1400)]
    assert all(g.config.netns == "nl-vmx-underlay" for g in guests.values())
