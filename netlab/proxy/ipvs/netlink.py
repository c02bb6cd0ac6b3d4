"""IPVS, ipset and address requests over netlink, many per round trip.

The IPVS mode's kernel work is many small requests: the first sync of 10,000
services x 10 endpoints adds 10,000 virtual servers, 100,000 real servers,
10,000 addresses and as many ipset members. pyroute2 0.9.7's IPVS and IPSet
classes, measured on this project's machine, take 1.5 ms to encode one IPVS
request (its request processors) and 1.6 ms per ipset add round trip: over
three minutes for that sync. So, as netlab/kernel/rtnl.py does for pod
set-up, the fixed messages are packed with `struct`, and requests go out in
windows of up to WINDOW messages per send(); errors come back by sequence
number, so one failure is reported with what it was and does not stop the
others (the kernel processes every message of a send), and only the last
request of a window is acknowledged (see `Socket.apply`).
pyroute2 creates the dummy device (one request) and, in the tests, reads the
kernel state back as an independent decoder.

Constants are the kernel's uapi (linux/netlink.h, linux/genetlink.h,
linux/ip_vs.h, linux/netfilter/ipset/ip_set.h, linux/if_addr.h). A socket
belongs to the network namespace it was opened in.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from netlab.errors import KernelError
from netlab.proxy.ipvs.names import FLAG_HASHED, FORWARD_MASQ
from netlab.proxy.ipvs.render import Real, VirtualServer

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
NETLINK_GENERIC, NETLINK_NETFILTER = 16, 12  # not in Python's socket module
WINDOW = 512  # requests per send()
RCVBUF = 4 << 20
RECV_SIZE = 65536  # a dump's datagrams are at most 32 KiB; errors and acks, 36 bytes each

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (0)
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_ATTR = struct.Struct("=HH")

PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


class NetlinkError(KernelError):
    """The kernel refused a request; `code` is the errno (or an ipset error number)."""

    def __init__(self, what: str, code: int) -> None:
        reason = os.strerror(code) if code < 4096 else IPSET_ERRORS.get(code, f"error {code}")
        super().__init__(f"{what}: {reason}")
        self.code = code


# -- attributes ---------------------------------------------------------------------------

def attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=B", value))


def u16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=H", value))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">H", value))


def be32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value))


def string(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attrs_of(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute, flags masked off, in order."""
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3


def attr_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    return dict(attrs_of(data, offset))


# -- the socket -----------------------------------------------------------------------------

class Request(NamedTuple):
    kind: int  # nlmsg_type
    flags: int  # beyond NLM_F_REQUEST | NLM_F_ACK
    body: bytes
    what: str  # for error messages: what was asked, a format string for `about`
    ignore: tuple[int, ...] = ()  # errnos that mean "already so"
    about: tuple[object, ...] = ()  # formatted into `what` only if the request fails

    def describe(self) -> str:
        return self.what.format(*self.about) if self.about else self.what


