"""Fixtures for tests that run small VMs with their own (distribution) kernel.

    vm          one guest for the session, no network: `vm.run(argv, timeout)`,
                `vm.sh(script)`; root, the checkout at the same path (writable
                overlay), /tmp writable, the host's python3 first on PATH
    vm_cluster  three guests on one L2 (192.168.50.0/24, gateway .1 on a bridge in
                a namespace of their own): `vm_cluster[0]`, `.ip`, `vm_cluster.netns`

Every test here is marked `vm` and `root`, and skipped, naming what is missing,
when QEMU, a guest kernel or a static busybox is not installed (scripts/install
installs them). Guests boot under TCG unless KNETLAB_VM_ACCEL=kvm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from netlab.kernel import netns
from netlab.lab.vm import machine, network
from netlab.lab.vm.machine import VirtualMachine, VmConfig
from netlab.lab.vm.qemu import Nic

BOOT_TIMEOUT = 300.0
CLUSTER_SIZE = 3
CLUSTER_CIDR_PREFIX = "192.168.50."
CLUSTER_GATEWAY = CLUSTER_CIDR_PREFIX + "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    ours = [item for item in items if str(item.fspath).startswith(here)]
    if not ours:
        return
    reason = machine.preflight() if os.geteuid() == 0 else "needs root (QEMU, namespaces)"
    for item in ours:
        item.add_marker(pytest.mark.vm)
        item.add_marker(pytest.mark.root)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"no VM tier here: {reason}"))


def _run_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    return str(tmp_path_factory.mktemp(name, numbered=True))


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMachine]:
    """One guest for the whole session (1 GiB: enough for pytest and IPVS tests inside)."""
    guest = VirtualMachine(VmConfig(f"vmt-single-{os.getpid()}", _run_dir(tmp_path_factory,
                                                                          "vm"),
                                    memory_mb=1024, die_with_parent=True))
    guest.boot(BOOT_TIMEOUT)
    try:
        yield guest
    finally:
        guest.shutdown()
        machine.cleanup(guest.config.run_dir)


@dataclass
class VmCluster:
    """Guests on one L2; the namespace holds the bridge (and the gateway address)."""

    netns: str
    vms: list[VirtualMachine]

    def __getitem__(self, index: int) -> VirtualMachine:
        return self.vms[index]

    def __len__(self) -> int:
        return len(self.vms)


@pytest.fixture(scope="session")
def vm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmCluster]:
    l2 = f"vmt-l2-{os.getpid()}"
    created_run_dir = netns.prepare_run_dir()
    guests: list[VirtualMachine] = []
    try:
        network.create_bridge_netns(l2, CLUSTER_GATEWAY, 24)
        for i in range(CLUSTER_SIZE):
            name = f"vmt-node{i + 1}"
            tap = f"tap{i + 1}"
            network.add_tap(l2, tap)
            nic = Nic(tap, network.mac_for(f"{l2}/{name}"), f"{CLUSTER_CIDR_PREFIX}{11 + i}/24",
                      CLUSTER_GATEWAY)
            guests.append(VirtualMachine(VmConfig(name, _run_dir(tmp_path_factory, name),
                                                  nic=nic, netns=l2, die_with_parent=True)))
        machine.boot_all(guests, BOOT_TIMEOUT)
        yield VmCluster(l2, guests)
    finally:
        for guest in guests:
            guest.shutdown()
            machine.cleanup(guest.config.run_dir)
        netns.delete(l2)
        if created_run_dir:
            netns.release_run_dir()
