"""One guest: boot it, run commands in it, shut it down, clean up after it by recorded pid.

Everything a guest has on the host lives in its run dir: the initramfs, the console
log, QEMU's own log, the command sockets and `vm.json` (QEMU's pid and start time,
written before anything waits on the guest). `cleanup(run_dir)` works from that
record alone, so a test session killed mid-way leaves nothing another cannot remove.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from netlab.kernel import netns
from netlab.lab.state import ProcessRecord, process_start_time
from netlab.lab.vm import initramfs
from netlab.lab.vm.channel import Channel, Result
from netlab.lab.vm.kernel import GuestKernel, VmError, boot_image, boot_modules, find_kernel
from netlab.lab.vm.qemu import AGENT_PORTS, Nic, QemuSpec, accel_from_env, find_qemu, qemu_argv

# The folder holding the netlab package: the checkout (or site-packages) the guest imports.
PYTHON_PATH = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
# Writable in the guest, changes kept in guest memory: config (/etc/netns, resolv.conf),
# state (/var/lib/etcd), home caches, what scripts/provision installs (/opt/knetlab,
# /usr/local/bin), and the checkout (pytest's cache, test artefacts).
DEFAULT_OVERLAYS = ("/etc", "/var", "/root", "/opt", "/usr/local", PYTHON_PATH)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class VmConfig:
    name: str  # guest hostname, QEMU -name
    run_dir: str
    memory_mb: int = 768
    cpus: int = 1
    nic: Nic | None = None
    netns: str | None = None  # the L2 namespace QEMU runs in (where nic.tap is)
    overlays: tuple[str, ...] = DEFAULT_OVERLAYS
    accel: str | None = None  # None: KNETLAB_VM_ACCEL, default tcg
    die_with_parent: bool = False  # for test fixtures: QEMU ends with the process


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class VirtualMachine:
    """A booted guest with its own kernel; `run` executes argv in it as root."""

    def __init__(self, config: VmConfig, kernel: GuestKernel | None = None) -> None:
        self.config = config
        self.name = config.name
        self._kernel = kernel
        self.process: subprocess.Popen[bytes] | None = None
        self.record: ProcessRecord | None = None
        self._channel: Channel | None = None
        self.boot_seconds = 0.0

    @property
    def kernel(self) -> GuestKernel:
        """The guest kernel, found when first needed (a handle alone needs none)."""
        if self._kernel is None:
            self._kernel = find_kernel()
        return self._kernel

    @classmethod
    def attach(cls, run_dir: str) -> VirtualMachine:
        """A handle on a guest another process booted (a lab's), from its run dir."""
        try:
            with open(os.path.join(run_dir, "vm.json")) as f:
                rec = json.load(f)
        except (OSError, ValueError) as exc:
            raise VmError(f"no guest recorded in {run_dir}: {exc}") from None
        guest = cls(VmConfig(rec["name"], run_dir), GuestKernel(rec["kernel"], "", ""))
        guest.record = ProcessRecord("vm-" + rec["name"], rec["pid"], rec["start_time"])
        if not guest.record.alive():
            raise VmError(f"guest {rec['name']} (QEMU pid {rec['pid']}) is not running")
        return guest

    # -- paths ------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.config.run_dir, name)

    @property
    def console_log(self) -> str:
        return self.path("console.log")

    @property
    def sockets(self) -> tuple[str, ...]:
        return tuple(self.path(f"agent{i}.sock") for i in range(AGENT_PORTS))

    # -- lifecycle --------------------------------------------------------------------
    def spec(self) -> QemuSpec:
        config = self.config
        return QemuSpec(
            name=config.name, kernel_image=boot_image(self.kernel),
            initramfs=self.path("initramfs.cpio"), console_log=self.console_log,
            agent_sockets=self.sockets, python=sys.executable, python_path=PYTHON_PATH,
            overlays=config.overlays, memory_mb=config.memory_mb, cpus=config.cpus,
            accel=config.accel or accel_from_env(), nic=config.nic)

    def start(self) -> ProcessRecord:
        """Start QEMU (not waiting for the guest) and record its pid in vm.json."""
        if self.config.nic is not None and self.config.netns is None:
            raise VmError(f"guest {self.name}: a nic needs the namespace its tap is in")
        os.makedirs(self.config.run_dir, exist_ok=True)
        spec = self.spec()
        initramfs.build(self.kernel, spec.initramfs)
        argv = qemu_argv(spec, find_qemu())
        if self.config.netns:
            argv = ["nsenter", f"--net={netns.path_of(self.config.netns)}", *argv]
        with open(self.path("qemu.log"), "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.config.die_with_parent else None)
        self.record = ProcessRecord("vm-" + self.name, self.process.pid,
                                    process_start_time(self.process.pid) or 0)
        with open(self.path("vm.json"), "w") as f:
            json.dump({"name": self.name, "pid": self.record.pid,
                       "start_time": self.record.start_time, "kernel": self.kernel.version,
                       "argv": argv}, f)
        return self.record

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until the guest agent answers; a QEMU that exits fails at once with its logs.

        One connection, hellos repeated on it: QEMU reads a port's socket only while the
        guest has the port open, so a closed connection would go unnoticed and a new one
        would wait in the listen backlog until the agent starts.
        """
        started = time.monotonic()
        deadline = started + timeout
        hello: dict[str, object] | None = None
        while hello is None:
            self._check_running()
            if time.monotonic() > deadline:
                raise VmError(f"guest {self.name} not ready after {timeout:.0f}s\n"
                              f"{self.logs_tail()}")
            try:
                hello = self.channel(connect_timeout=1.0).hello(timeout=1.0)
            except VmError:
                continue
        if hello.get("kernel") != self.kernel.version:
            raise VmError(f"guest {self.name} runs kernel {hello.get('kernel')}, "
                          f"expected {self.kernel.version}")
        self.boot_seconds = time.monotonic() - started

    def boot(self, timeout: float = 300.0) -> VirtualMachine:
        """start() and wait_ready(); on failure nothing is left running."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise VmError(f"QEMU of guest {self.name} exited with {self.process.returncode}\n"
                          f"{self.logs_tail()}")

    def logs_tail(self, lines: int = 25) -> str:
        parts = []
        for name in ("qemu.log", "console.log"):
            with contextlib.suppress(OSError), open(self.path(name), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
                if tail:
                    parts.append(f"--- {self.path(name)}:\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- commands ---------------------------------------------------------------------
    def channel(self, connect_timeout: float = 10.0) -> Channel:
        if self._channel is None or self._channel._closed:
            self.detach()
            self._channel = Channel(self.name, self.sockets, connect_timeout)
        return self._channel

    def detach(self) -> None:
        """Give the command port back: a guest has 4, each held by one host process."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def ip(self) -> str | None:
        """eth0's address (no prefix length), None for a guest without a nic."""
        return self.config.nic.address.split("/")[0] if self.config.nic else None

    def run(self, argv: Sequence[str], timeout: float = 60.0, *, check: bool = False,
            env: dict[str, str] | None = None, cwd: str | None = None,
            input: bytes | None = None, log: IO[bytes] | str | None = None) -> Result:
        """Run argv as root in the guest; `check` raises VmCommandError when it fails.

        `log` (a binary file, or a host path appended to) receives the output as it
        arrives, for long runs such as pytest inside the guest.
        """
        if isinstance(log, str):
            with open(log, "ab") as f:
                return self.run(argv, timeout, check=check, env=env, cwd=cwd, input=input,
                                log=f)
        result = self.channel().run(argv, timeout, env=env, cwd=cwd, input=input, log=log)
        return result.check() if check else result

    def sh(self, script: str, timeout: float = 60.0, *, check: bool = True) -> Result:
        """A shell script in the guest (`set -e`); checked by default."""
        return self.run(["sh", "-ec", script], timeout, check=check)

    def spawn(self, argv: Sequence[str], log: str, *, env: dict[str, str] | None = None,
              cwd: str | None = None) -> int:
        """Start a long-running process in the guest, detached; returns its guest pid."""
        return self.channel().spawn(argv, log, env=env, cwd=cwd)

    # -- shutdown ---------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Power the guest off; QEMU is killed if it has not exited after `timeout`."""
        if self._channel is not None and self.alive():
            self._channel.poweroff()
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.kill()

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.record is not None and self.record.alive()

    def kill(self) -> None:
        self.detach()
        if self.record is not None:
            stop_recorded(self.record)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)


def preflight() -> str | None:
    """Why guests cannot boot on this host (a missing package, named), or None."""
    try:
        find_qemu()
        boot_modules(find_kernel())
        initramfs.find_busybox()
    except (VmError, OSError) as exc:
        return str(exc)
    return None


def boot_all(machines: Sequence[VirtualMachine], timeout: float = 300.0) -> None:
    """Start every guest, then wait for each: they boot side by side.

    On failure every guest is stopped again, so a caller never inherits half a cluster.
    """
    try:
        for machine in machines:
            machine.start()
        for machine in machines:
            machine.wait_ready(timeout)
    except BaseException:
        for machine in machines:
            machine.kill()
        raise


def stop_recorded(record: ProcessRecord, grace: float = 3.0) -> None:
    """SIGTERM (QEMU exits at once), then SIGKILL; only if the pid is still that QEMU."""
    if not record.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while record.alive() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)
        time.sleep(0.05)
    if record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)


def cleanup(run_dir: str) -> bool:
    """Stop the QEMU recorded in run_dir (if still that process) and remove the dir.

    Returns whether a live guest was stopped.
    """
    stopped = False
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(os.path.join(run_dir, "vm.json")) as f:
            rec = json.load(f)
        record = ProcessRecord("vm-" + rec["name"], rec["pid"], rec["start_time"])
        stopped = record.alive()
        stop_recorded(record)
    shutil.rmtree(run_dir, ignore_errors=True)
    return stopped