class Socket:
    """A netlink socket in the namespace it was opened in; requests in windows, dumps."""

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  protocol)
        self.sock.bind((0, 0))
        try:
            # Acks carry the request's header only, not its whole body.
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as exc:
            raise KernelError(f"netlink send: {exc.strerror}") from exc

    def _messages(self) -> Iterator[tuple[int, int, bytes]]:
        """(type, seq, payload) of each message of one recv()."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError as exc:  # ENOBUFS: the kernel dropped answers; the state is unknown
            raise KernelError(f"netlink receive: {exc.strerror}") from exc
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
            yield kind, seq, data[offset + _HEADER.size:offset + length]
            offset += (length + 3) & ~3

    def apply(self, requests: Sequence[Request]) -> list[NetlinkError]:
        """Send every request, WINDOW per send(); the failures, in order.

        Only the last request of a window asks for an ack: the kernel answers
        a failed request whether asked or not, and handles a send's messages
        in order, so once the last one's ack is in, every error before it is
        too. One ack per request would cost a recv() each (one message per
        datagram), most of a batch's time.
        """
        failures: list[NetlinkError] = []
        for start in range(0, len(requests), WINDOW):
            window = requests[start:start + WINDOW]
            first = self.seq + 1
            last = first + len(window) - 1
            parts = []
            for req in window:
                self.seq += 1
                flags = req.flags | NLM_F_REQUEST | (NLM_F_ACK if self.seq == last else 0)
                parts.append(_HEADER.pack(_HEADER.size + len(req.body), req.kind, flags,
                                          self.seq, 0))
                parts.append(req.body)
            self._send(b"".join(parts))
            done = False
            while not done:
                for kind, seq, payload in self._messages():
                    if kind != NLMSG_ERROR or not first <= seq <= last:
                        continue
                    done = done or seq == last
                    code = -struct.unpack_from("=i", payload)[0]
                    req = window[seq - first]
                    if code and code not in req.ignore:
                        failures.append(NetlinkError(req.describe(), code))
        return failures

    def request(self, kind: int, body: bytes, what: str) -> bytes:
        """One request whose answer is a message (not just an ack); its payload."""
        self.seq += 1
        self._send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK,
                                self.seq, 0) + body)
        reply = b""
        while True:
            for msg_kind, seq, payload in self._messages():
                if seq != self.seq:
                    continue
                if msg_kind != NLMSG_ERROR:
                    reply = payload
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise NetlinkError(what, code)
                return reply

    def dump(self, kind: int, body: bytes, what: str) -> list[bytes]:
        """The payloads of every message a dump request answers with."""
        self.seq += 1
        self._send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP,
                                self.seq, 0) + body)
        out = []
        while True:
            for msg_kind, seq, payload in self._messages():
                if seq != self.seq:
                    continue
                if msg_kind == NLMSG_DONE:
                    return out
                if msg_kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(what, code)
                    return out
                out.append(payload)


def _ip(address: str) -> bytes:
    return socket.inet_aton(address)


def _ip_text(data: bytes) -> str:
    return socket.inet_ntoa(data[:4])


# -- IPVS (generic netlink family "IPVS") ---------------------------------------------------

GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
IPVS_GENL_NAME, IPVS_GENL_VERSION = "IPVS", 1
IPVS_CMD_NEW_SERVICE, IPVS_CMD_SET_SERVICE, IPVS_CMD_DEL_SERVICE, IPVS_CMD_GET_SERVICE = 1, 2, 3, 4
IPVS_CMD_NEW_DEST, IPVS_CMD_SET_DEST, IPVS_CMD_DEL_DEST, IPVS_CMD_GET_DEST = 5, 6, 7, 8
IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_SCHED_NAME, SVC_FLAGS = 1, 2, 3, 4, 6, 7
SVC_TIMEOUT, SVC_NETMASK, SVC_STATS, SVC_STATS64 = 8, 9, 10, 12
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_STATS, DEST_ADDR_FAMILY, DEST_STATS64 = 7, 8, 10, 11, 12
STATS_CONNS, STATS_INPKTS, STATS_OUTPKTS, STATS_INBYTES, STATS_OUTBYTES = 1, 2, 3, 4, 5
ALL_FLAGS = 0xFFFFFFFF  # flags mask: ours replace the service's (moby/ipvs does the same)
_GENL_HEADERS = {cmd: _GENL.pack(cmd, IPVS_GENL_VERSION, 0) for cmd in range(1, 9)}

# Fixed layouts, packed in one call: a first sync of 10,000 services packs 100,000
# real servers, and attribute by attribute that was most of its time. A port is a
# be16 in a native-order struct, hence htons.
_SERVICE_KEY = struct.Struct("=HH" "HHH2x" "HHH2x" "HH4s" "HHH2x")
_DEST = struct.Struct("=HH" "HH4s" "HHH2x" "HHI" "HHI" "HHI" "HHI" "HHH2x")
_DEST_KEY = struct.Struct("=HH" "HH4s" "HHH2x" "HHH2x")


def _service_key_attrs(vs: VirtualServer) -> bytes:
    return (u16(SVC_AF, socket.AF_INET) + u16(SVC_PROTOCOL, PROTOCOLS[vs.protocol])
            + attr(SVC_ADDR, _ip(vs.address)) + be16(SVC_PORT, vs.port))


@lru_cache(maxsize=65536)
def _service_key(vs: VirtualServer) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with the key only (what the DEST commands and DEL_SERVICE take)."""
    return _SERVICE_KEY.pack(_SERVICE_KEY.size, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
                             6, SVC_AF, socket.AF_INET, 6, SVC_PROTOCOL, PROTOCOLS[vs.protocol],
                             8, SVC_ADDR, _ip(vs.address), 6, SVC_PORT, socket.htons(vs.port))


