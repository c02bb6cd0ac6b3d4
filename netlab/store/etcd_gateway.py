"""etcd's v3 JSON gateway over plain sockets: unary calls and watch streams.

etcd serves its gRPC API as JSON over HTTP/1.1 on the client port (`/v3/kv/range`,
`/v3/kv/txn`, `/v3/watch`). Speaking it with h11 over sockets we open ourselves gives
what the gRPC and requests-based clients did not (docs/benchmarks.md, "etcd client
choice"): every socket is made in a network namespace we choose (a lab's etcd
listens on its control-plane node's underlay address, which the host side reaches
from inside that node); a watch stream is read with a socket timeout, so an idle
watch hands back control every poll interval without a reader thread; and every
failure is a StoreError raised at once, never a silent hang or a banned endpoint.

Every int64 in the gateway's JSON is a string and zero values are left out, as
protobuf's JSON mapping says; keys and values are base64.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import h11

from netlab.errors import KernelError, StoreError

CONNECT_TIMEOUT = 2.0
RECV_SIZE = 65536
API = "/v3/"

Message = dict[str, Any]


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


class GatewayError(StoreError):
    """etcd answered with an error (its gRPC code and message), not a transport failure."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"etcd: {message} (code {code})")


def _raise_for(endpoint: str, status: int, body: bytes) -> None:
    try:
        doc = json.loads(body)
    except ValueError:
        raise StoreError(f"etcd at {endpoint}: HTTP {status}: {body[:200]!r}") from None
    err = doc.get("error", doc)
    if isinstance(err, dict):
        raise GatewayError(int(err.get("code", err.get("grpc_code", 0)) or 0),
                           str(err.get("message") or err.get("error") or err))
    raise GatewayError(int(doc.get("code", 0) or 0), str(doc.get("message") or err))


def _thread_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class Home:
    """The network namespace a client's sockets are made in, whichever thread dials.

    Either a named one (`netns=`, for a caller outside the members' network), or the
    one the client was opened in: a thread that later dials from inside a pod's
    namespace (`netns.entered`) must not take the store connection in there with it.
    """

    def __init__(self, netns: str | None) -> None:
        self.name = netns
        self._fd = None if netns else os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._inode = None if self._fd is None else os.fstat(self._fd).st_ino

    def socket(self) -> socket.socket:
        if self._fd is not None and _thread_netns() == self._inode:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Imported here: only a caller outside its home namespace needs to enter it.
        from netlab.kernel import netns as netns_mod

        where = self.name or f"/proc/self/fd/{self._fd}"
        try:
            return netns_mod.socket_in(where, socket.AF_INET, socket.SOCK_STREAM)
        except KernelError as exc:  # the lab's namespace is gone: the store is unreachable
            raise StoreError(f"cannot reach etcd from netns {where}: {exc}") from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _dial(host: str, port: int, home: Home, timeout: float) -> socket.socket:
    sock = home.socket()
    try:
        sock.settimeout(min(CONNECT_TIMEOUT, timeout))
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A member that vanishes without a FIN (partition, frozen VM) is noticed in ~10s
    # even by an idle watch, which otherwise would wait for the next event forever.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 4)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.settimeout(timeout)
    return sock


