"""Recognising the probe and its answers anywhere: after NAT, inside VXLAN, among other traffic."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netlab.trace.model import FlowTuple
from netlab.trace.probe import ProbeId, build, classify

PROBE = ProbeId(ip_id=0x1234, seq=1000, icmp_id=77, dns_id=4242, token=b"knetlab-trace-abcd")
FLOW = FlowTuple("tcp", "10.244.1.2", 40000, "10.96.0.20", 80)


def frame(ip) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(Ether() / ip)


def test_the_probe_is_recognised_as_built():
    seen = classify(frame(IP(build(FLOW, PROBE))), PROBE)
    assert seen is not None and seen.kind == "probe" and seen.flow == FLOW


def test_the_probe_is_recognised_after_dnat_and_masquerade():
    packet = IP(build(FLOW, PROBE))
    packet.src, packet.dst = "10.244.1.0", "10.244.2.2"
    packet[TCP].sport, packet[TCP].dport = 5555, 8080
    seen = classify(frame(packet), PROBE)
    assert seen is not None and seen.kind == "probe"
    assert seen.flow == FlowTuple("tcp", "10.244.1.0", 5555, "10.244.2.2", 8080)


def test_the_probe_inside_vxlan_comes_with_the_outer_headers():
    inner = Ether() / IP(build(FLOW.with_dst("10.244.2.2", 8080), PROBE))
    outer = IP(src="192.168.10.3", dst="192.168.10.4") / UDP(sport=33333, dport=8472) / \
        VXLAN(vni=1) / inner
    seen = classify(frame(outer), PROBE)
    assert seen is not None and seen.kind == "probe"
    assert seen.encap is not None
    assert (seen.encap.outer_src, seen.encap.outer_dst, seen.encap.vni, seen.encap.sport) == (
        "192.168.10.3", "192.168.10.4", 1, 33333)
    assert seen.flow.dst == "10.244.2.2"


def test_syn_ack_and_rst_answering_the_probe_are_replies():
    syn_ack = IP(src="10.244.2.2", dst="10.244.1.2") / TCP(sport=8080, dport=40000,
                                                            flags="SA", seq=9, ack=1001)
    rst = IP(src="10.244.2.2", dst="10.244.1.2") / TCP(sport=8080, dport=40000,
                                                        flags="RA", seq=0, ack=1001)
    assert classify(frame(syn_ack), PROBE).kind == "reply"  # type: ignore[union-attr]
    answer = classify(frame(rst), PROBE)
    assert answer is not None and answer.detail == "RST"


def test_icmp_errors_quoting_the_probe_are_recognised():
    quoted = IP(build(FLOW, PROBE))
    error = IP(src="10.244.1.1", dst="10.244.1.2") / ICMP(type=3, code=3) / bytes(quoted)[:28]
    seen = classify(frame(error), PROBE)
    assert seen is not None and seen.kind == "icmp-error" and seen.detail == "port-unreachable"


def test_other_traffic_is_never_taken_for_the_probe():
    same_ports = IP(src="10.244.1.2", dst="10.96.0.20", id=99) / TCP(sport=40000, dport=80,
                                                                     flags="S", seq=5)
    same_id = IP(src="10.244.1.9", dst="10.96.0.20", id=0x1234) / TCP(sport=1, dport=80,
                                                                      flags="S", seq=6)
    ping = IP(src="10.244.1.2", dst="10.244.2.2", id=0x1234) / ICMP(id=77) / b"hello"
    for packet in (same_ports, same_id, ping):
        assert classify(frame(packet), PROBE) is None


def test_udp_and_dns_probes_carry_their_marks():
    udp = classify(frame(IP(build(FlowTuple("udp", "10.244.1.2", 40000, "10.244.2.2", 8081),
                                  PROBE))), PROBE)
    assert udp is not None and udp.kind == "probe"
    echo = IP(src="10.244.2.2", dst="10.244.1.2") / UDP(sport=8081, dport=40000) / PROBE.token
    assert classify(frame(echo), PROBE).kind == "reply"  # type: ignore[union-attr]
    dns = IP(build(FlowTuple("udp", "10.244.1.2", 40000, "10.96.0.10", 53), PROBE))
    assert classify(frame(dns), PROBE).kind == "probe"  # type: ignore[union-attr]
