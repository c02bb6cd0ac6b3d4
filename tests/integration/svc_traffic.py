"""Helpers for the Service tests: clients inside lab namespaces, waiting, host footprint.

Clients speak HTTP and UDP from inside a lab namespace without forking.

Each request opens a socket made inside the source namespace (pod, node or `ext`)
and speaks to netexec: HTTP/1.0 `GET /<path>` (the server closes after the
answer) or a UDP datagram. A fresh socket per request means a fresh source port,
so every request is a new connection the proxy's rules decide on, as each
`wget` of the e2e tests is. Errors are raised, not hidden: a test can tell a
refusal (ConnectionRefusedError, the proxy's REJECT) from silence (TimeoutError,
a DROP or no rule at all).
"""

from __future__ import annotations

import collections
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from netlab.kernel import netns
from netlab.lab.session import RunningLab
from tests.hoststate import HostState


class Client:
    """Requests from one place in the lab: a pod name, a node name or `ext`."""

    def __init__(self, lab: RunningLab, source: str) -> None:
        self.source = source
        self.netns = lab.netns(source)

    def http(self, ip: str, port: int = 80, path: str = "hostname",
             timeout: float = 2.0) -> str:
        """The body of `GET /path`; raises OSError (refused, timeout) on failure."""
        with netns.socket_in(self.netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            sock.sendall(f"GET /{path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            raise OSError(f"bad answer from {ip}:{port}: {head[:60]!r}")
        return body.decode()

    def udp(self, ip: str, port: int, message: str = "hostname", timeout: float = 2.0) -> str:
        """netexec's answer to one datagram; TimeoutError if none comes."""
        with netns.socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            sock.send(message.encode())
            return sock.recv(2048).decode().strip()

    def hostnames(self, ip: str, port: int = 80, count: int = 30,
                  protocol: str = "TCP") -> collections.Counter[str]:
        """Which backend answered each of `count` new connections (failures raise)."""
        ask = self.http if protocol == "TCP" else self.udp
        return collections.Counter(ask(ip, port) for _ in range(count))

    def error(self, ip: str, port: int = 80, timeout: float = 1.0) -> type[OSError] | None:
        """The kind of failure of one TCP request (None if it was answered)."""
        try:
            self.http(ip, port, timeout=timeout)
        except OSError as exc:
            return type(exc)
        return None


def eventually(check: Callable[[], object], timeout: float = 15.0, what: str = "it") -> object:
    """Retry `check` until it returns something truthy without raising; return that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, AssertionError) as exc:
            value, last = None, exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(0.2)


def own_footprint(state: HostState) -> HostState:
    """The host state without test namespaces other helpers make meanwhile (`nlt-*`).

    Other labs are already left out by `HostState.capture(lab)`; namespaces of
    other people's tests come and go while a module runs on a shared machine.
    Ours would be `nlt-svc-*`, and those stay in the comparison.
    """
    def keep(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if not n.startswith("nlt-") or n.startswith("nlt-svc-"))

    return replace(state, netns=keep(state.netns), etc_netns=keep(state.etc_netns),
                   run_netns=keep(state.run_netns),
                   mounts=tuple(m for m in state.mounts
                                if "/nlt-" not in m or "/nlt-svc-" in m))