def _dest(real: Real, weight: int) -> bytes:
    """IPVS_CMD_ATTR_DEST as NEW_DEST and SET_DEST need it: Masq, no thresholds."""
    return _DEST.pack(_DEST.size, IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
                      8, DEST_ADDR, _ip(real[0]), 6, DEST_PORT, socket.htons(real[1]),
                      8, DEST_FWD_METHOD, FORWARD_MASQ, 8, DEST_WEIGHT, weight,
                      8, DEST_U_THRESH, 0, 8, DEST_L_THRESH, 0,
                      6, DEST_ADDR_FAMILY, socket.AF_INET)


def _dest_key(real: Real) -> bytes:
    return _DEST_KEY.pack(_DEST_KEY.size, IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
                          8, DEST_ADDR, _ip(real[0]), 6, DEST_PORT, socket.htons(real[1]),
                          6, DEST_ADDR_FAMILY, socket.AF_INET)


@dataclass(frozen=True)
class Stats:
    """A virtual or real server's counters (IPVS counts every packet, both ways)."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class Dest:
    """A real server as the kernel reports it."""

    address: str
    port: int
    weight: int
    forward: int  # 0 Masq, 1 Local, 2 Tunnel, 3 Route
    active: int
    inactive: int
    stats: Stats

    @property
    def real(self) -> Real:
        return (self.address, self.port)


NO_STATS = Stats()


def _u32(attrs: dict[int, bytes], kind: int) -> int:
    value = attrs.get(kind)
    return struct.unpack("=I", value)[0] if value is not None else 0


def _stats(data: bytes) -> Stats:
    """IPVS_*_ATTR_STATS or STATS64: counters are u32 or u64, told apart by their size."""
    values = {k: struct.unpack("=Q" if len(v) == 8 else "=I", v)[0] for k, v in attrs_of(data)
              if len(v) in (4, 8)}
    return Stats(values.get(STATS_CONNS, 0), values.get(STATS_INPKTS, 0),
                 values.get(STATS_OUTPKTS, 0), values.get(STATS_INBYTES, 0),
                 values.get(STATS_OUTBYTES, 0))


class Ipvs:
    """IPVS requests: virtual servers and real servers, in batches."""

    def __init__(self, nl: Socket, family: int) -> None:
        self.nl = nl
        self.family = family  # the generic netlink family id the kernel gave "IPVS"

    @classmethod
    def open(cls) -> Ipvs:
        """A socket in the caller's namespace, with the IPVS family looked up."""
        nl = Socket(NETLINK_GENERIC)
        try:
            reply = nl.request(GENL_ID_CTRL, _GENL.pack(CTRL_CMD_GETFAMILY, 1, 0)
                               + string(CTRL_ATTR_FAMILY_NAME, IPVS_GENL_NAME),
                               "find the IPVS netlink family")
        except NetlinkError as exc:
            nl.close()
            if exc.code == errno.ENOENT:
                raise KernelError("the kernel has no IPVS (ip_vs module not loaded)") from None
            raise
        family = attr_map(reply, _GENL.size)[CTRL_ATTR_FAMILY_ID]
        return cls(nl, struct.unpack_from("=H", family)[0])

    def close(self) -> None:
        self.nl.close()

    def _request(self, cmd: int, body: bytes, what: str, about: tuple[object, ...],
                 flags: int = 0, ignore: tuple[int, ...] = ()) -> Request:
        return Request(self.family, flags, _GENL_HEADERS[cmd] + body, what, ignore, about)

    @staticmethod
    def _service(vs: VirtualServer) -> bytes:
        """The service with everything IPVS_CMD_NEW_SERVICE and SET_SERVICE require."""
        full = _service_key_attrs(vs) + string(SVC_SCHED_NAME, vs.scheduler) + \
            attr(SVC_FLAGS, struct.pack("=II", vs.flags, ALL_FLAGS)) + \
            u32(SVC_TIMEOUT, vs.timeout) + be32(SVC_NETMASK, 0xFFFFFFFF)
        return nested(IPVS_CMD_ATTR_SERVICE, full)

    def add_service(self, vs: VirtualServer) -> Request:
        return self._request(IPVS_CMD_NEW_SERVICE, self._service(vs), "add virtual server {}",
                             (vs,), NLM_F_CREATE | NLM_F_EXCL, (errno.EEXIST,))

    def update_service(self, vs: VirtualServer) -> Request:
        return self._request(IPVS_CMD_SET_SERVICE, self._service(vs),
                             "update virtual server {}", (vs,))

    def delete_service(self, vs: VirtualServer) -> Request:
        return self._request(IPVS_CMD_DEL_SERVICE, _service_key(vs),
                             "delete virtual server {}", (vs,), ignore=(errno.ESRCH,))

    def add_real(self, vs: VirtualServer, real: Real, weight: int) -> Request:
        return self._request(IPVS_CMD_NEW_DEST, _service_key(vs) + _dest(real, weight),
                             "add real server {0[0]}:{0[1]} to {1}", (real, vs),
                             NLM_F_CREATE | NLM_F_EXCL, (errno.EEXIST,))

    def set_weight(self, vs: VirtualServer, real: Real, weight: int) -> Request:
        return self._request(IPVS_CMD_SET_DEST, _service_key(vs) + _dest(real, weight),
                             "set weight {2} of {0[0]}:{0[1]} in {1}", (real, vs, weight))

    def delete_real(self, vs: VirtualServer, real: Real) -> Request:
        return self._request(IPVS_CMD_DEL_DEST, _service_key(vs) + _dest_key(real),
                             "delete real server {0[0]}:{0[1]} from {1}", (real, vs),
                             ignore=(errno.ENOENT,))

    def apply(self, requests: Sequence[Request]) -> list[NetlinkError]:
        return self.nl.apply(requests)

    def services(self, stats: bool = False) -> list[tuple[VirtualServer, Stats]]:
        """Every IPv4 virtual server (fwmark ones are not kube-proxy's, and left out).

        Counters are decoded only if asked (`stats`): a sync needs none of them.
        """
        out = []
        for payload in self.nl.dump(self.family, _GENL.pack(IPVS_CMD_GET_SERVICE,
                                                            IPVS_GENL_VERSION, 0),
                                    "list IPVS virtual servers"):
            outer = attr_map(payload, _GENL.size)
            if IPVS_CMD_ATTR_SERVICE not in outer:
                continue
            a = attr_map(outer[IPVS_CMD_ATTR_SERVICE])
            if struct.unpack("=H", a[SVC_AF])[0] != socket.AF_INET or SVC_ADDR not in a:
                continue
            proto = PROTOCOL_NAMES.get(struct.unpack("=H", a[SVC_PROTOCOL])[0])
            if proto is None:
                continue
            flags = struct.unpack_from("=I", a[SVC_FLAGS])[0]
            vs = VirtualServer(proto, _ip_text(a[SVC_ADDR]), struct.unpack(">H", a[SVC_PORT])[0],
                               a[SVC_SCHED_NAME].rstrip(b"\0").decode(), flags & ~FLAG_HASHED,
                               struct.unpack("=I", a[SVC_TIMEOUT])[0])
            out.append((vs, _stats(a.get(SVC_STATS64) or a.get(SVC_STATS, b"")) if stats
                        else NO_STATS))
        return out

    def dests(self, vs: VirtualServer, stats: bool = False) -> list[Dest]:
        """The real servers of one virtual server, with connection counts (and counters)."""
        body = _GENL_HEADERS[IPVS_CMD_GET_DEST] + _service_key(vs)
        out = []
        for payload in self.nl.dump(self.family, body, f"list real servers of {vs}"):
            outer = attr_map(payload, _GENL.size)
            if IPVS_CMD_ATTR_DEST not in outer:
                continue
            a = attr_map(outer[IPVS_CMD_ATTR_DEST])
            counters = _stats(a.get(DEST_STATS64) or a.get(DEST_STATS, b"")) if stats \
                else NO_STATS
            out.append(Dest(_ip_text(a[DEST_ADDR]), struct.unpack(">H", a[DEST_PORT])[0],
                            _u32(a, DEST_WEIGHT), _u32(a, DEST_FWD_METHOD) & 0x7,
                            _u32(a, DEST_ACTIVE_CONNS), _u32(a, DEST_INACT_CONNS), counters))
        return out


