"""Machines joined by etcd alone, as Vagrant VMs are, played by namespaces on this host.

Each machine is a namespace laid out like a Vagrant VM: `eth0` is a stand-in for
VirtualBox's NAT (10.0.2.15 on every machine, and the default route), `eth1` the
private network the machines share (192.168.56.0/24). etcd runs on the first
machine; on each, `knetlab control-plane|agent|runtime --store etcd://...` run as
systemd would start them there: in the machine's own namespace (they are started
inside it with nsenter and never told which namespace they are in), with no lab
file and no lab state dir, reading the cluster config from the store.

Everything made is recorded in a state dir under the lab root, so the standard
cleanup (`netlab.lab.cleanup.clean`) removes it, and other labs' host checks
leave it out while it runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from netlab.kernel import netns
from netlab.lab import cleanup
from netlab.lab.lifecycle import _record_host_dirs
from netlab.lab.netns_machines import NetnsMachines, Underlay, machine_netns
from netlab.lab.state import StateDir
from netlab.node.podfiles import pod_netns_name
from netlab.store import open_store
from netlab.store.etcd_server import CLIENT_PORT, member_argv, wait_ready
from netlab.store.objects import Objects

UNDERLAY = Underlay("192.168.56.0/24", "192.168.56.1")
NAT_ADDRESS = "10.0.2.15"  # the same on every Vagrant VM: the pitfall
NAT_GATEWAY = "10.0.2.2"


def knetlab_argv() -> list[str]:
    return [sys.executable, "-m", "netlab"]


class Machines:
    """A control-plane machine with etcd, and workers; `start()` runs the components."""

    def __init__(self, lab: str, workers: int = 2, dns: bool = True,
                 tmp_dir: Path | None = None) -> None:
        self.lab = lab
        self.state = StateDir(lab)
        self.dns = dns
        self.names = ["control-plane"] + [f"worker-{i}" for i in range(1, workers + 1)]
        self.addresses = {name: f"192.168.56.{10 + i}" for i, name in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.tmp_dir = tmp_dir or Path(self.state.path)
        self.machines = NetnsMachines(self.state, UNDERLAY)

    # addresses and URLs
    @property
    def store_url(self) -> str:
        """As every machine names the store: the control plane's private address."""
        return f"etcd://{self.addresses['control-plane']}:{CLIENT_PORT}"

    @property
    def host_store_url(self) -> str:
        """For this test process, outside the machines' network."""
        return f"{self.store_url}?netns={self.netns('control-plane')}"

    def netns(self, machine: str) -> str:
        return machine_netns(self.lab, machine)

    def pod_netns(self, pod: str, namespace: str = "default") -> str:
        return pod_netns_name(self.lab, namespace, pod)

    # making machines
    def create(self) -> None:
        self.state.create()
        _record_host_dirs(self.state)  # /run/netns, /etc/netns: removed again if made now
        self.machines.create_underlay()
        for name in self.names:
            self.add_machine(name)

    def add_machine(self, name: str) -> None:
        if name not in self.addresses:
            self.names.append(name)
            self.addresses[name] = f"192.168.56.{10 + len(self.names) - 1}"
        self.machines.create_machine(name, self.addresses[name], self.names.index(name) + 1)
        self._vagrant_layout(self.netns(name))

    @staticmethod
    def _vagrant_layout(ns: str) -> None:
        """eth0 -> eth1 (the private network); a NAT-like eth0 holding the default route."""
        with netns.entered(ns):
            ipr = IPRoute()
        with ipr:
            private = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=private, state="down")
            ipr.link("set", index=private, ifname="eth1")
            ipr.link("set", index=private, state="up")
            # A veth whose peer stays in the machine: a link that leads nowhere, as the NAT
            # leads nowhere the lab cares about (no dummy module needed).
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "nat-peer"})
            ipr.link("set", index=ipr.link_lookup(ifname="nat-peer")[0], state="up")
            nat = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=nat, address=NAT_ADDRESS, prefixlen=24)
            ipr.link("set", index=nat, state="up")
            ipr.route("replace", dst="0.0.0.0/0", gateway=NAT_GATEWAY, oif=nat)

    # processes
    def _spawn(self, role: str, machine: str, argv: list[str]) -> None:
        log = open(self.state.log_path(role), "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(["nsenter", f"--net={netns.path_of(self.netns(machine))}",
                                 *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.state.record_process(role, proc.pid)
        self.procs[role] = proc

    def start_etcd(self) -> None:
        self._spawn("etcd", "control-plane",
                    member_argv(self.lab, f"{self.state.etcd_data_dir}/member",
                                self.addresses["control-plane"]))
        wait_ready(f"{self.addresses['control-plane']}:{CLIENT_PORT}", 30,
                   netns=self.netns("control-plane"), proc=self.procs["etcd"])

    def lab_file(self) -> str:
        """What `--config` gets: a lab file's cluster sections (nodes are the machines)."""
        path = self.tmp_dir / "cluster.yaml"
        path.write_text(yaml.safe_dump({
            "name": self.lab,
            "nodes": [{"name": name, "address": self.addresses[name],
                       "role": "control-plane" if name == "control-plane" else "worker"}
                      for name in self.names],
            "network": {"underlay": {"cidr": UNDERLAY.cidr}},
            "dns": {"enabled": self.dns},
        }))
        return str(path)

    def start_control_plane(self) -> None:
        self._spawn("control-plane", "control-plane",
                    [*knetlab_argv(), "control-plane", "--store", self.store_url,
                     "--config", self.lab_file()])

    def start_node(self, name: str) -> None:
        role = "control-plane" if name == "control-plane" else "worker"
        node_args = ["--store", self.store_url, "--node", name]
        self._spawn(f"runtime-{name}", name, [*knetlab_argv(), "runtime", *node_args])
        self.start_agent(name, role)

    def start_agent(self, name: str, role: str = "worker") -> None:
        self._spawn(f"agent-{name}", name,
                    [*knetlab_argv(), "agent", "--store", self.store_url, "--node", name,
                     "--role", role, "--state-dir", self.state.path])

    def kill(self, role: str) -> None:
        proc = self.procs.pop(role)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, role: str) -> None:
        proc = self.procs.pop(role)
        proc.terminate()
        proc.wait(10)

    def start(self) -> None:
        self.start_etcd()
        self.start_control_plane()
        wait_for(lambda: self.objects().get("Namespace", None, "default"), 60,
                 "the control plane to bootstrap the store")
        for name in self.names:
            self.start_node(name)

    def remove(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The state dir goes with the cleanup; its logs are kept beside the test's files.
        shutil.copytree(os.path.join(self.state.path, "logs"), self.tmp_dir / "logs",
                        dirs_exist_ok=True)
        cleanup.clean(self.state)

    # looking
    def objects(self) -> Objects:
        return Objects(open_store(self.host_store_url))

    def run(self, machine_or_pod_netns: str, *argv: str, check: bool = False,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", machine_or_pod_netns, *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def log(self, role: str) -> str:
        with open(self.state.log_path(role), errors="replace") as f:
            return f.read()


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
