"""Bytes in, bytes out: the cached fast path, truncation and malformed packets."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.dns.records import RecordIndex
from netlab.dns.resolver import Resolver
from netlab.dns.wire import Pending, Responder
from tests.unit.dns_k8s_objects import endpoint, endpoint_slice, service

QUERY_ID = 0x1234


@pytest.fixture
def index() -> RecordIndex:
    idx = RecordIndex(clock=lambda: 1_700_000_000)
    idx.apply("Service", "ADDED", service("web", "prod", "10.96.0.20"))
    idx.apply("Service", "ADDED", service("big", "prod", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("big", "prod", [
        endpoint(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(60)]))
    idx.apply("Service", "ADDED", service("ext", "prod", external="db.example.org"))
    idx.mark_synced()
    return idx


@pytest.fixture
def responder(index: RecordIndex) -> Responder:
    return Responder(Resolver(index))


def query(name: str, rdtype: str = "A", **kw: object) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    msg.id = QUERY_ID
    return msg.to_wire()


def parse(reply: object) -> dns.message.Message:
    assert isinstance(reply, bytes)
    return dns.message.from_wire(reply)


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", QUERY_ID, flags, qd, an, ns, ar)


QUESTION = b"\x03web\x04prod\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"


# -- the fast path agrees with the full answer ------------------------------------------


def test_cached_answers_are_byte_identical_to_fresh_ones(responder: Responder) -> None:
    first = responder.handle(query("web.prod.svc.cluster.local"))
    second = responder.handle(query("web.prod.svc.cluster.local"))
    assert first == second
    msg = parse(second)
    assert msg.id == QUERY_ID and msg.rcode() == dns.rcode.NOERROR
    assert msg.answer[0].to_text() == "web.prod.svc.cluster.local. 30 IN A 10.96.0.20"


def test_cached_answer_keeps_each_clients_spelling(responder: Responder) -> None:
    responder.handle(query("web.prod.svc.cluster.local"))
    msg = parse(responder.handle(query("WEB.Prod.svc.CLUSTER.local")))
    assert msg.question[0].name.to_text() == "WEB.Prod.svc.CLUSTER.local."
    assert msg.answer[0].name.to_text() == "WEB.Prod.svc.CLUSTER.local."


def test_cached_answer_copies_id_rd_and_cd_per_query(responder: Responder) -> None:
    responder.handle(query("web.prod.svc.cluster.local"))
    plain = header(flags=0x0010) + QUESTION  # CD set, RD clear
    msg = parse(responder.handle(plain))
    assert msg.id == QUERY_ID
    assert msg.flags & dns.flags.CD and not msg.flags & dns.flags.RD


def test_cached_negative_answer_keeps_soa(responder: Responder) -> None:
    for _ in range(2):
        msg = parse(responder.handle(query("nope.prod.svc.cluster.local")))
        assert msg.rcode() == dns.rcode.NXDOMAIN
        assert msg.authority[0].name.to_text() == "cluster.local."


def test_cache_follows_index_changes(index: RecordIndex, responder: Responder) -> None:
    responder.handle(query("web.prod.svc.cluster.local"))
    index.apply("Service", "MODIFIED", service("web", "prod", "10.96.0.21"))
    msg = parse(responder.handle(query("web.prod.svc.cluster.local")))
    assert msg.answer[0][0].address == "10.96.0.21"


def test_edns_query_gets_an_opt_with_its_payload_and_do_bit(responder: Responder) -> None:
    for _ in range(2):  # miss, then hit
        msg = parse(responder.handle(query("web.prod.svc.cluster.local", use_edns=0,
                                           payload=1400, want_dnssec=True)))
        assert msg.edns == 0 and msg.payload == 1400 and msg.ednsflags & dns.flags.DO


def test_edns_options_are_not_echoed(responder: Responder) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    msg = parse(responder.handle(query("web.prod.svc.cluster.local", use_edns=0,
                                       options=[cookie])))
    assert msg.edns == 0 and msg.options == ()
    assert msg.answer[0][0].address == "10.96.0.20"


# -- truncation --------------------------------------------------------------------------


def test_large_udp_answer_is_truncated_to_512_bytes_with_tc(responder: Responder) -> None:
    for _ in range(2):
        reply = responder.handle(query("big.prod.svc.cluster.local"))
        assert isinstance(reply, bytes) and len(reply) <= 512
        msg = parse(reply)
        assert msg.flags & dns.flags.TC
        assert 0 < len(msg.answer[0]) < 60


def test_edns_payload_size_lifts_the_udp_limit(responder: Responder) -> None:
    msg = parse(responder.handle(query("big.prod.svc.cluster.local", use_edns=0, payload=4096)))
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 60
    small = responder.handle(query("big.prod.svc.cluster.local", use_edns=0, payload=600))
    assert isinstance(small, bytes) and len(small) <= 600
    assert parse(small).flags & dns.flags.TC and parse(small).edns == 0


def test_tcp_answers_are_not_truncated(responder: Responder) -> None:
    msg = parse(responder.handle(query("big.prod.svc.cluster.local"), "tcp"))
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 60


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x12", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00"])
def test_packets_shorter_than_a_header_are_dropped(responder: Responder, data: bytes) -> None:
    assert responder.handle(data) is None
    assert responder.metrics.bad_packets == {"short_header": 1}


def test_responses_are_dropped(responder: Responder) -> None:
    assert responder.handle(header(flags=0x8100) + QUESTION) is None


def rcode_of(reply: object) -> int:
    assert isinstance(reply, bytes) and len(reply) == 12  # header only
    assert reply[:2] == struct.pack("!H", QUERY_ID) and reply[2] & 0x80
    return reply[3] & 0x0F


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
def test_opcodes_other_than_query_are_notimp(responder: Responder, opcode: int) -> None:
    reply = responder.handle(header(flags=opcode << 11) + QUESTION)
    assert rcode_of(reply) == dns.rcode.NOTIMP
    assert isinstance(reply, bytes) and (reply[2] >> 3) & 0xF == opcode


@pytest.mark.parametrize("data", [
    header(qd=0),                                          # no question
    header(qd=2) + QUESTION + QUESTION,                    # two questions
    header(qd=1, an=2) + QUESTION,                         # more records than a query has
    header() + QUESTION[:9],                               # question cut short
    header() + b"\xc0\x0c\x00\x01\x00\x01",                # pointer to itself: loop
    header() + b"\x03abc\xc0\x0c\x00\x01\x00\x01",         # pointer back to its start: loop
    header() + b"\x3f" + b"a" * 63 + b"\xc0\x0c\x00\x01\x00\x01",  # loop through a label
    header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name over 255 bytes
    header() + b"\x41abc\x00\x00\x01\x00\x01",             # extended label type
    header(ar=1) + QUESTION + b"\x00\x00\x29\x10",         # OPT cut short
])
def test_unparsable_queries_get_formerr(responder: Responder, data: bytes) -> None:
    assert rcode_of(responder.handle(data)) == dns.rcode.FORMERR


def test_unknown_query_types_are_nodata(responder: Responder) -> None:
    msg = parse(responder.handle(query("web.prod.svc.cluster.local", "TYPE65280")))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == [] and msg.authority


def test_edns_version_1_gets_badvers(responder: Responder) -> None:
    msg = parse(responder.handle(query("web.prod.svc.cluster.local", use_edns=1)))
    assert msg.rcode() == dns.rcode.BADVERS


def test_a_crash_inside_is_answered_servfail_and_counted(responder: Responder) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    responder.resolver.lookup = boom  # type: ignore[method-assign]
    reply = responder.handle(query("new.prod.svc.cluster.local"))
    assert rcode_of(reply) == dns.rcode.SERVFAIL
    assert responder.metrics.panics == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_and_replies_echo_the_id(data: bytes) -> None:
    responder = Responder(Resolver(RecordIndex()))
    reply = responder.handle(data)
    assert reply is None or (isinstance(reply, bytes) and reply[:2] == data[:2])


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=12, max_value=len(QUESTION) + 11), st.integers(0, 255))
def test_corrupted_queries_never_raise(position: int, value: int) -> None:
    data = bytearray(header() + QUESTION)
    data[position] = value
    reply = Responder(Resolver(RecordIndex())).handle(bytes(data))
    assert reply is None or isinstance(reply, bytes)


# -- upstream hand-off ---------------------------------------------------------------------


def test_outside_names_become_pending_when_upstreams_exist(index: RecordIndex) -> None:
    responder = Responder(Resolver(index), can_forward=True)
    pending = responder.handle(query("example.com"))
    assert isinstance(pending, Pending) and pending.answer.forward
    upstream = dns.message.make_response(dns.message.make_query("example.com", "A"))
    upstream.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    msg = parse(responder.finish(pending, upstream))
    assert msg.id == QUERY_ID and msg.answer[0][0].address == "192.0.2.1"
    assert parse(responder.finish(pending, None)).rcode() == dns.rcode.SERVFAIL


def test_external_name_target_records_are_appended_after_the_cname(index: RecordIndex) -> None:
    responder = Responder(Resolver(index), can_forward=True)
    pending = responder.handle(query("ext.prod.svc.cluster.local"))
    assert isinstance(pending, Pending)
    upstream = dns.message.make_response(dns.message.make_query("db.example.org", "A"))
    upstream.answer.append(dns.rrset.from_text("db.example.org.", 60, "IN", "A", "192.0.2.7"))
    msg = parse(responder.finish(pending, upstream))
    assert [r.rdtype for r in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_without_upstreams_outside_names_are_servfail(responder: Responder) -> None:
    msg = parse(responder.handle(query("example.com")))
    assert msg.rcode() == dns.rcode.SERVFAIL


def test_metrics_count_answers_by_type_rcode_and_protocol(responder: Responder) -> None:
    responder.handle(query("web.prod.svc.cluster.local"))
    responder.handle(query("web.prod.svc.cluster.local", "AAAA"), "tcp")
    responder.handle(query("nope.prod.svc.cluster.local"))
    text = responder.metrics.exposition().decode()
    assert 'coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="A"' in text
    assert 'proto="tcp",server="dns://:53",type="AAAA",view="",zone="."} 1.0' in text
    assert 'plugin="kubernetes",rcode="NXDOMAIN"' in text