# -- ipset (nfnetlink subsystem 6) ----------------------------------------------------------

NFNL_SUBSYS_IPSET = 6
IPSET_PROTOCOL = 6  # the oldest protocol every ipset kernel speaks
IPSET_CMD_CREATE, IPSET_CMD_DESTROY, IPSET_CMD_LIST = 2, 3, 7
IPSET_CMD_ADD, IPSET_CMD_DEL, IPSET_CMD_TYPE = 9, 10, 13
IPSET_ATTR_PROTOCOL, IPSET_ATTR_SETNAME, IPSET_ATTR_TYPENAME, IPSET_ATTR_REVISION = 1, 2, 3, 4
IPSET_ATTR_FAMILY, IPSET_ATTR_DATA, IPSET_ATTR_ADT = 5, 7, 8
# Inside IPSET_ATTR_DATA (create and element attributes share one number space).
IPSET_ATTR_IP, IPSET_ATTR_PORT, IPSET_ATTR_PORT_TO, IPSET_ATTR_PROTO = 1, 4, 5, 7
IPSET_ATTR_HASHSIZE, IPSET_ATTR_MAXELEM, IPSET_ATTR_IP2, IPSET_ATTR_CIDR2 = 18, 19, 20, 21
IPSET_ATTR_IPADDR_IPV4 = 1
NFPROTO_IPV4 = 2
IPSET_ERRORS = {4097: "ipset protocol error", 4098: "no such set type (kernel module?)",
                4099: "too many sets", 4100: "set is busy", 4102: "set exists with another type",
                4103: "element exists", 4108: "set is in use by a rule", 4352: "set type error"}
