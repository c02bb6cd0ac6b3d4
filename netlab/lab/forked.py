"""Lab components as forks of the supervisor, which has already imported them.

A lab runs eight or so Python processes (control plane; per node an agent and a
runtime). Started with `python -m netlab ...` each one spent 0.3-0.7 s of CPU
importing netlab, pyroute2, asyncio and the DNS server before doing anything: about
4 s of CPU on every `up`, most of the time to a ready 3-node lab on two cores. The
supervisor imports those modules once (`preload`) and forks a child per component,
which runs the component in-process (`fork_component`, lab/components.py); the children
share the imported pages copy-on-write, so they also cost less memory.

A fork only copies the calling thread, so the supervisor forks while it has no other
thread; and the child enters its node's network namespace before running anything,
as `nsenter` did for the exec'd processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback

from netlab.errors import NetlabError
from netlab.kernel import netns
from netlab.lab import components
from netlab.lab.state import StateDir

# What each kind of component imports, in the order the supervisor loads them and
# starts the components: the control plane first, so that it creates
# and schedules the pods while the agents' modules (pyroute2, the proxy) load; the
# runtimes last (their DNS server), as they have nothing to serve before the agents
# have given pods addresses. Everything is loaded before the first restart.
PRELOAD = {"control-plane": ("netlab.control.manager",),
           "agent": ("netlab.node.agent",),
           "runtime": ("netlab.node.runtime",)}
PR_SET_NAME = 15  # prctl(2): the name ps and top show (comm), 15 bytes at most


def preload(kind: str, proxy_mode: str) -> None:
    """Import a kind of component's modules, so that its forks start with them; an
    agent's include the backend of the lab's proxy mode (and no other mode's).

    What is imported then goes to the collector's permanent generation (gc.freeze):
    the children's collections no longer walk (and so copy-on-write touch) the tens of
    thousands of module objects they inherit, collections that were a few percent of
    a lab's CPU while hundreds of pods came up.
    """
    import gc
    import importlib

    for module in PRELOAD[kind]:
        importlib.import_module(module)
    if kind == "agent":
        from netlab.proxy.modes import BACKENDS

        importlib.import_module(BACKENDS[proxy_mode])
    gc.freeze()


class ForkedProcess:
    """A forked child with the part of subprocess.Popen's interface the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone either way
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"pid {self.pid} still running after {timeout} s")
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _set_comm(name: str) -> None:
    """Name the child after its role in ps/top (its cmdline stays the supervisor's)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _child(component: components.Component, state: StateDir, log_path: str) -> int:
    """In the child: own signals and logs, the node's namespace, then the component."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    # The supervisor's logging setup is not the component's: each configures its own.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _set_comm(component.role)
    if component.netns:
        netns.enter(component.netns)
    try:
        components.run(component, state)
    except NetlabError as exc:  # a clean line, as knetlab prints the project's errors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the log is the only place anyone will see it
        traceback.print_exc()
        return 1
    return 0


def fork_component(component: components.Component, state: StateDir,
                   log_path: str) -> ForkedProcess:
    """Run the component in a fork of this process; its output goes to `log_path`."""
    if threading.active_count() != 1:
        raise RuntimeError("fork_component needs a single-threaded parent")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    code = 1
    try:
        code = _child(component, state, log_path)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

