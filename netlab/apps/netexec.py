"""Every pod of a node served by one asyncio loop (the netexec-compatible server).

A pod here is a network namespace without a process. Each listening socket is
created inside the pod's namespace and then served by the one loop of the node's
agent, so a pod costs a few kilobytes (its sockets and their loop registrations)
instead of a process. Traffic still enters through the pod's veth: the kernel
decides which namespace a socket lives in when it is created, not where the
process that reads it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import h11

from netlab.apps import dial, routes
from netlab.apps.container import NETEXEC
from netlab.errors import KernelError
from netlab.kernel import netns

BACKLOG = 128
_MAX_REQUEST_BODY = 1 << 20
_MAX_HEADERS = 64 * 1024


@dataclass(frozen=True)
class PodInfo:
    """One served pod; ports are the bound ones (port 0 asks the kernel for one)."""

    key: str
    netns_name: str | None
    hostname: str
    http_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]
    mode: str


@dataclass(eq=False)
class _Pod:
    info: PodInfo
    servers: list[asyncio.Server] = field(default_factory=list)
    udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)
    closed: bool = False


class PodServer:
    """The netexec-compatible server for all pods of one node, on the running loop.

    Call its coroutines from one event loop; `PodServerThread` wraps it for
    synchronous callers.
    """

    def __init__(self, *, bind_address: str = "0.0.0.0", dial_timeout: float = 5.0) -> None:
        self._bind_address = bind_address
        self._dial_timeout = dial_timeout
        self._pods: dict[str, _Pod] = {}
        self._changing = asyncio.Lock()  # add/remove of one key must not interleave

    def pods(self) -> dict[str, PodInfo]:
        return {key: pod.info for key, pod in self._pods.items()}

    async def add_pod(self, key: str, netns_name: str | None, hostname: str,
                      http_ports: Iterable[int], udp_ports: Iterable[int],
                      *, mode: str = NETEXEC) -> PodInfo:
        """Listen for the pod `key`; netns_name None means the current namespace.

        Idempotent for an identical request; a changed one replaces the pod's
        sockets. Raises KernelError (with nothing left open) if a port cannot be bound.
        """
        async with self._changing:
            return await self._add_pod(key, netns_name, hostname, tuple(sorted(set(http_ports))),
                                       tuple(sorted(set(udp_ports))), mode)

    async def remove_pod(self, key: str) -> bool:
        """Close the pod's listeners and connections now; False if it was not served."""
        async with self._changing:
            return await self._remove_pod(key)

    async def close(self) -> None:
        async with self._changing:
            for key in list(self._pods):
                await self._remove_pod(key)

    async def _add_pod(self, key: str, netns_name: str | None, hostname: str,
                       http: tuple[int, ...], udp: tuple[int, ...], mode: str) -> PodInfo:
        old = self._pods.get(key)
        if old is not None:
            wanted = (netns_name, hostname, http, udp, mode)
            have = (old.info.netns_name, old.info.hostname, old.info.http_ports,
                    old.info.udp_ports, old.info.mode)
            if wanted == have:
                return old.info
            await self._remove_pod(key)
        pod = _Pod(PodInfo(key, netns_name, hostname, (), (), mode))
        try:
            bound_http = [await self._serve_http(pod, port) for port in http]
            bound_udp = [await self._serve_udp(pod, port) for port in udp]
        except BaseException:
            await self._close(pod)
            raise
        pod.info = PodInfo(key, netns_name, hostname, tuple(bound_http), tuple(bound_udp), mode)
        self._pods[key] = pod
        return pod.info

    async def _remove_pod(self, key: str) -> bool:
        pod = self._pods.pop(key, None)
        if pod is None:
            return False
        await self._close(pod)
        return True

    def _listener(self, pod: _Pod, kind: int, port: int) -> socket.socket:
        name = pod.info.netns_name
        what = f"pod {pod.info.key}: {'tcp' if kind == socket.SOCK_STREAM else 'udp'} port {port}"
        try:
            sock = netns.socket_in(name, socket.AF_INET, kind) if name else \
                socket.socket(socket.AF_INET, kind)
        except OSError as exc:
            raise KernelError(f"{what}: socket: {exc.strerror}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self._bind_address, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise KernelError(f"{what}: {exc.strerror}") from exc
        return sock

    async def _serve_http(self, pod: _Pod, port: int) -> int:
        sock = self._listener(pod, socket.SOCK_STREAM, port)
        try:
            server = await asyncio.start_server(functools.partial(self._connection, pod),
                                                sock=sock, backlog=BACKLOG)
        except BaseException:
            sock.close()
            raise
        pod.servers.append(server)
        return sock.getsockname()[1]

    async def _serve_udp(self, pod: _Pod, port: int) -> int:
        sock = self._listener(pod, socket.SOCK_DGRAM, port)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(pod),
                                                               sock=sock)
        except BaseException:
            sock.close()
            raise
        pod.udp.append(transport)
        return sock.getsockname()[1]

    async def _close(self, pod: _Pod) -> None:
        pod.closed = True
        for server in pod.servers:
            server.close()
        for transport in pod.udp:
            transport.abort()
        tasks = list(pod.connections)
        for task, writer in list(pod.connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let aborted transports close their sockets

    async def _connection(self, pod: _Pod, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if pod.closed or task is None:
            writer.transport.abort()
            return
        pod.connections[task] = writer
        try:
            await self._exchange(pod, reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the pod went away, or the client did
        finally:
            pod.connections.pop(task, None)
            if pod.closed:
                writer.transport.abort()
            else:
                writer.close()

    async def _exchange(self, pod: _Pod, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """Request after request on one connection, keep-alive as the client asks."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADERS)
        peer = writer.get_extra_info("peername")
        if peer is None:
            return  # reset before we looked
        info = pod.info

        async def dialer(protocol: str, host: str, port: int, request: str) -> str:
            return await dial.dial(info.netns_name, protocol, host, port, request,
                                   timeout=self._dial_timeout)

        while True:
            try:
                event = await _next_event(conn, reader)
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                body = await _read_request_body(conn, reader, writer)
            except h11.RemoteProtocolError as exc:
                await _send_error(conn, writer, exc.error_status_hint, str(exc))
                return
            request = routes.Request(
                method=event.method.decode("ascii", "replace"),
                target=event.target.decode("utf-8", "replace"),
                headers=tuple((k.decode("latin-1"), v.decode("latin-1"))
                              for k, v in event.headers),
                body=body, peer=(peer[0], peer[1]))
            reply = await routes.respond(request, hostname=info.hostname, mode=info.mode,
                                         dialer=dialer)
            await _send_reply(conn, writer, reply, head=request.method == "HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        else:
            return event


async def _read_request_body(conn: h11.Connection, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> bytes:
    if conn.client_is_waiting_for_100_continue:
        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    body = bytearray()
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.EndOfMessage):
            return bytes(body)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_REQUEST_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("client closed mid-request")


async def _send_reply(conn: h11.Connection, writer: asyncio.StreamWriter,
                      reply: routes.Reply, *, head: bool = False) -> None:
    no_body = head or reply.status in (204, 304)
    headers = [("Content-Type", reply.content_type), ("Date", formatdate(usegmt=True))]
    if reply.status != 204:
        headers.append(("Content-Length", str(len(reply.body))))
    data = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                  reason=_reason_phrase(reply.status)))
    if not no_body and reply.body:
        data += conn.send(h11.Data(data=reply.body))
    data += conn.send(h11.EndOfMessage())
    writer.write(data)
    await writer.drain()


def _reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _send_error(conn: h11.Connection, writer: asyncio.StreamWriter, status: int,
                      message: str) -> None:
    """Answer a malformed request with its status, if a response can still be sent."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
        await _send_reply(conn, writer, routes.Reply(status, f"{message}\n".encode()))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, pod: _Pod) -> None:
        self._pod = pod
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        info = self._pod.info
        answer = routes.udp_reply(data, addr, hostname=info.hostname, mode=info.mode)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for replies to vanished clients: nothing to do, as netexec."""