HASH_SIZE, MAX_ELEM = 1024, 65536  # kube-proxy's ipset defaults
PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
PROTO_TEXT = {v: k for k, v in PROTO_NUMBERS.items()}


def _ipset_kind(cmd: int) -> int:
    return (NFNL_SUBSYS_IPSET << 8) | cmd


def _ipset_body(*attrs: bytes) -> bytes:
    return _NFGEN.pack(socket.AF_INET, 0, 0) + u8(IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL) + \
        b"".join(attrs)


def _ipv4(kind: int, address: str) -> bytes:
    return nested(kind, attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, _ip(address)))


def _port(port: int) -> bytes:
    return attr(IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER, struct.pack(">H", port))


def member_attrs(kind: str, member: str) -> bytes:
    """A member as `ipset list` prints it (`10.96.0.1,tcp:443`, `30080`) to its attributes."""
    parts = member.split(",")
    if kind == "bitmap:port":
        return _port(int(member))
    out = [_ipv4(IPSET_ATTR_IP, parts[0])]
    if kind == "hash:ip":
        return out[0]
    proto, _, port = parts[1].partition(":")
    out += [_port(int(port)), u8(IPSET_ATTR_PROTO, PROTO_NUMBERS[proto])]
    if kind == "hash:ip,port,ip":
        out.append(_ipv4(IPSET_ATTR_IP2, parts[2]))
    elif kind == "hash:ip,port,net":
        net, _, prefix = parts[2].partition("/")
        out += [_ipv4(IPSET_ATTR_IP2, net), u8(IPSET_ATTR_CIDR2, int(prefix or 32))]
    return b"".join(out)


