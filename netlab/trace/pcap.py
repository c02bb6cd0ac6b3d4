"""Frames to pcapng, written as they come: one interface block per namespace/device.

pcapng rather than classic pcap because a trace crosses many devices in many
namespaces: each gets its own interface description ("worker-1/flannel.1"),
and each packet carries its direction (in/out) in the packet block's flags.
Wireshark, tshark and tcpdump (libpcap >= 1.1) read it, also from a pipe
(`knetlab capture worker-1 -w - | wireshark -k -i -`).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from netlab.trace.capture import Frame

LINKTYPE_ETHERNET = 1
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _IF_NAME, _IF_TSRESOL, _EPB_FLAGS = 0, 2, 9, 2
_INBOUND, _OUTBOUND = 1, 2


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapngWriter:
    """Appends frames to a binary stream; flushes after each so pipes see them at once."""

    def __init__(self, out: BinaryIO, label: dict[str, str] | None = None) -> None:
        self.out = out
        self.label = label or {}  # netns -> how to name it in interface names
        self.interfaces: dict[tuple[str, str], int] = {}
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _option(_OPT_END, b"")
        self.out.write(_block(_SHB, body))

    def _interface(self, frame: Frame) -> int:
        key = (frame.netns, frame.ifname)
        if key not in self.interfaces:
            name = f"{self.label.get(frame.netns, frame.netns)}/{frame.ifname}"
            body = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0)
            body += _option(_IF_NAME, name.encode())
            body += _option(_IF_TSRESOL, bytes([9]))  # nanoseconds
            body += _option(_OPT_END, b"")
            self.out.write(_block(_IDB, body))
            self.interfaces[key] = len(self.interfaces)
        return self.interfaces[key]

    def write(self, frame: Frame) -> None:
        index = self._interface(frame)
        stamp = int(frame.time * 1e9)
        flags = _OUTBOUND if frame.direction == "egress" else _INBOUND
        body = struct.pack("<IIIII", index, stamp >> 32, stamp & 0xFFFFFFFF, len(frame.data),
                           len(frame.data)) + _pad(frame.data)
        body += _option(_EPB_FLAGS, struct.pack("<I", flags)) + _option(_OPT_END, b"")
        self.out.write(_block(_EPB, body))
        self.out.flush()


def write_pcapng(path: str, frames: list[Frame], label: dict[str, str] | None = None) -> None:
    with open(path, "wb") as f:
        writer = PcapngWriter(f, label)
        for frame in sorted(frames, key=lambda fr: fr.time):
            writer.write(frame)
