"""Packet capture on every interface of a network namespace, or on one, without tcpdump.

One AF_PACKET socket per namespace sees each frame on each device, with the
device's name and whether it was received or sent, so a trace learns where a
packet crossed a veth, the bridge, flannel.1 and eth0 from a single socket. The
socket is created inside the namespace (netns.entered) and read on a thread;
an optional BPF filter (tcpdump syntax, compiled by libpcap through scapy) keeps
unrelated traffic out of the kernel-to-user copy. Timestamps are the kernel's.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from netlab.errors import KernelError
from netlab.kernel import netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
SNAPLEN = 65535
RCVBUF = 4 << 20


@dataclass(frozen=True)
class Frame:
    time: float  # seconds since the epoch, from the kernel
    netns: str
    ifname: str
    direction: str  # ingress | egress
    data: bytes  # the Ethernet frame


def _bpf(expression: str) -> tuple[bytes, object]:
    """A classic BPF program for Ethernet frames, as SO_ATTACH_FILTER wants it.

    Returns the `sock_fprog` and the buffer it points into, which must stay alive
    until setsockopt has copied it.
    """
    import ctypes

    from scapy.arch.common import compile_filter
    from scapy.data import DLT_EN10MB

    program = compile_filter(expression, linktype=DLT_EN10MB)
    size = program.bf_len * 8
    code = ctypes.string_at(ctypes.addressof(program.bf_insns.contents), size)
    buf = ctypes.create_string_buffer(code)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    return struct.pack("HL", program.bf_len, ctypes.addressof(buf)), buf


class NamespaceCapture:
    """Captures in one namespace (all interfaces, or `iface`) until stopped.

    Frames go to `on_frame` if given (streaming), else are kept for `stop()`.
    """

    def __init__(self, netns_name: str, bpf: str | None = None, iface: str | None = None,
                 on_frame: Callable[[Frame], None] | None = None) -> None:
        self.netns = netns_name
        self.bpf = bpf
        self.iface = iface
        self.on_frame = on_frame
        self.frames: list[Frame] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> NamespaceCapture:
        """Open the socket (from here on every frame is kept) and start reading."""
        try:
            with netns.entered(self.netns):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise KernelError(f"capture in {self.netns}: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.bpf:
                program, keep = _bpf(self.bpf)
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
                del keep  # the kernel copied the program
                self._drain(sock)  # frames that arrived before the filter
            if self.iface:
                sock.bind((self.iface, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            raise KernelError(f"capture in {self.netns} on {self.iface or 'all'}: {exc}") \
                from exc
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name=f"capture-{self.netns}",
                                        daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(SNAPLEN)
        sock.setblocking(True)

    def _read(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                continue
            self._receive(sock)
        sock.setblocking(False)  # what is queued when stop() is called still counts
        with contextlib.suppress(BlockingIOError):
            while True:
                self._receive(sock)

    def _receive(self, sock: socket.socket) -> None:
        data, ancillary, _flags, address = sock.recvmsg(SNAPLEN, 64)
        stamp = 0.0
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec / 1e9
        ifname, _proto, pkttype = address[0], address[1], address[2]
        frame = Frame(stamp, self.netns, ifname,
                      "egress" if pkttype == PACKET_OUTGOING else "ingress", data)
        if self.on_frame is not None:
            self.on_frame(frame)
        else:
            self.frames.append(frame)

    def request_stop(self) -> None:
        """Ask the reader to finish (stop() then returns at once): stop many in parallel."""
        self._stop.set()

    def stop(self) -> list[Frame]:
        """Stop reading, close the socket and return what was kept."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.frames

    def wait(self) -> None:
        """Block until the reader ends (for a capture stopped from another thread)."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.2)

    def __enter__(self) -> NamespaceCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
