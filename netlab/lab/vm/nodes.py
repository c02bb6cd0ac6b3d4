"""A lab's nodes as guests (`nodeBackend: vm`), provisioned as the Vagrant lab's VMs are.

The underlay and `ext` are the namespace backend's (a bridge namespace, and a
client namespace on it); each node is a guest whose eth0 is a tap on that bridge
with the node's address. Inside each guest runs scripts/provision, the script
`vagrant up` runs: etcd and the control plane on the control-plane node, the
runtime and the agent everywhere, started without systemd. The guests see the
host's filesystem, so the checkout is bind-mounted where provision keeps its copy
(/opt/knetlab/src) and its .venv (made by scripts/install on the host) is used
as it is: a guest has no way to the package registries.

QEMU's pids are recorded as the lab's processes (`vm-<node>`), so `down` and
`clean` stop the guests as they stop any lab process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from netlab.errors import NetlabError
from netlab.lab.netns_machines import NetnsMachines, underlay_netns
from netlab.lab.state import StateDir
from netlab.lab.vm import network
from netlab.lab.vm.machine import PYTHON_PATH, VirtualMachine, VmConfig
from netlab.lab.vm.qemu import Nic

if TYPE_CHECKING:
    from netlab.lab.lifecycle import LabPlan

MEMORY_ENV = "KNETLAB_VM_MEMORY"
DEFAULT_MEMORY_MB = 1024
GUEST_SRC = "/opt/knetlab/src"  # where scripts/provision keeps the source it installs
GUEST_LAB_FILE = "/etc/knetlab/lab.yaml"
PROVISION_TIMEOUT = 900.0

Progress = Callable[[str, int, int], None]


class VmLabError(NetlabError):
    """A guest of a lab could not be booted or provisioned."""


def vm_run_dir(state: StateDir, node: str) -> str:
    return os.path.join(state.path, "vms", node)


def guests(state: StateDir) -> dict[str, VirtualMachine]:
    """Handles on a running lab's guests, by node name."""
    return {n["name"]: VirtualMachine.attach(n["vm"]) for n in state.read_lab()["nodes"]}


def check_checkout() -> None:
    """The guests run the checkout's .venv, so it must be complete and current.

    The same test scripts/install makes before it reaches for pip, which a guest
    cannot: the package imports, and pyproject.toml is not newer than the install.
    """
    venv = os.path.join(PYTHON_PATH, ".venv")
    python = os.path.join(venv, "bin", "python")
    probe = subprocess.run([python, "-c", "import netlab, pytest, hypothesis"],
                           capture_output=True) if os.path.exists(python) else None
    installed = os.path.join(venv, ".installed")
    stale = (not os.path.exists(installed) or os.path.getmtime(
        os.path.join(PYTHON_PATH, "pyproject.toml")) > os.path.getmtime(installed))
    if probe is None or probe.returncode != 0 or stale:
        raise VmLabError(f"a VM lab runs scripts/provision in each guest, which uses "
                         f"{venv} as it is (guests cannot reach a package registry), and "
                         f"it is {'missing' if probe is None else 'out of date'}: run "
                         f"{PYTHON_PATH}/scripts/install first")


class VmNodes:
    """Boots and provisions the guests of one lab."""

    def __init__(self, state: StateDir, plan: LabPlan) -> None:
        self.state = state
        self.plan = plan
        self.underlay = underlay_netns(plan.name)
        self.prefixlen = ipaddress.ip_network(plan.underlay.cidr).prefixlen
        memory = int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB))
        self.guests = {node.name: VirtualMachine(VmConfig(
            node.name, vm_run_dir(state, node.name), memory_mb=memory,
            nic=Nic(f"tap{i + 1}", network.mac_for(f"{plan.name}/{node.name}"),
                    f"{node.address}/{self.prefixlen}", plan.underlay.gateway,
                    plan.underlay.mtu),
            netns=self.underlay)) for i, node in enumerate(plan.nodes)}

    def boot(self, report: Progress, timeout: float) -> None:
        """The underlay, `ext` on it, a tap per node, and every guest booted side by side."""
        machines = NetnsMachines(self.state, self.plan.underlay)
        machines.create_underlay()
        machines.create_machine("ext", self.plan.ext_address, len(self.plan.nodes) + 1)
        for guest in self.guests.values():
            network.add_tap(self.underlay, guest.config.nic.tap,  # type: ignore[union-attr]
                            self.plan.underlay.mtu)
        report("machines", 0, len(self.guests))
        for guest in self.guests.values():
            record = guest.start()
            self.state.record("process", role=record.role, pid=record.pid,
                              start_time=record.start_time)
        for done, guest in enumerate(self.guests.values(), start=1):
            guest.wait_ready(timeout)  # on failure, the caller's cleanup stops them all
            report("machines", done, len(self.guests))

    def provision(self, node: str) -> None:
        """scripts/provision in the node's guest, as Vagrant runs it (output in logs/)."""
        spec = next(n for n in self.plan.nodes if n.name == node)
        control = next(n for n in self.plan.nodes if n.role == "control-plane")
        guest = self.guests[node]
        guest.run(["sh", "-ec", f"mkdir -p {GUEST_SRC} {os.path.dirname(GUEST_LAB_FILE)}; "
                   f"mountpoint -q {GUEST_SRC} || mount --bind {PYTHON_PATH} {GUEST_SRC}; "
                   f"cat > {GUEST_LAB_FILE}"], check=True,
                  input=json.dumps(self.plan.guest_lab).encode())
        argv = [f"{GUEST_SRC}/scripts/provision", "--role", spec.role, "--node", node,
                "--address", spec.address, "--control-plane", control.address,
                "--src", GUEST_SRC, "--config", GUEST_LAB_FILE, "--no-systemd", "--no-apply"]
        log = self.state.log_path(f"provision-{node}")
        result = guest.run(argv, PROVISION_TIMEOUT, log=log)
        if not result.ok:
            raise VmLabError(f"scripts/provision failed on {node} (exit {result.rc}"
                             f"{', timed out' if result.timed_out else ''}): see {log}\n"
                             + "\n".join(result.stderr.splitlines()[-10:]))

    def provision_all(self, nodes: list[str]) -> None:
        """Provision several guests at once; the first failure is raised after all end."""
        errors: list[BaseException] = []

        def one(node: str) -> None:
            try:
                self.provision(node)
            except BaseException as exc:  # noqa: B036 - handed to the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,), name=f"provision-{n}")
                   for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
