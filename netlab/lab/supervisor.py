"""The lab supervisor: starts the lab's processes and restarts any that die.

One supervisor per lab, detached from the terminal that ran `knetlab up`. It runs
the control plane, and per node an agent and a runtime, each in the node's
namespace, logging to the state dir. A process that exits is restarted with a
back-off (so `kill` of an agent is a kubelet restart, not a dead node). SIGTERM
stops the children and then the supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from netlab.kernel import netns
from netlab.lab.state import StateDir

log = logging.getLogger(__name__)

STOP_GRACE = 5.0


@dataclass
class Child:
    role: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)


def component_argv(state: StateDir) -> list[tuple[str, list[str]]]:
    """Every process of the lab: (role, argv)."""
    lab = state.read_lab()
    base = [sys.executable, "-m", "netlab"]
    common = ["--state-dir", state.path]
    children = [("control-plane", base + ["control-plane", *common])]
    for node in lab["nodes"]:
        # Started inside the node's namespace (nsenter), and each enters it again itself:
        # a node component must never run in the host's namespace.
        inside = ["nsenter", f"--net={netns.path_of(node['netns'])}", *base]
        node_args = [*common, "--node", node["name"], "--netns", node["netns"]]
        children.append((f"agent-{node['name']}", inside + ["agent", *node_args,
                                                            "--address", node["address"],
                                                            "--role", node["role"]]))
        children.append((f"runtime-{node['name']}", inside + ["runtime", *node_args]))
    return children


class Supervisor:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.children = [Child(role, argv) for role, argv in component_argv(state)]
        self.stopping = False

    def _start(self, child: Child) -> None:
        log_file = open(self.state.log_path(child.role), "ab")  # noqa: SIM115 (child owns it)
        child.proc = subprocess.Popen(child.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        log_file.close()
        self.state.record_process(child.role, child.proc.pid)
        log.info("started %s (pid %d)", child.role, child.proc.pid)

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        for child in self.children:
            self._start(child)
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                code = child.proc.poll() if child.proc else None
                if child.proc is not None and code is not None:
                    log.warning("%s exited with %s; restarting", child.role, code)
                    child.restarts += 1
                    delay = min(0.5 * 2 ** min(child.restarts, 5), 10.0)
                    child.next_start = now + delay
                    child.proc = None
                if child.proc is None and now >= child.next_start:
                    self._start(child)
            time.sleep(0.2)
        self.stop_children()

    def stop_children(self) -> None:
        running = [c.proc for c in self.children if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def spawn_supervisor(state: StateDir) -> int:
    """Start the supervisor detached from this terminal; returns its pid."""
    log_file = open(state.log_path("supervisor"), "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "supervise", "--state-dir",
                             state.path], stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log_file.close()
    state.record_process("supervisor", proc.pid)
    return proc.pid
