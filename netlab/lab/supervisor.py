"""The lab supervisor: starts the lab's processes and restarts any that die.

One supervisor per lab, detached from the terminal that ran `knetlab up`
(`python -m netlab.lab`). It runs
the lab's own etcd if it has one (first, in the control-plane node), the control
plane, and per node an agent and a runtime, each in the node's namespace, logging
to the state dir. The netlab components are forks of the supervisor, which imports
their modules once (lab/forked.py). A process that exits is restarted with a
back-off (so `kill` of an agent is a kubelet restart, not a dead node), or at once
when the stop was announced as a restart (`knetlab restart`). SIGTERM stops the
children and then the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from netlab.errors import StoreError
from netlab.kernel import netns
from netlab.lab.components import Component
from netlab.lab.forked import PRELOAD, ForkedProcess, fork_component, preload
from netlab.lab.state import StateDir
from netlab.store import etcd_server, open_store
from netlab.store.objects import Objects

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
RESTARTS_DIR = "restarts"  # requests from `knetlab restart`, one file per role and pid
STORE_ROLE = "etcd"


@dataclass
class Child:
    """One lab process: a netlab `component` (forked) or a program's `argv` (exec'd)."""

    role: str
    component: Component | None = None
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)


def components(state: StateDir) -> list[Child]:
    """Every process of the lab: the store (exec'd) and the netlab components (forked)."""
    lab = state.read_lab()
    children = []
    member = (lab.get("store") or {}).get("member")
    if member:  # the lab's own etcd, in the control-plane node as kubeadm runs it
        children.append(Child(STORE_ROLE, argv=[
            "nsenter", f"--net={netns.path_of(member['netns'])}",
            *etcd_server.member_argv(lab["name"], state.etcd_data_dir, member["address"])]))
    # Node components are forked into their node's namespace (lab/forked.py).
    lab_components = [Component("control-plane"),
                      *(Component(kind, node) for node in lab["nodes"]
                        for kind in ("agent", "runtime"))]
    return children + [Child(c.role, component=c) for c in lab_components]


class Supervisor:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.children = components(state)
        self.stopping = False

    def _start(self, child: Child) -> None:
        log_path = self.state.log_path(child.role)
        if child.component is None:
            with open(log_path, "ab") as log_file:
                child.proc = subprocess.Popen(child.argv, stdout=log_file,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        else:
            child.proc = fork_component(child.component, self.state, log_path)
        self.state.record_process(child.role, child.proc.pid)
        log.info("started %s (pid %d)", child.role, child.proc.pid)

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        proxy_mode = self.state.read_config().proxy_mode
        preload("control-plane", proxy_mode)
        store = [c for c in self.children if c.role == STORE_ROLE]
        self._wait_for_nodes(store)
        for kind in PRELOAD:  # each kind of component as soon as its modules are in
            if self.stopping:
                break
            preload(kind, proxy_mode)
            self._tend([c for c in self.children if c.component and c.component.kind == kind])
        while not self.stopping:
            self._tend(self.children)
            time.sleep(0.2)
        self.stop_children()

    def _tend(self, children: list[Child]) -> None:
        """Start what is not running yet, restart what exited (with a back-off)."""
        now = time.monotonic()
        for child in children:
            code = child.proc.poll() if child.proc else None
            if child.proc is not None and code is not None:
                if _take_request(self.state, child.role, child.proc.pid):
                    log.info("%s stopped for a restart; starting it again", child.role)
                    child.next_start = now  # asked for, as systemctl restart: no back-off
                else:
                    log.warning("%s exited with %s; restarting", child.role, code)
                    child.restarts += 1
                    delay = min(0.5 * 2 ** min(child.restarts, 5), 10.0)
                    child.next_start = now + delay
                child.proc = None
            if child.proc is None and now >= child.next_start:
                self._start(child)

    def _wait_for_nodes(self, store: list[Child]) -> None:
        """Run the store until `up` has registered every node (kubeadm init, then join).

        Node order decides podCIDRs: agents started earlier would register themselves
        in whatever order they came up.
        """
        names = {node["name"] for node in self.state.read_lab()["nodes"]}
        objects = Objects(open_store(self.state.store_url))
        try:
            while not self.stopping:
                self._tend(store)
                with contextlib.suppress(StoreError):
                    if names <= {n["metadata"]["name"] for n in objects.list("Node")[0]}:
                        return
                time.sleep(0.05)
        finally:
            objects.store.close()

    def stop_children(self) -> None:
        """Stop the components first and the store last, so none sees it vanish."""
        store = [c for c in self.children if c.role == STORE_ROLE]
        self._stop([c for c in self.children if c not in store])
        self._stop(store)

    @staticmethod
    def _stop(children: list[Child]) -> None:
        running = [c.proc for c in children if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except (subprocess.TimeoutExpired, TimeoutError):
                proc.kill()
                proc.wait()


def restart_request(state: StateDir, role: str, pid: int) -> str:
    """The file that tells the supervisor the exit of `pid` was asked for (a restart,
    not a crash); whoever stops the process writes it first."""
    return os.path.join(state.path, RESTARTS_DIR, f"{role}.{pid}")


def _take_request(state: StateDir, role: str, pid: int) -> bool:
    try:
        os.remove(restart_request(state, role, pid))
    except FileNotFoundError:
        return False
    return True


def spawn_supervisor(state: StateDir) -> int:
    """Start the supervisor detached from this terminal; returns its pid."""
    log_file = open(state.log_path("supervisor"), "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "netlab.lab", "--state-dir", state.path],
                            stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log_file.close()
    state.record_process("supervisor", proc.pid)
    return proc.pid
