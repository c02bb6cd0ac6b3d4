"""The marked probe: built with scapy, sent from inside the source namespace, recognised anywhere.

A probe carries four marks no other packet is likely to share: an IP ID, a
source port held by a bound socket for the whole trace (so nothing else in
the namespace can use it), a TCP sequence number (or a UDP payload token, a DNS
query ID, an ICMP echo identifier) and the token in its payload. NAT rewrites
addresses and ports but never the IP ID, the sequence number or the payload,
so `classify` recognises the probe after DNAT, after masquerade and inside
VXLAN, and recognises the answers to it (SYN-ACK and RST acknowledge seq+1,
ICMP errors quote the IP ID). Concurrent traffic is therefore never mistaken
for the probe, whatever it looks like.

The raw socket (IP_HDRINCL) lets the namespace's kernel route the probe and run
it through OUTPUT and POSTROUTING as it would a connect().
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import socket
from dataclasses import dataclass

from netlab.errors import NetlabError
from netlab.kernel import netns
from netlab.trace.model import Encap, FlowTuple

VXLAN_PORT = 8472
TOKEN_PREFIX = b"knetlab-trace-"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 8  # the prefix and 4 random bytes in hex
DNS_QUERY_NAME = "kubernetes.default.svc.cluster.local"
IP_HEADER = 20
L4_HEADER = {"tcp": 24, "udp": 8, "icmp": 8}  # the SYN carries an MSS option (4 bytes)
MAX_IP_LENGTH = 65535


@dataclass(frozen=True)
class ProbeId:
    ip_id: int
    seq: int  # TCP initial sequence number
    icmp_id: int
    dns_id: int
    token: bytes  # in UDP and ICMP payloads

    @classmethod
    def new(cls) -> ProbeId:
        return cls(secrets.randbelow(0xFFFE) + 1, secrets.randbits(32),
                   secrets.randbelow(0xFFFE) + 1, secrets.randbelow(0xFFFE) + 1,
                   TOKEN_PREFIX + secrets.token_hex(4).encode())


@dataclass(frozen=True)
class Observed:
    """One frame recognised as the probe (or an answer to it), decoded."""

    kind: str  # probe | reply | icmp-error
    flow: FlowTuple  # the (inner) packet's tuple
    encap: Encap | None = None
    detail: str = ""  # TCP flags, "port-unreachable", "dns reply", ...


def bpf_filter(probe: ProbeId) -> str:
    """Lets through the probe, its answers and VXLAN (whose inner packet classify checks)."""
    return (f"(ip[4:2] = {probe.ip_id}) or (udp port {VXLAN_PORT}) or icmp "
            f"or (tcp and tcp[8:4] = {(probe.seq + 1) & 0xFFFFFFFF}) "
            f"or (udp and udp[8:2] = {probe.dns_id}) "
            f"or (udp and udp[8:4] = 0x{TOKEN_PREFIX[:4].hex()})")


def _is_dns(flow: FlowTuple) -> bool:
    return flow.proto == "udp" and flow.dport == 53


def _marks_length(flow: FlowTuple, dns_name: str | None) -> int:
    """The payload a probe carries without --size: its marks, or the DNS query."""
    if _is_dns(flow):
        labels = [x for x in (dns_name or DNS_QUERY_NAME).rstrip(".").split(".") if x]
        return 12 + sum(len(x) + 1 for x in labels) + 1 + 4  # header, QNAME, QTYPE+QCLASS
    return {"tcp": 0, "udp": len(b"echo ") + TOKEN_LENGTH, "icmp": TOKEN_LENGTH}[flow.proto]


def check_size(flow: FlowTuple, size: int | None) -> None:
    """A payload size the probe can carry: its marks fit, and the packet is valid IPv4."""
    if size is None:
        return
    if _is_dns(flow):
        raise NetlabError("--size: a DNS probe carries one query, whose size is the name's; "
                          "trace another port (or --proto icmp) to test an MTU")
    least = _marks_length(flow, None)
    most = MAX_IP_LENGTH - IP_HEADER - L4_HEADER[flow.proto]
    if not least <= size <= most:
        raise NetlabError(f"--size {size}: a {flow.proto} probe's payload is {least} to "
                          f"{most} bytes (it carries its marks)")


def packet_length(flow: FlowTuple, size: int | None = None, dns_name: str | None = None) -> int:
    """The probe's IP length: headers and the payload (`size` bytes, or its marks)."""
    check_size(flow, size)
    payload = _marks_length(flow, dns_name) if size is None else size
    return IP_HEADER + L4_HEADER[flow.proto] + payload


def payload_for(flow: FlowTuple, probe: ProbeId, dns_name: str | None = None,
                size: int | None = None) -> bytes:
    """What a probe carries: a DNS query to UDP port 53, netexec's echo for other UDP ports,
    the token for ICMP, nothing for a SYN; padded to `size` bytes when given."""
    check_size(flow, size)
    if _is_dns(flow):
        from scapy.layers.dns import DNS, DNSQR

        return bytes(DNS(id=probe.dns_id, rd=1, qd=DNSQR(qname=dns_name or DNS_QUERY_NAME)))
    marks = {"tcp": b"", "udp": b"echo " + probe.token, "icmp": probe.token}[flow.proto]
    return marks if size is None else marks + b"." * (size - len(marks))


