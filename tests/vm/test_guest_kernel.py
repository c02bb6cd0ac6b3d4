"""A guest runs its own distribution kernel, with the modules the host's kernel lacks."""

from __future__ import annotations

import os
import sys

import netlab
from netlab.lab.vm.kernel import find_kernel
from netlab.lab.vm.machine import VirtualMachine


def test_guest_runs_the_distribution_kernel(vm: VirtualMachine) -> None:
    assert vm.run(["uname", "-r"], check=True).stdout.strip() == find_kernel().version


def test_ip_vs_loads_and_serves_virtual_servers(vm: VirtualMachine) -> None:
    vm.sh("modprobe ip_vs; test -e /proc/net/ip_vs")
    listing = vm.sh("ipvsadm -A -t 10.96.0.10:80 -s rr && ipvsadm -Ln && ipvsadm -C").stdout
    assert "TCP  10.96.0.10:80 rr" in listing


def test_dummy_device_can_be_created(vm: VirtualMachine) -> None:
    vm.sh("modprobe dummy; ip netns add vmt-dummy; "
          "ip -n vmt-dummy link add kube-ipvs0 type dummy")
    try:
        assert "kube-ipvs0" in vm.run(["ip", "-n", "vmt-dummy", "link"], check=True).stdout
    finally:
        vm.run(["ip", "netns", "del", "vmt-dummy"], check=True)


def test_checkout_and_interpreter_are_the_hosts(vm: VirtualMachine) -> None:
    """What a test run inside a guest relies on: same paths, writable checkout and /tmp."""
    here = os.path.dirname(os.path.abspath(__file__))
    result = vm.run(["python3", "-c", "import netlab, sys; print(netlab.__file__); "
                     "print(sys.version)"], check=True, cwd=here)
    assert result.stdout.splitlines() == [netlab.__file__, sys.version]
    vm.sh(f"touch {here}/.vmt-probe /tmp/.vmt-probe && rm {here}/.vmt-probe /tmp/.vmt-probe")
    assert not os.path.exists(f"{here}/.vmt-probe")  # the guest's writes stay in the guest
