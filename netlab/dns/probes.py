"""The HTTP side of a DNS pod: /metrics (:9153), /health (:8080) and /ready (:8181).

Kubelet probes and Prometheus scrape these on the same ports and paths as
CoreDNS's `prometheus`, `health` and `ready` plugins, so manifests written for
CoreDNS work unchanged. A minimal HTTP/1.x responder on asyncio: one request per
connection, GET only, pre-made listening sockets accepted (opened inside a pod's
network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from netlab.dns.metrics import DnsMetrics

log = logging.getLogger(__name__)

Route = Callable[[], tuple[int, str, bytes]]  # -> status, content type, body
TEXT = "text/plain; charset=utf-8"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def metrics_routes(metrics: DnsMetrics) -> dict[str, Route]:
    return {"/metrics": lambda: (200, METRICS_TYPE, metrics.exposition())}


def health_routes() -> dict[str, Route]:
    return {"/health": lambda: (200, TEXT, b"OK")}


def ready_routes(is_ready: Callable[[], bool]) -> dict[str, Route]:
    """CoreDNS's ready plugin: 200 OK once synced, else 503 naming the plugin not ready."""
    def ready() -> tuple[int, str, bytes]:
        return (200, TEXT, b"OK") if is_ready() else (503, TEXT, b"kubernetes")
    return {"/ready": ready}


async def serve_http(sock: socket.socket, routes: dict[str, Route]) -> asyncio.Server:
    """Serve `routes` on a listening (or bound) TCP socket until the returned server closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            route = routes.get(path)
            if route is None:
                status, ctype, body = 404, TEXT, b"404 page not found\n"
            elif method not in ("GET", "HEAD"):
                status, ctype, body = 405, TEXT, b""
            else:
                status, ctype, body = route()
            header = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                      f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode()
            writer.write(header if method == "HEAD" else header + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ValueError):
            pass  # a client that hung up or spoke no HTTP gets nothing
        except Exception:
            log.exception("probe handler failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, sock=sock)
