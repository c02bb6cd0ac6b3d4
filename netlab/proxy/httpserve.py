"""A small threaded HTTP server for the proxy's :10249 and :10256 endpoints.

The listening socket may be handed in already bound, because it has to be
made inside the node's network namespace (`listen_in`) while the server
thread runs wherever the agent runs: a socket keeps the namespace it was
created in for life.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from netlab.kernel import netns

# A route answers (status, content type, body, extra headers).
Response = tuple[int, str, bytes, dict[str, str]]
Route = Callable[[], Response]


def listen_in(namespace: str | None, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside a namespace (None: this process's)."""
    sock = netns.socket_in(namespace) if namespace else socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serves a fixed set of GET routes on one socket, in a daemon thread."""

    def __init__(self, routes: dict[str, Route], sock: socket.socket) -> None:
        self.routes = routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body, headers = 404, "text/plain", b"404 page not found\n", {}
                else:
                    status, ctype, body, headers = route()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # scrapes every few seconds would flood the agent's log

        self._server = ThreadingHTTPServer(sock.getsockname(), Handler,
                                           bind_and_activate=False)
        self._server.socket.close()
        self._server.socket = sock
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"http-{self.address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