def build(flow: FlowTuple, probe: ProbeId, dns_name: str | None = None,
          size: int | None = None) -> bytes:
    """The probe as IPv4 bytes (checksums filled in, DF set); `size`: payload bytes."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    ip = IP(src=flow.src, dst=flow.dst, id=probe.ip_id, ttl=64, flags="DF")
    payload = payload_for(flow, probe, dns_name, size)
    if flow.proto == "tcp":
        packet = ip / TCP(sport=flow.sport, dport=flow.dport, seq=probe.seq, flags="S",
                          window=64240, options=[("MSS", 1410)])
        if payload:
            packet = packet / payload
    elif flow.proto == "udp":
        packet = ip / UDP(sport=flow.sport, dport=flow.dport) / payload
    else:
        packet = ip / ICMP(type=8, id=probe.icmp_id, seq=1) / payload
    return bytes(packet)


def send(netns_name: str, data: bytes, dst: str) -> str | None:
    """Send the IPv4 packet from inside the namespace; its kernel routes it.

    Returns the kernel's refusal when the packet is larger than the outgoing
    device's MTU (DF set: EMSGSIZE), which a trace reports as an MTU drop.
    """
    with netns.entered(netns_name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with sock:
        try:
            sock.sendto(data, (dst, 0))
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            return "EMSGSIZE"
    return None


class PortHold:
    """A bound socket that keeps the probe's source port for the trace's duration.

    Bound but not listening: the source's kernel answers the server's SYN-ACK
    with a RST, so no half-open connection outlives the trace.
    """

    def __init__(self, netns_name: str, proto: str, address: str) -> None:
        self.sock: socket.socket | None = None
        self.port = 0
        if proto == "icmp":
            return
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with netns.entered(netns_name):
            sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((address, 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> PortHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def source_address(netns_name: str, dst: str) -> str:
    """The address the namespace's kernel would send from toward dst."""
    with netns.entered(netns_name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.connect((dst, 9))
        return sock.getsockname()[0]


def classify(data: bytes, probe: ProbeId) -> Observed | None:
    """The probe, an answer to it, or None, from an Ethernet frame (VXLAN unwrapped)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    with contextlib.suppress(Exception):  # a truncated or foreign frame is simply not ours
        frame = Ether(data)
        if not frame.haslayer(IP):
            return None
        outer = frame[IP]
        encap = None
        packet = outer
        if outer.haslayer(VXLAN) and outer.haslayer(UDP) and outer[UDP].dport == VXLAN_PORT:
            vx = outer[VXLAN]
            inner = vx.payload
            if not inner.haslayer(IP):
                return None
            encap = Encap(outer.src, outer.dst, outer[UDP].dport, int(vx.vni),
                          int(outer[UDP].sport))
            packet = inner[IP]
        found = _classify_ip(packet, probe)
        if found is None:
            return None
        kind, flow, detail = found
        return Observed(kind, flow, encap, detail)
    return None


def _classify_ip(ip, probe: ProbeId) -> tuple[str, FlowTuple, str] | None:  # type: ignore[no-untyped-def]
    from scapy.layers.dns import DNS
    from scapy.layers.inet import ICMP, TCP, UDP, IPerror

    if ip.haslayer(TCP):
        tcp = ip[TCP]
        flow = FlowTuple("tcp", ip.src, int(tcp.sport), ip.dst, int(tcp.dport))
        flags = str(tcp.flags)
        if ip.id == probe.ip_id and tcp.seq == probe.seq and flags == "S":
            return "probe", flow, flags
        if tcp.ack == (probe.seq + 1) & 0xFFFFFFFF and "A" in flags:
            return "reply", flow, "RST" if "R" in flags else "SYN-ACK" if "S" in flags else flags
        return None
    if ip.haslayer(ICMP):
        icmp = ip[ICMP]
        flow = FlowTuple("icmp", ip.src, int(icmp.id or 0), ip.dst, 0)
        if icmp.type in (3, 11) and ip.haslayer(IPerror) and ip[IPerror].id == probe.ip_id:
            return "icmp-error", flow, _icmp_error(int(icmp.type), int(icmp.code))
        ours = bytes(icmp.payload).startswith(probe.token)  # NAT may rewrite the echo id
        if icmp.type == 8 and ours and ip.id == probe.ip_id:
            return "probe", flow, "echo-request"
        if icmp.type == 0 and ours:
            return "reply", flow, "echo-reply"
        return None
    if ip.haslayer(UDP):
        udp = ip[UDP]
        flow = FlowTuple("udp", ip.src, int(udp.sport), ip.dst, int(udp.dport))
        payload = bytes(udp.payload)
        if ip.id == probe.ip_id and (payload == b"echo " + probe.token or (
                udp.haslayer(DNS) and udp[DNS].id == probe.dns_id and udp[DNS].qr == 0)):
            return "probe", flow, "udp"
        if probe.token in payload:
            return "reply", flow, "udp echo"
        if udp.haslayer(DNS) and udp[DNS].id == probe.dns_id and udp[DNS].qr == 1:
            rcode = int(udp[DNS].rcode)
            return "reply", flow, "dns reply" + ("" if rcode == 0 else f" rcode={rcode}")
    return None


def _icmp_error(kind: int, code: int) -> str:
    if kind == 11:
        return "time-exceeded"
    return {0: "net-unreachable", 1: "host-unreachable", 3: "port-unreachable",
            4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited",
            13: "admin-prohibited"}.get(code, f"unreachable code {code}")
