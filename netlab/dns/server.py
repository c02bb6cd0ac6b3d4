"""The cluster DNS server: UDP and TCP on port 53, plus metrics, health and ready endpoints.

It serves pre-made sockets, so a node agent can open them inside a pod's network
namespace (netlab.kernel.netns.socket_in) and hand them over; `open_listeners`
makes them, taking a socket factory for exactly that.

UDP is served in batches from the loop's reader callback (netlab.dns.udp: recvmmsg
and sendmmsg, replies cached as wire bytes): under load one epoll wakeup serves
hundreds of queries. Everything runs on one asyncio loop, so the index, the answer
caches and the counters need no locks. TCP follows RFC 7766:
2-byte length framing, pipelined queries answered as they complete, idle
connections closed after a timeout, and reading paused while the client is not
reading its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netlab.dns.forward import Forwarder
from netlab.dns.metrics import DnsMetrics
from netlab.dns.probes import health_routes, metrics_routes, ready_routes, serve_http
from netlab.dns.records import RecordIndex
from netlab.dns.resolver import Resolver, ResolverConfig
from netlab.dns.udp import UdpEndpoint
from netlab.dns.wire import Pending, Responder

log = logging.getLogger(__name__)

DNS_PORT = 53
METRICS_PORT = 9153
HEALTH_PORT = 8080
READY_PORT = 8181
TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP connection may sit without a query
TCP_BACKLOG = 1024

SocketFactory = Callable[[int, int], socket.socket]  # (family, type) -> socket


@dataclass
class Listeners:
    """Bound sockets for one server; empty lists leave that endpoint off."""

    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    metrics: list[socket.socket] = field(default_factory=list)
    health: list[socket.socket] = field(default_factory=list)
    ready: list[socket.socket] = field(default_factory=list)

    def all(self) -> list[socket.socket]:
        return [*self.udp, *self.tcp, *self.metrics, *self.health, *self.ready]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def _bound(factory: SocketFactory, family: int, kind: int, host: str, port: int,
           reuse_port: bool = False) -> socket.socket:
    sock = factory(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(TCP_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def open_listeners(host: str = "0.0.0.0", dns_port: int = DNS_PORT, *,
                   metrics_port: int | None = METRICS_PORT,
                   health_port: int | None = HEALTH_PORT,
                   ready_port: int | None = READY_PORT,
                   socket_factory: SocketFactory = socket.socket,
                   reuse_port: bool = False) -> Listeners:
    """Bind UDP+TCP DNS on one port and the HTTP ports (None: leave that one off).

    dns_port 0 picks a free port for UDP and binds TCP to the same number, so
    clients can retry truncated answers over TCP as they would on port 53. For a
    pod: `socket_factory=functools.partial(netns.socket_in, "<netns>")`.
    reuse_port: SO_REUSEPORT on the DNS sockets, so several server processes (each
    with its own store watch) can share port 53 and the kernel spreads clients
    over them; give the HTTP ports to one of them only.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listeners = Listeners()
    try:
        for _ in range(20):
            udp = _bound(socket_factory, family, socket.SOCK_DGRAM, host, dns_port, reuse_port)
            port = udp.getsockname()[1]
            try:
                tcp = _bound(socket_factory, family, socket.SOCK_STREAM, host, port, reuse_port)
            except OSError as exc:
                udp.close()
                if dns_port == 0 and exc.errno == errno.EADDRINUSE:
                    continue
                raise
            listeners.udp.append(udp)
            listeners.tcp.append(tcp)
            break
        else:
            raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")
        for port, slot in ((metrics_port, listeners.metrics), (health_port, listeners.health),
                           (ready_port, listeners.ready)):
            if port is not None:
                slot.append(_bound(socket_factory, family, socket.SOCK_STREAM, host, port))
    except OSError:
        listeners.close()
        raise
    return listeners


