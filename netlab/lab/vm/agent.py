"""The guest side of the command channel: runs what the host asks, streams the output back.

Started by the guest's PID 1 (init.sh) from the host's own interpreter and checkout.
It serves every virtio-serial port named `netlab.agent.N`; each host process holds
one port, so several host processes (a test session, `knetlab exec`) talk to one
guest at once. On a port, messages are JSON lines (protocol in channel.py). Each
request runs in its own thread and its own session, so a timeout or a `kill`
stops the command's whole process group.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import glob
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

PORT_PREFIX = "netlab.agent."
READ_SIZE = 65536
KILL_GRACE = 2.0


def agent_ports() -> list[str]:
    """Device paths of our virtio-serial ports (/dev/vportNpM), from sysfs names."""
    ports = []
    for name_file in sorted(glob.glob("/sys/class/virtio-ports/*/name")):
        with open(name_file) as f:
            if f.read().strip().startswith(PORT_PREFIX):
                ports.append("/dev/" + os.path.basename(os.path.dirname(name_file)))
    return ports


class Port:
    """One virtio-serial port: reads requests, writes replies (one writer at a time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # the port's device (or, in unit tests, one end of a socket)
        self.lock = threading.Lock()
        self.running: dict[int, subprocess.Popen[bytes]] = {}

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                pass  # the host went away; its requests are killed on disconnect

    def lines(self) -> Any:
        """Requests as they arrive; waits (never spins) while no host is connected."""
        buffer = b""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            events = poller.poll(1000)
            if not events:
                continue
            chunk = b""
            if not events[0][1] & select.POLLHUP:
                with contextlib.suppress(OSError):
                    chunk = os.read(self.fd, READ_SIZE)
            if not chunk:  # no host on this port (yet, or any more)
                buffer = b""
                self.kill_all()
                time.sleep(0.2)
                continue
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def kill_all(self) -> None:
        for proc in list(self.running.values()):
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(port: Port, request_id: int, fd: int, stream: Any) -> None:
    while chunk := stream.read1(READ_SIZE):
        port.send({"id": request_id, "fd": fd, "data": base64.b64encode(chunk).decode()})


def _env(request: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, **(request.get("env") or {})}


def run(port: Port, request: dict[str, Any]) -> None:
    """Run argv to completion, streaming stdout (fd 1) and stderr (fd 2), then its rc."""
    request_id = request["id"]
    stdin = base64.b64decode(request["stdin"]) if request.get("stdin") else None
    try:
        proc = subprocess.Popen(request["argv"], cwd=request.get("cwd"), env=_env(request),
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        message = f"{request['argv'][0]}: {exc.strerror}\n".encode()
        port.send({"id": request_id, "fd": 2, "data": base64.b64encode(message).decode()})
        port.send({"id": request_id, "rc": 127})
        return
    port.running[request_id] = proc
    pumps = [threading.Thread(target=_pump, args=(port, request_id, fd, stream), daemon=True)
             for fd, stream in ((1, proc.stdout), (2, proc.stderr))]
    for pump in pumps:
        pump.start()
    if stdin:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    timed_out = False
    try:
        proc.wait(request.get("timeout"))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    for pump in pumps:
        pump.join(KILL_GRACE)
    port.running.pop(request_id, None)
    port.send({"id": request_id, "rc": proc.returncode, "timed_out": timed_out})


def spawn(port: Port, request: dict[str, Any]) -> None:
    """Start argv detached (its own session, output to a log file in the guest)."""
    try:
        with open(request["log"], "ab") as log:
            proc = subprocess.Popen(request["argv"], cwd=request.get("cwd"), env=_env(request),
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        port.send({"id": request["id"], "error": f"{request['argv'][0]}: {exc}"})
        return
    port.send({"id": request["id"], "pid": proc.pid})
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it exits


def power_off() -> None:
    """Power the machine off at once: everything writable in a guest is tmpfs."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def serve(port: Port) -> None:
    for request in port.lines():
        op = request.get("op")
        if op == "run":
            threading.Thread(target=run, args=(port, request), daemon=True).start()
        elif op == "spawn":
            spawn(port, request)
        elif op == "kill":
            proc = port.running.get(request.get("target", -1))
            if proc is not None:
                _kill_group(proc)
        elif op == "hello":
            port.send({"id": request["id"], "pid": os.getpid(), "kernel": os.uname().release})
        elif op == "poweroff":
            port.send({"id": request["id"], "rc": 0})
            power_off()


def main() -> None:
    ports = agent_ports()
    if not ports:
        sys.exit("netlab agent: no virtio-serial port named netlab.agent.*")
    threads = [threading.Thread(target=serve, args=(Port(os.open(p, os.O_RDWR)),), daemon=True)
               for p in ports]
    for thread in threads:
        thread.start()
    print(f"netlab agent: serving {len(ports)} ports", file=sys.stderr, flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