def member_text(data: bytes) -> str:
    """One listed element's attributes back to `ipset list`'s spelling."""
    a = attr_map(data)
    if IPSET_ATTR_IP not in a:
        return str(struct.unpack(">H", a[IPSET_ATTR_PORT])[0])
    text = _ip_text(attr_map(a[IPSET_ATTR_IP])[IPSET_ATTR_IPADDR_IPV4])
    if IPSET_ATTR_PORT in a:
        proto = a[IPSET_ATTR_PROTO][0] if IPSET_ATTR_PROTO in a else 0
        text += f",{PROTO_TEXT.get(proto, str(proto))}:{struct.unpack('>H', a[IPSET_ATTR_PORT])[0]}"
    if IPSET_ATTR_IP2 in a:
        text += "," + _ip_text(attr_map(a[IPSET_ATTR_IP2])[IPSET_ATTR_IPADDR_IPV4])
        if IPSET_ATTR_CIDR2 in a:
            text += f"/{a[IPSET_ATTR_CIDR2][0]}"
    return text


class IPSet:
    """ipset requests: create sets, add and delete members in batches, list them."""

    def __init__(self, nl: Socket) -> None:
        self.nl = nl
        self._revisions: dict[str, int] = {}

    @classmethod
    def open(cls) -> IPSet:
        return cls(Socket(NETLINK_NETFILTER))

    def close(self) -> None:
        self.nl.close()

    def revision(self, kind: str) -> int:
        """The newest revision of a set type this kernel has (`ipset` picks it too)."""
        if kind not in self._revisions:
            reply = self.nl.request(_ipset_kind(IPSET_CMD_TYPE), _ipset_body(
                string(IPSET_ATTR_TYPENAME, kind), u8(IPSET_ATTR_FAMILY, NFPROTO_IPV4)),
                f"ipset type {kind}")
            self._revisions[kind] = attr_map(reply, _NFGEN.size)[IPSET_ATTR_REVISION][0]
        return self._revisions[kind]

    def create(self, name: str, kind: str) -> Request:
        """`ipset create NAME TYPE ... -exist` with kube-proxy's options."""
        if kind == "bitmap:port":
            data = nested(IPSET_ATTR_DATA, _port(0),
                          attr(IPSET_ATTR_PORT_TO | NLA_F_NET_BYTEORDER, struct.pack(">H", 65535)))
        else:
            data = nested(IPSET_ATTR_DATA,
                          attr(IPSET_ATTR_HASHSIZE | NLA_F_NET_BYTEORDER,
                               struct.pack(">I", HASH_SIZE)),
                          attr(IPSET_ATTR_MAXELEM | NLA_F_NET_BYTEORDER,
                               struct.pack(">I", MAX_ELEM)))
        body = _ipset_body(string(IPSET_ATTR_SETNAME, name), string(IPSET_ATTR_TYPENAME, kind),
                           u8(IPSET_ATTR_REVISION, self.revision(kind)),
                           u8(IPSET_ATTR_FAMILY, NFPROTO_IPV4), data)
        return Request(_ipset_kind(IPSET_CMD_CREATE), 0, body, f"create ipset {name} {kind}")

    def destroy(self, name: str) -> Request:
        return Request(_ipset_kind(IPSET_CMD_DESTROY), 0,
                       _ipset_body(string(IPSET_ATTR_SETNAME, name)), f"destroy ipset {name}",
                       (errno.ENOENT,))

    def add(self, name: str, kind: str, member: str) -> Request:
        """Without NLM_F_EXCL: an existing member is no error (`-exist`)."""
        return Request(_ipset_kind(IPSET_CMD_ADD), 0, _ipset_body(
            string(IPSET_ATTR_SETNAME, name), nested(IPSET_ATTR_DATA, member_attrs(kind, member))),
            "add {} to ipset {}", (), (member, name))

    def delete(self, name: str, kind: str, member: str) -> Request:
        return Request(_ipset_kind(IPSET_CMD_DEL), 0, _ipset_body(
            string(IPSET_ATTR_SETNAME, name), nested(IPSET_ATTR_DATA, member_attrs(kind, member))),
            "delete {} from ipset {}", (), (member, name))

    def apply(self, requests: Sequence[Request]) -> list[NetlinkError]:
        return self.nl.apply(requests)

    def list(self) -> dict[str, tuple[str, frozenset[str]]]:
        """Every set of the namespace: name -> (type, members)."""
        types: dict[str, str] = {}
        members: dict[str, set[str]] = {}
        for payload in self.nl.dump(_ipset_kind(IPSET_CMD_LIST), _ipset_body(), "list ipsets"):
            a = dict(attrs_of(payload, _NFGEN.size))
            name = a[IPSET_ATTR_SETNAME].rstrip(b"\0").decode()
            if IPSET_ATTR_TYPENAME in a:
                types[name] = a[IPSET_ATTR_TYPENAME].rstrip(b"\0").decode()
            found = members.setdefault(name, set())
            for kind, data in attrs_of(a.get(IPSET_ATTR_ADT, b"")):
                if kind == IPSET_ATTR_DATA:
                    found.add(member_text(data))
        return {name: (types.get(name, ""), frozenset(found)) for name, found in members.items()}