class DnsServer:
    """A cluster DNS server fed from a RecordIndex.

    Feed objects with `apply` on the server's event loop (or `apply_threadsafe`
    from a watch thread), call `mark_synced()` after the initial list, and /ready
    turns OK. Answers come from the index as it is at that moment.
    """

    def __init__(self, index: RecordIndex, config: ResolverConfig | None = None, *,
                 upstreams: Sequence[str] = (), metrics: DnsMetrics | None = None,
                 tcp_idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self.index = index
        self.resolver = Resolver(index, config)
        self._label_metrics = metrics is None  # name the `server` label after our port
        self.metrics = metrics or DnsMetrics()
        self.forwarder = Forwarder(upstreams) if upstreams else None
        self.responder = Responder(self.resolver, self.metrics,
                                   can_forward=self.forwarder is not None)
        self.tcp_idle_timeout = tcp_idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[_TcpConnection] = set()
        self._serving = False

    # -- feeding ----------------------------------------------------------------

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> bool:
        """Apply a watch event to the index (call on the server's loop thread)."""
        return self.index.apply(kind, event_type, obj)

    def mark_synced(self) -> None:
        """The initial list is in: /ready turns OK and missing names become NXDOMAIN."""
        self.index.mark_synced()

    def apply_threadsafe(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        """Apply a watch event from another thread; it lands between two queries."""
        if self._loop is None:
            raise RuntimeError("server not started")
        self._loop.call_soon_threadsafe(self.index.apply, kind, event_type, obj)

    def ready(self) -> bool:
        """What /ready says: serving, and the index has seen its initial list."""
        return self._serving and self.index.synced

    # -- lifecycle --------------------------------------------------------------

    async def start(self, listeners: Listeners) -> None:
        """Serve every socket in `listeners` (the server takes ownership of them)."""
        self._loop = asyncio.get_running_loop()
        if self._label_metrics and (listeners.udp or listeners.tcp):
            port = (listeners.udp or listeners.tcp)[0].getsockname()[1]
            self.metrics.server = f"dns://:{port}"
        for sock in listeners.udp:
            endpoint = UdpEndpoint(sock, self.responder, self.index, self.metrics, self.complete)
            self._loop.add_reader(sock.fileno(), endpoint.on_readable)
            self._udp.append(endpoint)
        for sock in listeners.tcp:
            self._servers.append(await self._loop.create_server(
                lambda: _TcpConnection(self), sock=sock, backlog=TCP_BACKLOG))
        for socks, routes in ((listeners.metrics, metrics_routes(self.metrics)),
                              (listeners.health, health_routes()),
                              (listeners.ready, ready_routes(self.ready))):
            for sock in socks:
                self._servers.append(await serve_http(sock, routes))
        self._serving = True

    async def stop(self, lameduck: float = 0.0) -> None:
        """Stop serving; with `lameduck` seconds, /ready fails first while DNS still answers."""
        self._serving = False
        if lameduck > 0:
            await asyncio.sleep(lameduck)
        for endpoint in self._udp:
            if self._loop is not None:
                self._loop.remove_reader(endpoint.sock.fileno())
            endpoint.sock.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()

    # -- shared by the transports ------------------------------------------------

    def complete(self, pending: Pending, deliver: Callable[[bytes], None]) -> None:
        """Finish a query that needs an upstream in the background, then deliver the reply."""
        assert self.forwarder is not None and self._loop is not None
        forwarder = self.forwarder

        async def run() -> None:
            try:
                reply = await forwarder.complete(self.responder.finish, pending)
            except Exception:
                log.exception("upstream completion failed")
                self.metrics.panic()
                return
            deliver(reply)

        task = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _TcpConnection(asyncio.Protocol):
    """One DNS-over-TCP client: length-framed queries, pipelined, answered as they complete."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.family = "1"
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_INET6:
            self.family = "2"
        self.server._connections.add(self)
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.server.tcp_idle_timeout, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arm_idle()
        buffer, handle = self._buffer, self.server.responder.handle
        while len(buffer) >= 2:
            size = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2:2 + size])
            del buffer[:2 + size]
            reply = handle(message, "tcp", self.family)
            if reply is None:
                continue
            if isinstance(reply, Pending):
                self.server.complete(reply, self._write)
                continue
            self._write(reply)

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.server._connections.discard(self)
        self.transport = None
