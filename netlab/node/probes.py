"""Readiness probes as kubelet runs them: httpGet, tcpSocket and exec, with thresholds.

Probes run from the node's namespace (kubelet's) to the pod IP, except exec, which
runs the command inside the pod's namespace. A pod without a readiness probe is
ready as soon as its containers run, which the node's runtime reports (runtime.py).
The prober only decides; the agent writes the Ready condition when a decision
changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Until a pod is first ready, and for at most the window, probes retry after
# FAST_RETRY_FIRST, doubling up to FAST_RETRY, instead of every periodSeconds (kubelet
# waits the period), so that bring-up is not held by the period. The first probe
# comes as the sandbox is reported, before the runtime can have seen the pod; its
# server usually listens tens of milliseconds later. A window, not a count of
# failures: a pod whose server comes up late in a large bring-up must not fall back
# to the period.
FAST_RETRY_FIRST = 0.05
FAST_RETRY = 0.2
FAST_RETRY_WINDOW = 30.0


def resolve_port(port: Any, containers: list[dict[str, Any]]) -> int | None:
    """A probe port: a number, or the name of a containerPort."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for container in containers:
        for p in container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    return None


async def _connected(ip: str, port: int) -> socket.socket:
    """A TCP socket connected to ip:port, on the running loop's own socket calls.

    Not asyncio streams: a transport, a protocol and a reader and writer per probe
    were a third of a probe's CPU, and a large bring-up runs a few hundred probes
    a second.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def http_get(ip: str, port: int, path: str, timeout: float,
                   headers: list[dict[str, str]] | None = None) -> bool:
    """Success is a status in 200..399 within the timeout, as kubelet decides."""
    extra = "".join(f"{h['name']}: {h['value']}\r\n" for h in headers or [])
    request = (f"GET {path or '/'} HTTP/1.1\r\nHost: {ip}:{port}\r\n"
               f"User-Agent: kube-probe/1.31\r\nConnection: close\r\n{extra}\r\n").encode()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            sock = await _connected(ip, port)
            try:
                await loop.sock_sendall(sock, request)
                head = b""
                while b"\n" not in head and len(head) < 4096:
                    chunk = await loop.sock_recv(sock, 4096)
                    if not chunk:
                        break
                    head += chunk
            finally:
                sock.close()
    except (TimeoutError, OSError):
        return False
    parts = head.split(b"\n", 1)[0].split()
    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400


async def tcp_socket(ip: str, port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            sock = await _connected(ip, port)
    except (TimeoutError, OSError):
        return False
    sock.close()
    return True


async def exec_in_pod(netns_name: str, command: list[str], timeout: float) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netns_name, *command,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout) == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


@dataclass
class ProbeTarget:
    key: str  # namespace/name
    ip: str
    netns: str
    probe: dict[str, Any]
    containers: list[dict[str, Any]]
    ready: bool = False
    successes: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


async def run_probe(target: ProbeTarget) -> bool:
    probe = target.probe
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        spec = probe["httpGet"]
        port = resolve_port(spec.get("port"), target.containers)
        host = spec.get("host") or target.ip
        return port is not None and await http_get(host, port, spec.get("path", "/"), timeout,
                                                   spec.get("httpHeaders"))
    if "tcpSocket" in probe:
        spec = probe["tcpSocket"]
        port = resolve_port(spec.get("port"), target.containers)
        return port is not None and await tcp_socket(spec.get("host") or target.ip, port,
                                                     timeout)
    if "exec" in probe:
        return await exec_in_pod(target.netns, list(probe["exec"].get("command") or []),
                                 timeout)
    return True


class Prober:
    """Runs one probe loop per pod and reports readiness changes."""

    def __init__(self, on_change: Callable[[str, bool], None]) -> None:
        self.on_change = on_change
        self.targets: dict[str, ProbeTarget] = {}
        # Targets not ready (yet): changed on the loop's thread only, before the
        # on_change that a change causes, so that a reader elsewhere sees it current.
        self.unready = 0

    def add(self, target: ProbeTarget) -> None:
        if target.key in self.targets:
            return
        self.targets[target.key] = target
        self.unready += not target.ready
        target.task = asyncio.get_running_loop().create_task(self._loop(target))

    def remove(self, key: str) -> None:
        target = self.targets.pop(key, None)
        if target:
            self.unready -= not target.ready
        if target and target.task:
            target.task.cancel()

    async def _loop(self, target: ProbeTarget) -> None:
        probe = target.probe
        period = float(probe.get("periodSeconds", 10))
        success_threshold = int(probe.get("successThreshold", 1))
        failure_threshold = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        fast_until = asyncio.get_running_loop().time() + FAST_RETRY_WINDOW
        retry = FAST_RETRY_FIRST
        while True:
            ok = await run_probe(target)
            if ok:
                target.successes, target.failures = target.successes + 1, 0
                if not target.ready and target.successes >= success_threshold:
                    target.ready = True
                    self.unready -= 1
                    self.on_change(target.key, True)
            else:
                target.failures, target.successes = target.failures + 1, 0
                # Until the first success a pod is not ready; afterwards it takes
                # failureThreshold consecutive failures to turn it unready.
                if target.ready and target.failures >= failure_threshold:
                    target.ready = False
                    self.unready += 1
                    self.on_change(target.key, False)
            fast = not target.ready and asyncio.get_running_loop().time() < fast_until
            await asyncio.sleep(min(period, retry) if fast else period)
            retry = min(retry * 2, FAST_RETRY)