class _Connection:
    """One HTTP/1.1 connection to one endpoint (h11 state machine + socket)."""

    def __init__(self, endpoint: str, home: Home, timeout: float) -> None:
        self.endpoint = endpoint
        host, _, port = endpoint.rpartition(":")
        self.sock = _dial(host, int(port), home, timeout)
        self.h11 = h11.Connection(h11.CLIENT)
        self.sent = 0  # requests sent on this connection
        self.answered = False  # whether any byte of the current answer arrived

    def send(self, target: str, body: bytes) -> None:
        headers = [("Host", self.endpoint), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body)))]
        data = self.h11.send(h11.Request(method="POST", target=target, headers=headers))
        data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        self.sent += 1
        self.answered = False
        self.sock.sendall(data)

    def next_event(self) -> Any:
        """The next h11 event, reading as needed; socket.timeout passes through."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = self.sock.recv(RECV_SIZE)
            self.answered = self.answered or bool(data)
            self.h11.receive_data(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class WatchStream:
    """A `/v3/watch` response: one JSON message per line, read with a timeout."""

    def __init__(self, conn: _Connection, on_close: Callable[[WatchStream], None]) -> None:
        self.conn = conn
        self._on_close = on_close
        self._buf = b""

    def next_message(self, timeout: float) -> Message | None:
        """The next message, or None if none came within timeout; StoreError if the
        stream broke (etcd stopped, connection lost)."""
        self.conn.sock.settimeout(timeout)
        try:
            while b"\n" not in self._buf:
                event = self.conn.next_event()
                if isinstance(event, h11.Response):
                    if event.status_code != 200:
                        self._buf += self._rest()
                        _raise_for(self.conn.endpoint, event.status_code, self._buf)
                elif isinstance(event, h11.Data):
                    self._buf += event.data
                else:  # EndOfMessage or ConnectionClosed: etcd ended the stream
                    raise StoreError(f"etcd at {self.conn.endpoint} closed the watch stream")
        except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0, nothing there
            return None
        except (OSError, h11.ProtocolError) as exc:
            raise StoreError(f"watch stream from etcd at {self.conn.endpoint} broke: "
                             f"{exc or type(exc).__name__}") from exc
        line, _, self._buf = self._buf.partition(b"\n")
        doc = json.loads(line)
        if "error" in doc:
            err = doc["error"]
            raise GatewayError(int(err.get("grpc_code", 0) or 0), str(err.get("message")))
        return doc.get("result", {})

    def _rest(self) -> bytes:
        body = b""
        with contextlib.suppress(OSError, h11.ProtocolError):
            while isinstance(event := self.conn.next_event(), h11.Data):
                body += event.data
        return body

    def close(self) -> None:
        self.conn.close()
        self._on_close(self)


class Gateway:
    """Calls to one etcd cluster through any of its client endpoints ("host:port").

    Each thread keeps one kept-alive connection for unary calls; each watch has its
    own. A failed dial moves on to the next endpoint, so a cluster of three survives
    a member's loss; an answered request is never sent twice.
    """

    def __init__(self, endpoints: Sequence[str], *, netns: str | None = None,
                 timeout: float = 5.0) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self.endpoints = list(endpoints)
        self.netns = netns
        self.home = Home(netns)
        self.timeout = timeout
        self._preferred = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection | WatchStream] = set()

    def _connect(self, timeout: float) -> _Connection:
        errors = []
        for i in range(len(self.endpoints)):
            index = (self._preferred + i) % len(self.endpoints)
            try:
                conn = _Connection(self.endpoints[index], self.home, timeout)
            except OSError as exc:
                errors.append(f"{self.endpoints[index]}: {exc.strerror or exc}")
                continue
            self._preferred = index
            return conn
        raise StoreError(f"etcd unreachable ({'; '.join(errors)})")

    def call(self, method: str, request: Message) -> Message:
        """POST /v3/<method> and return the decoded answer."""
        body = json.dumps(request, separators=(",", ":")).encode()
        while True:
            conn = self._thread_conn()
            reused = conn.sent > 0
            try:
                conn.send(API + method, body)
                return self._response(conn)
            except (OSError, h11.ProtocolError) as exc:
                self._drop_thread_conn()
                # A kept-alive connection the server closed while it idled fails before
                # any answer: the request never reached etcd, so sending it again is safe.
                # Not after a timeout: etcd may be applying it.
                if reused and not conn.answered and not isinstance(exc, TimeoutError):
                    continue
                raise StoreError(f"etcd at {conn.endpoint}: {exc or type(exc).__name__}") \
                    from exc

    def _response(self, conn: _Connection) -> Message:
        status, body = 0, b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ConnectionResetError("connection closed before the answer ended")
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
        else:
            self._drop_thread_conn()
        if status != 200:
            _raise_for(conn.endpoint, status, body)
        return json.loads(body)

    def _thread_conn(self) -> _Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self.timeout)
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        return conn

    def _drop_thread_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()
            with self._lock:
                self._open.discard(conn)

    def watch(self, request: Message) -> WatchStream:
        """Open a `/v3/watch` stream with one create_request."""
        conn = self._connect(self.timeout)
        try:
            conn.send(API + "watch", json.dumps(request).encode())
        except OSError as exc:
            conn.close()
            raise StoreError(f"etcd at {conn.endpoint}: {exc}") from exc
        stream = WatchStream(conn, self._forget)
        with self._lock:
            self._open.add(stream)
        return stream

    def _forget(self, stream: WatchStream) -> None:
        with self._lock:
            self._open.discard(stream)

    def close(self) -> None:
        with self._lock:
            items, self._open = list(self._open), set()
        for item in items:
            (item.conn if isinstance(item, WatchStream) else item).close()
        self._local = threading.local()
        self.home.close()
