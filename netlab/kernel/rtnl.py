"""The few rtnetlink requests pod networking needs, as raw messages on one socket.

pyroute2's synchronous IPRoute runs an asyncio loop and a generic encoder per call:
about 2 ms of CPU each, some 25 ms per pod, which made it the largest cost of
bringing up hundreds of pods. Packing these fixed messages with `struct` costs
microseconds, leaving only the kernel's own work. Everything else (the overlay,
inspection) keeps using pyroute2.

A socket belongs to the network namespace of the thread that opened it, so open
one inside `netns.entered(name)` to configure that namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

from netlab.errors import KernelError

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_FD = 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # the bridge port's hairpin flag
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family .. type, flags
_ATTR = struct.Struct("=HH")  # rtattr: length, type


class RtnlError(KernelError):
    """The kernel refused a request; `code` is the errno."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {os.strerror(code)}")
        self.code = code


@dataclass(frozen=True)
class Link:
    index: int
    mac: str


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _ifname(name: str) -> bytes:
    return _attr(IFLA_IFNAME, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, 0 if up is None else IFF_UP)


def _family(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


class Rtnl:
    """A NETLINK_ROUTE socket in the namespace it was opened in; one request at a time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _request(self, what: str, kind: int, flags: int, body: bytes) -> bytes:
        """Send one request and wait for its acknowledgement; the reply's payload, if any."""
        self.seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind,
                                    flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body)
        reply = b""
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, msg_type, _, seq, _ = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if msg_type != NLMSG_ERROR:
                    reply = payload
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise RtnlError(what, code)
                return reply

    # links ------------------------------------------------------------------------------
    def link(self, name: str) -> Link | None:
        """The link's index and MAC address, or None if there is no such link."""
        try:
            reply = self._request(f"get link {name}", RTM_GETLINK, 0, _ifinfo() + _ifname(name))
        except RtnlError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        index = _IFINFO.unpack_from(reply)[2]
        offset, mac = _IFINFO.size, ""
        while offset + _ATTR.size <= len(reply):
            length, kind = _ATTR.unpack_from(reply, offset)
            if kind == IFLA_ADDRESS:
                mac = reply[offset + _ATTR.size:offset + length].hex(":")
            offset += (length + 3) & ~3
        return Link(index, mac)

    def add_bridge(self, name: str, mtu: int) -> Link:
        info = _attr(IFLA_INFO_KIND, b"bridge")
        self._request(f"add bridge {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      _ifinfo() + _ifname(name) + _u32(IFLA_MTU, mtu)
                      + _attr(IFLA_LINKINFO, info))
        link = self.link(name)
        if link is None:
            raise RtnlError(f"bridge {name} vanished after it was added", errno.ENODEV)
        return link

    def add_veth(self, name: str, mtu: int, peer: str, peer_netns_fd: int, *,
                 master: int = 0, up: bool = False) -> None:
        """A veth pair: `name` here (optionally a bridge port, up), `peer` in the other netns.

        The peer stays down: the kernel cannot open a veth end before its pair exists.
        """
        peer_info = (_ifinfo() + _ifname(peer) + _u32(IFLA_MTU, mtu)
                     + _u32(IFLA_NET_NS_FD, peer_netns_fd))
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = _ifinfo(up=up or None) + _ifname(name) + _u32(IFLA_MTU, mtu)
        if master:
            body += _u32(IFLA_MASTER, master)
        self._request(f"add veth {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      body + _attr(IFLA_LINKINFO, info))

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None,
                 master: int | None = None, mac: str | None = None) -> None:
        body = _ifinfo(index, up)
        if mtu is not None:
            body += _u32(IFLA_MTU, mtu)
        if mac is not None:
            body += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        if master is not None:
            body += _u32(IFLA_MASTER, master)
        self._request(f"set link {index}", RTM_NEWLINK, 0, body)

    def set_hairpin(self, name: str, on: bool = True) -> None:
        """Hairpin mode of a bridge port (`ip link set NAME type bridge_slave hairpin on`)."""
        data = _attr(IFLA_BRPORT_MODE, bytes([on]))
        info = _attr(IFLA_INFO_SLAVE_KIND, b"bridge") + _attr(IFLA_INFO_SLAVE_DATA, data)
        self._request(f"hairpin on {name}", RTM_NEWLINK, 0,
                      _ifinfo() + _ifname(name) + _attr(IFLA_LINKINFO, info))

    # addresses and routes ---------------------------------------------------------------
    def add_address(self, index: int, address: str, prefixlen: int, *,
                    exist_ok: bool = False) -> None:
        ip = ipaddress.ip_address(address)
        body = (_IFADDR.pack(_family(ip), prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                + _attr(IFA_LOCAL, ip.packed) + _attr(IFA_ADDRESS, ip.packed))
        self._ignoring_exists(exist_ok, f"add address {address}", RTM_NEWADDR, body)

    def add_default_route(self, index: int, gateway: str, *, exist_ok: bool = False) -> None:
        ip = ipaddress.ip_address(gateway)
        body = (_RTMSG.pack(_family(ip), 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                            RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                + _attr(RTA_GATEWAY, ip.packed) + _u32(RTA_OIF, index))
        self._ignoring_exists(exist_ok, f"add default route via {gateway}", RTM_NEWROUTE, body)

    def _ignoring_exists(self, exist_ok: bool, what: str, kind: int, body: bytes) -> None:
        try:
            self._request(what, kind, NLM_F_CREATE | NLM_F_EXCL, body)
        except RtnlError as exc:
            if not (exist_ok and exc.code == errno.EEXIST):
                raise
