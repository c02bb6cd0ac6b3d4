"""DNS over UDP in batches: recvmmsg/sendmmsg, and replies cached as wire bytes.

Why: profiling the plain loop (recvfrom_into, answer, sendto per datagram) showed
three quarters of a query's CPU in the two socket calls, not in answering: the
kernel's per-syscall cost, plus an address tuple built by every recvfrom and parsed
again by every sendto. Here one recvmmsg reads up to BATCH datagrams into
preallocated slots and one sendmmsg sends their replies, each addressed with the
client's sockaddr straight from its receive slot and built from two pieces (the
query's ID, still in the slot, and the cached rest of the reply): no copy, no
address conversion, two syscalls per batch.

The cache maps a query's bytes after the ID to the reply's bytes after the ID. The
responder answers a question the same way until the record index changes, and it
echoes the question as sent (letter case, EDNS record), so equal bytes give an equal
reply: keying on raw bytes is safe. Only replies the responder marks reusable are
cached (not forwarded ones, not errors for malformed input); the cache is emptied
when the index's version moves. A hit is counted on its entry and the counts are
merged into the metrics when they are read, with the labels the first answer had.

The calls go through ctypes.PyDLL, which keeps the GIL across them: with
MSG_DONTWAIT they never block, and keeping the GIL spares a thread switch per batch
in a process that runs other threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import socket
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netlab.dns.metrics import TIME_BUCKETS, DnsMetrics
from netlab.dns.wire import Pending, Responder

if TYPE_CHECKING:
    from netlab.dns.records import RecordIndex

log = logging.getLogger(__name__)

BATCH = 64          # datagrams per recvmmsg / sendmmsg
BATCHES = 16        # batches per readiness event before yielding to the event loop
SLOT = 4096         # bytes per receive slot; a longer datagram is dropped
CACHE_MAX = 10_000  # cached replies; beyond that the cache starts over
FIRST_TIME_BUCKET = TIME_BUCKETS[0]
RCVBUF = 4 << 20    # the socket's receive buffer: bursts wait here instead of being lost
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SO_RCVBUFFORCE = 33  # root may exceed net.core.rmem_max

# struct mmsghdr on 64-bit Linux, in 8-byte words: msg_name, msg_namelen, msg_iov,
# msg_iovlen, msg_control, msg_controllen, msg_flags, msg_len (the 32-bit fields padded).
_MSG_WORDS = 8
_MSG_BYTES = 8 * _MSG_WORDS
_NAME_BYTES = 128  # sizeof(struct sockaddr_storage)
_LEN_AT = 14       # msg_len, in 4-byte units from the start of an mmsghdr
_FLAGS_AT = 12     # msg_flags, likewise

if ctypes.sizeof(ctypes.c_void_p) != 8:
    raise ImportError("netlab.dns.udp lays out struct mmsghdr for 64-bit Linux")
_libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                      ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int

# A cached reply: [address of tail, length of tail, hits not yet counted, tail (kept
# alive for its address), metrics key, duration histogram of its query type].
_ADDR, _LEN, _HITS, _TAIL, _KEY, _HIST = range(6)


def _address(data: bytes) -> int:
    """Where a bytes object keeps its data (valid while the object lives)."""
    return ctypes.cast(data, ctypes.c_void_p).value or 0


def _sockaddr(raw: bytes, family: int) -> tuple[Any, ...]:
    """A Python address from a struct sockaddr_in / sockaddr_in6."""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        return socket.inet_ntop(family, raw[8:24]), port, 0, int.from_bytes(raw[24:28], "little")
    return socket.inet_ntop(family, raw[4:8]), port


def enlarge_receive_buffer(sock: socket.socket, size: int = RCVBUF) -> None:
    """Give a UDP socket a receive buffer of `size` bytes (rmem_max applies unless root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class UdpEndpoint:
    """One UDP socket served in batches from the event loop's reader callback.

    complete(pending, deliver): finishes a query that needs an upstream, later.
    """

    def __init__(self, sock: socket.socket, responder: Responder, index: RecordIndex,
                 metrics: DnsMetrics, complete: Callable[[Pending, Callable[[bytes], None]],
                                                         None]) -> None:
        sock.setblocking(False)
        enlarge_receive_buffer(sock)
        self.sock = sock
        self.responder = responder
        self.index = index
        self.metrics = metrics
        self.complete = complete
        self.family = "2" if sock.family == socket.AF_INET6 else "1"
        self.cache: dict[bytes, list[Any]] = {}
        self._version = index.version
        metrics.add_flusher(self.flush)
        namelen = 28 if sock.family == socket.AF_INET6 else 16
        # Receive slots and the clients' addresses; two message arrays over them. Send
        # message j carries two pieces: the ID in receive slot i (i == j unless an earlier
        # datagram got no reply) and a reply tail.
        self._slots = ctypes.create_string_buffer(BATCH * SLOT)
        self._names = ctypes.create_string_buffer(BATCH * _NAME_BYTES)
        self._recv_iov = (ctypes.c_uint64 * (2 * BATCH))()
        self._send_iov = (ctypes.c_uint64 * (4 * BATCH))()
        self._recv_msgs = (ctypes.c_uint64 * (_MSG_WORDS * BATCH))()
        self._send_msgs = (ctypes.c_uint64 * (_MSG_WORDS * BATCH))()
        self._slots_at = ctypes.addressof(self._slots)
        self._names_at = ctypes.addressof(self._names)
        for i in range(BATCH):
            self._recv_iov[2 * i:2 * i + 2] = [self._slots_at + i * SLOT, SLOT]
            self._recv_msgs[_MSG_WORDS * i:_MSG_WORDS * i + 4] = [
                self._names_at + i * _NAME_BYTES, _NAME_BYTES,
                ctypes.addressof(self._recv_iov) + 16 * i, 1]
            self._send_msgs[_MSG_WORDS * i:_MSG_WORDS * i + 4] = [
                self._names_at + i * _NAME_BYTES, namelen,
                ctypes.addressof(self._send_iov) + 32 * i, 2]
            self._send_iov[4 * i:4 * i + 2] = [self._slots_at + i * SLOT, 2]
        self._slot_view = memoryview(self._slots).cast("B")
        self._recv_u32 = memoryview(self._recv_msgs).cast("B").cast("I")
        self._send_u64 = memoryview(self._send_msgs).cast("B").cast("Q")
        self._iov_u64 = memoryview(self._send_iov).cast("B").cast("Q")

    def flush(self) -> None:
        """Move the cache's hit counts into the metrics (called before they are read)."""
        raw = self.metrics.raw
        for entry in self.cache.values():
            hits = entry[_HITS]
            if hits:
                key = entry[_KEY]
                raw[key] = raw.get(key, 0) + hits
                entry[_HITS] = 0

    def on_readable(self) -> None:
        """Serve what the socket holds, up to BATCHES batches."""
        fd = self.sock.fileno()
        recv_at, send_at = ctypes.addressof(self._recv_msgs), ctypes.addressof(self._send_msgs)
        slot_view, lengths = self._slot_view, self._recv_u32
        send_u64, iov_u64 = self._send_u64, self._iov_u64
        slots_at, names_at = self._slots_at, self._names_at
        index, perf_counter = self.index, time.perf_counter
        for _ in range(BATCHES):
            count = _recvmmsg(fd, recv_at, BATCH, MSG_DONTWAIT, None)
            if count <= 0:
                if count < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EINTR):
                    self.metrics.bad_packet("receive_failed")
                return
            started = perf_counter()
            if index.version != self._version:
                self.flush()
                self.cache.clear()
                self._version = index.version
            get = self.cache.get
            # The kernel reads reply tails by address: `hit` and `keep` hold them until
            # sendmmsg has copied them, even if the cache lets go meanwhile.
            hit: list[list[Any]] = []
            keep: list[bytes] = []
            j = 0
            shifted = -1
            for i in range(count):
                offset = i * SLOT
                size = lengths[16 * i + _LEN_AT]
                entry = get(slot_view[offset + 2:offset + size].tobytes())
                if entry is None:
                    tail = self._miss(i, offset, size)
                    if tail is None:
                        continue
                    keep.append(tail)
                    address, length = _address(tail), len(tail)
                else:
                    hit.append(entry)
                    address, length = entry[_ADDR], entry[_LEN]
                if i != j:
                    if shifted < 0:
                        shifted = j
                    send_u64[_MSG_WORDS * j] = names_at + i * _NAME_BYTES
                    iov_u64[4 * j] = slots_at + offset
                iov_u64[4 * j + 2] = address
                iov_u64[4 * j + 3] = length
                j += 1
            self._send(fd, send_at, j)
            if shifted >= 0:
                self._unshift(shifted, j)
            if hit:
                elapsed = perf_counter() - started
                bucket = 0 if elapsed < FIRST_TIME_BUCKET else bisect_left(TIME_BUCKETS, elapsed)
                for entry in hit:
                    entry[_HITS] += 1
                    hist = entry[_HIST]
                    hist[bucket] += 1
                    hist[-1] += elapsed
            if count < BATCH:
                return

    def _miss(self, i: int, offset: int, size: int) -> bytes | None:
        """Answer a datagram the cache lacks; the reply's bytes after the ID, or None."""
        if self._recv_u32[16 * i + _FLAGS_AT] & MSG_TRUNC:
            self.metrics.bad_packet("oversized")
            return None
        data = self._slot_view[offset:offset + size].tobytes()
        reply, reusable = self.responder.resolve(data, "udp", self.family)
        if reply is None:
            return None
        if isinstance(reply, Pending):
            name = self._names[i * _NAME_BYTES:(i + 1) * _NAME_BYTES]
            addr = _sockaddr(name, self.sock.family)
            self.complete(reply, lambda out, addr=addr: self._sendto(out, addr))
            return None
        tail = reply[2:]
        if reusable is not None and size < SLOT:  # a full slot may be a cut datagram
            if len(self.cache) >= CACHE_MAX:
                self.flush()
                self.cache.clear()
            key = ("udp", self.family, reusable.qtype, reusable.rcode, reusable.plugin,
                   size, len(reply))
            self.cache[data[2:]] = [_address(tail), len(tail), 0, tail, key, reusable.durations]
        return tail

    def _unshift(self, start: int, end: int) -> None:
        """Point send messages start..end back at their own receive slots."""
        for j in range(start, end):
            self._send_u64[_MSG_WORDS * j] = self._names_at + j * _NAME_BYTES
            self._iov_u64[4 * j] = self._slots_at + j * SLOT

    def _send(self, fd: int, send_at: int, count: int) -> None:
        sent = 0
        while sent < count:
            done = _sendmmsg(fd, send_at + sent * _MSG_BYTES, count - sent, 0)
            if done < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                # This reply cannot go (full buffer, unreachable client): UDP may drop
                # it, the client retries. The others still go.
                self.metrics.bad_packet("send_failed")
                done = 1
            sent += done

    def _sendto(self, reply: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(reply, addr)
        except OSError:
            self.metrics.bad_packet("send_failed")
