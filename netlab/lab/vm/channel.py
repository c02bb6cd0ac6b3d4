"""The host side of the command channel: run argv in a guest, get rc, stdout and stderr.

QEMU exposes each of a guest's virtio-serial ports as a unix socket that takes one
client at a time, so a host process claims a free port (an flock on the socket's
lock file) and keeps it while it lives. On a port, messages are JSON lines:

    host -> guest  {"id": N, "op": "run", "argv": [...], "env": {...}, "cwd": ...,
                    "stdin": b64, "timeout": seconds}
                   {"id": N, "op": "spawn", "argv": [...], "log": path, ...}
                   {"id": N, "op": "kill", "target": M}   {"id": N, "op": "hello"}
                   {"id": N, "op": "poweroff"}
    guest -> host  {"id": N, "fd": 1|2, "data": b64}  then  {"id": N, "rc": R, ...}
                   or {"id": N, "pid": P} / {"id": N, "error": "..."}

Requests carry ids, so one port carries many commands at once (threads of a test).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from netlab.lab.vm.kernel import VmError

REPLY_GRACE = 15.0  # beyond the command's own timeout: the guest's kill and reply


class VmCommandError(VmError):
    """A command in a guest exited non-zero (with check=True) or timed out."""

    def __init__(self, result: Result, reason: str) -> None:
        self.result = result
        super().__init__(f"{result.vm}: {' '.join(result.argv)}: {reason}\n"
                         f"{result.stderr[-2000:] or result.stdout[-2000:]}")


@dataclass(frozen=True)
class Result:
    vm: str
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def check(self) -> Result:
        """self, or VmCommandError when the command failed."""
        if self.timed_out:
            raise VmCommandError(self, f"timed out after {self.seconds:.0f}s")
        if self.rc != 0:
            raise VmCommandError(self, f"exit status {self.rc}")
        return self


class Channel:
    """One claimed port of one guest; thread-safe."""

    def __init__(self, vm: str, sockets: Sequence[str], connect_timeout: float = 10.0) -> None:
        self.vm = vm
        self.sock, self._lock_fd = _claim(sockets, connect_timeout)
        self._send_lock = threading.Lock()
        self._pending: dict[int, queue.Queue[dict[str, Any] | None]] = {}
        self._next_id = 1
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"vm-{vm}-reader", daemon=True)
        self._reader.start()

    # -- plumbing ---------------------------------------------------------------------
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                waiting = self._pending.get(message.get("id"))
                if waiting is not None:
                    waiting.put(message)
        self._closed = True
        for waiting in list(self._pending.values()):
            waiting.put(None)  # the guest (or QEMU) went away

    def _request(self, op: str, **fields: Any) -> tuple[int, queue.Queue[dict[str, Any] | None]]:
        with self._send_lock:
            if self._closed:
                raise VmError(f"{self.vm}: the guest's command channel is closed")
            request_id = self._next_id
            self._next_id += 1
            replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
            self._pending[request_id] = replies
            line = json.dumps({"id": request_id, "op": op, **fields}) + "\n"
            self.sock.sendall(line.encode())
        return request_id, replies

    def _reply(self, request_id: int, replies: queue.Queue[dict[str, Any] | None],
               deadline: float) -> dict[str, Any]:
        try:
            message = replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise VmError(f"{self.vm}: no reply from the guest agent") from None
        if message is None:
            raise VmError(f"{self.vm}: the guest went away during the command")
        return message

    def _done(self, request_id: int) -> None:
        self._pending.pop(request_id, None)

    # -- requests ---------------------------------------------------------------------
    def hello(self, timeout: float) -> dict[str, Any]:
        """The agent's pid and kernel release: proves the guest is up and serving."""
        request_id, replies = self._request("hello")
        try:
            return self._reply(request_id, replies, time.monotonic() + timeout)
        finally:
            self._done(request_id)

    def run(self, argv: Sequence[str], timeout: float = 60.0, *, env: dict[str, str] | None
            = None, cwd: str | None = None, input: bytes | None = None,
            log: IO[bytes] | None = None) -> Result:
        """Run argv in the guest to completion (killed after `timeout` seconds).

        `log`, if given, receives stdout and stderr as they arrive (a long pytest run
        inside a guest can be followed with `tail -f`).
        """
        started = time.monotonic()
        fields: dict[str, Any] = {"argv": list(argv), "env": env, "cwd": cwd,
                                  "timeout": timeout}
        if input:
            fields["stdin"] = base64.b64encode(input).decode()
        request_id, replies = self._request("run", **fields)
        out = {1: bytearray(), 2: bytearray()}
        try:
            while True:
                try:
                    message = self._reply(request_id, replies,
                                          started + timeout + REPLY_GRACE)
                except VmError:
                    with contextlib.suppress(VmError, OSError):
                        self._request("kill", target=request_id)
                    raise
                if "data" in message:
                    data = base64.b64decode(message["data"])
                    out[message["fd"]] += data
                    if log is not None:
                        log.write(data)
                        log.flush()
                    continue
                return Result(self.vm, tuple(argv), int(message["rc"]),
                              out[1].decode(errors="replace"), out[2].decode(errors="replace"),
                              time.monotonic() - started, bool(message.get("timed_out")))
        finally:
            self._done(request_id)

    def spawn(self, argv: Sequence[str], log: str, *, env: dict[str, str] | None = None,
              cwd: str | None = None, timeout: float = 30.0) -> int:
        """Start argv detached in the guest (output to `log` there); returns its pid."""
        request_id, replies = self._request("spawn", argv=list(argv), log=log, env=env,
                                            cwd=cwd)
        try:
            message = self._reply(request_id, replies, time.monotonic() + timeout)
        finally:
            self._done(request_id)
        if "error" in message:
            raise VmError(f"{self.vm}: cannot start {argv[0]}: {message['error']}")
        return int(message["pid"])

    def poweroff(self) -> None:
        """Ask the guest to power off; the reply may be lost with the machine."""
        with contextlib.suppress(VmError, OSError):
            self._request("poweroff")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
        with contextlib.suppress(OSError):
            self.sock.close()
        os.close(self._lock_fd)


def _claim(sockets: Sequence[str], timeout: float) -> tuple[socket.socket, int]:
    """Connect to the first port no other host process holds (flock on `<socket>.lock`)."""
    deadline = time.monotonic() + timeout
    while True:
        for path in sockets:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock.connect(path)
                sock.settimeout(None)
            except OSError:
                sock.close()
                os.close(fd)
                continue
            return sock, fd
        if time.monotonic() > deadline:
            raise VmError(f"no free command port of the guest ({sockets[0]} ...): "
                          f"each host process holds one, {len(sockets)} in all")
        time.sleep(0.1)