# -- addresses (rtnetlink) ------------------------------------------------------------------

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_UNIVERSE = 0


class Addresses:
    """IPv4 addresses: bind and unbind /32s on one link, list them all."""

    def __init__(self, nl: Socket) -> None:
        self.nl = nl

    @classmethod
    def open(cls) -> Addresses:
        return cls(Socket(socket.NETLINK_ROUTE))

    def close(self) -> None:
        self.nl.close()

    @staticmethod
    def _body(index: int, address: str) -> bytes:
        ip = _ip(address)
        return _IFADDR.pack(socket.AF_INET, 32, 0, RT_SCOPE_UNIVERSE, index) + \
            attr(IFA_LOCAL, ip) + attr(IFA_ADDRESS, ip)

    def add(self, index: int, address: str) -> Request:
        return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, self._body(index, address),
                       "bind {}", (errno.EEXIST,), (address,))

    def delete(self, index: int, address: str) -> Request:
        return Request(RTM_DELADDR, 0, self._body(index, address), "unbind {}",
                       (errno.EADDRNOTAVAIL, errno.ENOENT), (address,))

    def apply(self, requests: Sequence[Request]) -> list[NetlinkError]:
        return self.nl.apply(requests)

    def list(self) -> list[tuple[int, str]]:
        """(link index, address) of every IPv4 address in the namespace."""
        out = []
        for payload in self.nl.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0),
                                    "list addresses"):
            index = _IFADDR.unpack_from(payload)[4]
            a = attr_map(payload, _IFADDR.size)
            address = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if address is not None:
                out.append((index, _ip_text(address)))
        return out
