"""One /dial try, made from inside the pod's network namespace.

The client socket is created in the pod's namespace (netns.socket_in) and then
driven by the shared event loop, so the packet leaves through the pod's veth with
the pod's IP as source and meets the same routes and NAT rules a real pod's
request would. Each try uses a fresh connection, like netexec's client.
Error texts imitate Go's, since tests and learners read them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from urllib.parse import quote

import h11

from netlab.apps.routes import DialFailed
from netlab.kernel import netns

# Characters Go leaves unescaped when it sends "http://host:port/<request>".
_URL_SAFE = "/?&=:@!$'()*+,;~-._%"
_MAX_BODY = 1 << 20


def client_socket(netns_name: str | None, family: int, kind: int) -> socket.socket:
    """A non-blocking socket in the pod's namespace (None: the current one)."""
    sock = netns.socket_in(netns_name, family, kind) if netns_name else socket.socket(family, kind)
    sock.setblocking(False)
    return sock


async def dial(netns_name: str | None, protocol: str, host: str, port: int, request: str,
               *, timeout: float = 5.0) -> str:
    """The peer's answer to `request` over `protocol` ("http" or "udp"); raises DialFailed."""
    family = _family(host, protocol, port)
    if protocol == "http":
        return await _dial_http(netns_name, family, host, port, request, timeout)
    return await _dial_udp(netns_name, family, host, port, request, timeout)


def _family(host: str, protocol: str, port: int) -> int:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        verb = "dial tcp" if protocol == "http" else "dial udp"
        raise DialFailed(f"{verb} {host}:{port}: lookup {host}: kube-netlab's netexec "
                         "dials IP addresses only") from None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _dial_http(netns_name: str | None, family: int, host: str, port: int, request: str,
                     timeout: float) -> str:
    loop = asyncio.get_running_loop()
    target = "/" + quote(request.lstrip("/"), safe=_URL_SAFE)
    url = f"http://{_host_port(host, port)}{target}"
    sock = client_socket(netns_name, family, socket.SOCK_STREAM)
    try:
        async with asyncio.timeout(timeout):
            try:
                await loop.sock_connect(sock, (host, port))
            except OSError as exc:
                raise DialFailed(f'Get "{url}": dial tcp {_host_port(host, port)}: connect: '
                                 f"{_reason(exc)}") from None
            conn = h11.Connection(h11.CLIENT)
            await loop.sock_sendall(sock, conn.send(h11.Request(
                method="GET", target=target,
                headers=[("Host", _host_port(host, port)),
                         ("User-Agent", "Go-http-client/1.1")])) + conn.send(h11.EndOfMessage()))
            return await _read_body(loop, sock, conn, url)
    except TimeoutError:
        raise DialFailed(f'Get "{url}": context deadline exceeded '
                         "(Client.Timeout exceeded while awaiting headers)") from None
    except OSError as exc:
        raise DialFailed(f'Get "{url}": read tcp: {_reason(exc)}') from None
    except h11.ProtocolError as exc:
        raise DialFailed(f'Get "{url}": malformed HTTP response: {exc}') from None
    finally:
        sock.close()


async def _read_body(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                     conn: h11.Connection, url: str) -> str:
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await loop.sock_recv(sock, 65536))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise DialFailed(f'Get "{url}": response body larger than {_MAX_BODY} bytes')
        elif isinstance(event, h11.EndOfMessage):
            return body.decode("utf-8", "replace")
        elif isinstance(event, h11.ConnectionClosed):
            raise DialFailed(f'Get "{url}": EOF')


async def _dial_udp(netns_name: str | None, family: int, host: str, port: int, request: str,
                    timeout: float) -> str:
    loop = asyncio.get_running_loop()
    sock = client_socket(netns_name, family, socket.SOCK_DGRAM)
    peer = _host_port(host, port)
    try:
        try:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, request.encode())
        except OSError as exc:
            raise DialFailed(f"udp dial failed. err:dial udp {peer}: {_reason(exc)}") from None
        local = _host_port(*sock.getsockname()[:2])
        try:
            async with asyncio.timeout(timeout):
                answer = await loop.sock_recv(sock, 2048)
        except TimeoutError:
            reason = "i/o timeout"
        except OSError as exc:
            reason = f"recvfrom: {_reason(exc)}"
        else:
            if answer:
                return answer.decode("utf-8", "replace")
            reason = "EOF"
        raise DialFailed(f"reading from udp connection failed. "
                         f"err:'read udp {local}->{peer}: {reason}'")
    finally:
        sock.close()


def _reason(exc: OSError) -> str:
    """Go's wording of an errno ("connection refused"); asyncio rewords connect errors."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)
