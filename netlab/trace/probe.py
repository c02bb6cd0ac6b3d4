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
import secrets
import socket
from dataclasses import dataclass

from netlab.kernel import netns
from netlab.trace.model import Encap, FlowTuple

VXLAN_PORT = 8472
TOKEN_PREFIX = b"knetlab-trace-"
DNS_QUERY_NAME = "kubernetes.default.svc.cluster.local"


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


def payload_for(flow: FlowTuple, probe: ProbeId, dns_name: str | None = None) -> bytes:
    """What a UDP or ICMP probe carries: a DNS query to port 53, netexec's echo otherwise."""
    if flow.proto == "udp" and flow.dport == 53:
        from scapy.layers.dns import DNS, DNSQR

        return bytes(DNS(id=probe.dns_id, rd=1, qd=DNSQR(qname=dns_name or DNS_QUERY_NAME)))
    if flow.proto == "udp":
        return b"echo " + probe.token
    return probe.token


def build(flow: FlowTuple, probe: ProbeId, dns_name: str | None = None) -> bytes:
    """The probe as IPv4 bytes (checksums filled in)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    ip = IP(src=flow.src, dst=flow.dst, id=probe.ip_id, ttl=64, flags="DF")
    if flow.proto == "tcp":
        packet = ip / TCP(sport=flow.sport, dport=flow.dport, seq=probe.seq, flags="S",
                          window=64240, options=[("MSS", 1410)])
    elif flow.proto == "udp":
        packet = ip / UDP(sport=flow.sport, dport=flow.dport) / payload_for(flow, probe,
                                                                             dns_name)
    else:
        packet = ip / ICMP(type=8, id=probe.icmp_id, seq=1) / payload_for(flow, probe)
    return bytes(packet)


def send(netns_name: str, data: bytes, dst: str) -> None:
    """Send the IPv4 packet from inside the namespace; its kernel routes it."""
    with netns.entered(netns_name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with sock:
        sock.sendto(data, (dst, 0))


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
