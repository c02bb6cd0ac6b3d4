"""Batched UDP serving on loopback: cached wire replies, batches with gaps, counting."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import pytest

from netlab.dns.metrics import DnsMetrics
from netlab.dns.records import RecordIndex
from netlab.dns.resolver import Resolver
from netlab.dns.server import DnsServer, open_listeners
from netlab.dns.udp import BATCH, SLOT, UdpEndpoint
from netlab.dns.wire import Pending, Responder
from tests.unit.dns_k8s_objects import endpoint, endpoint_slice, service

CLOCK = 1_700_000_000


def build_index() -> RecordIndex:
    idx = RecordIndex(clock=lambda: CLOCK)
    idx.apply("Service", "ADDED", service("web", "prod", "10.96.0.20"))
    idx.apply("Service", "ADDED", service("big", "prod", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("big", "prod", [
        endpoint(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(80)]))
    idx.mark_synced()
    return idx


def wire(name: str, rdtype: str = "A", msg_id: int = 0x1234, **kw: object) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    msg.id = msg_id
    return msg.to_wire()


class Rig:
    """An endpoint on a loopback socket, driven by hand: send first, then serve one event."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.index = build_index()
        self.metrics = DnsMetrics()
        self.responder = Responder(Resolver(self.index), self.metrics)
        self.server = socket.socket(family, socket.SOCK_DGRAM)
        self.server.bind((self.host, 0))
        self.pending: list[Pending] = []
        self.endpoint = UdpEndpoint(self.server, self.responder, self.index, self.metrics,
                                    lambda pending, deliver: self.pending.append(pending))
        self.clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
        for client in self.clients:
            client.bind((self.host, 0))
            client.settimeout(2)

    def close(self) -> None:
        for sock in (self.server, *self.clients):
            sock.close()

    def serve(self) -> None:
        """Serve what is queued (loopback queues a datagram before sendto returns)."""
        assert select.select([self.server], [], [], 2)[0], "nothing arrived"
        self.endpoint.on_readable()

    def ask(self, *packets: bytes, client: int = 0) -> list[bytes]:
        for packet in packets:
            self.clients[client].sendto(packet, self.server.getsockname())
        self.serve()
        return [self.clients[client].recv(65535) for _ in packets]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def fresh(packet: bytes) -> bytes:
    """What an uncached responder on an equal index answers."""
    reply = Responder(Resolver(build_index())).handle(packet, "udp", "1")
    assert isinstance(reply, bytes)
    return reply


@pytest.mark.parametrize("packet", [
    wire("web.prod.svc.cluster.local"),
    wire("WeB.PROD.svc.Cluster.local"),
    wire("web.prod.svc.cluster.local", use_edns=0, payload=1232, want_dnssec=True),
    wire("nope.prod.svc.cluster.local"),
    wire("big.prod.svc.cluster.local", use_edns=False),  # truncated: TC
], ids=["A", "mixed case", "EDNS", "NXDOMAIN", "truncated"])
def test_repeated_queries_get_the_fresh_reply_with_their_own_id(rig: Rig, packet: bytes) -> None:
    for msg_id in (0x0001, 0xBEEF, 0x7A7A):
        query = msg_id.to_bytes(2, "big") + packet[2:]
        assert rig.ask(query) == [fresh(query)]
    assert len(rig.endpoint.cache) == 1


def test_a_batch_with_unanswered_datagrams_answers_each_client_at_its_address(rig: Rig) -> None:
    web, nope = wire("web.prod.svc.cluster.local", msg_id=1), wire("nope.prod.svc.cluster.local",
                                                                   msg_id=2)
    rig.ask(web, nope)  # cache both
    plan = [(0, web), (1, b"\x00" * 5), (2, nope), (1, web[:2] + b"\x81" + web[3:]),
            (1, nope), (0, b""), (2, web)]  # garbage and a response bit get no reply
    for client, packet in plan:
        rig.clients[client].sendto(packet, rig.server.getsockname())
    rig.serve()
    got = {c: [rig.clients[c].recv(65535) for _ in range(n)] for c, n in ((0, 1), (1, 1), (2, 2))}
    assert got == {0: [fresh(web)], 1: [fresh(nope)], 2: [fresh(nope), fresh(web)]}
    assert rig.metrics.bad_packets == {"short_header": 2, "response_bit": 1}
    # The next batch, without gaps, pairs each reply with its own client and ID again.
    again = [wire("web.prod.svc.cluster.local", msg_id=7), wire("nope.prod.svc.cluster.local",
                                                                 msg_id=8)]
    assert rig.ask(*again, client=0) == [fresh(p) for p in again]


def test_more_datagrams_than_one_batch_are_all_answered(rig: Rig) -> None:
    packets = [wire("web.prod.svc.cluster.local", msg_id=i) for i in range(BATCH * 3 + 5)]
    assert rig.ask(*packets) == [fresh(p) for p in packets]


def test_an_index_change_empties_the_cache(rig: Rig) -> None:
    packet = wire("web.prod.svc.cluster.local")
    rig.ask(packet)
    rig.index.apply("Service", "MODIFIED", service("web", "prod", "10.96.0.99"))
    reply = dns.message.from_wire(rig.ask(packet)[0])
    assert reply.answer[0][0].address == "10.96.0.99"


def test_cached_replies_are_counted_as_fresh_ones_would_be(rig: Rig) -> None:
    packets = [wire("web.prod.svc.cluster.local", msg_id=i) for i in range(40)]
    packets += [wire("nope.prod.svc.cluster.local", msg_id=i) for i in range(10)]
    rig.ask(*packets)
    expected = DnsMetrics()
    responder = Responder(Resolver(build_index()), expected)
    for packet in packets:
        responder.handle(packet, "udp", "1")
    assert rig.metrics.total_requests() == expected.total_requests() == 50
    assert rig.metrics.requests == expected.requests
    assert rig.metrics.responses == expected.responses
    for mine, theirs in ((rig.metrics.request_sizes, expected.request_sizes),
                         (rig.metrics.response_sizes, expected.response_sizes)):
        assert {k: h.counts for k, h in mine.items()} == {k: h.counts for k, h in theirs.items()}
    assert sum(rig.metrics.duration_histogram("A")[:-1]) == 50
    rig.ask(*packets[:5])
    assert rig.metrics.total_requests() == 55  # counted once each, also after a scrape


def test_a_datagram_longer_than_a_slot_is_dropped_and_counted(rig: Rig) -> None:
    packet = wire("web.prod.svc.cluster.local")
    rig.clients[0].sendto(packet + bytes(SLOT), rig.server.getsockname())
    assert rig.ask(packet) == [fresh(packet)]
    assert rig.metrics.bad_packets == {"oversized": 1}


def test_ipv6_clients_are_answered() -> None:
    rig = Rig(socket.AF_INET6)
    try:
        packet = wire("web.prod.svc.cluster.local")
        assert rig.ask(packet, packet) == [fresh(packet)] * 2
        assert rig.metrics.total_requests() == 2
        assert ("udp", "2", "A") in rig.metrics.requests
    finally:
        rig.close()


def test_upstream_answers_reach_ipv6_clients() -> None:
    """Forwarded queries are answered later, to the address the query came from."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        upstream.bind(("::1", 0))
        upstream.setblocking(False)

        def answer() -> None:
            data, addr = upstream.recvfrom(65535)
            reply = dns.message.make_response(dns.message.from_wire(data))
            reply.flags |= dns.flags.RA
            upstream.sendto(reply.to_wire(), addr)

        loop.add_reader(upstream.fileno(), answer)
        port = upstream.getsockname()[1]
        server = DnsServer(build_index(), upstreams=(f"[::1]:{port}",))
        listeners = open_listeners("::1", 0, metrics_port=None, health_port=None,
                                   ready_port=None)
        await server.start(listeners)
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        client.setblocking(False)
        try:
            query = wire("example.org")
            await loop.sock_sendto(client, query, listeners.udp[0].getsockname())
            reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), 5))
            assert reply.id == 0x1234 and reply.rcode() == dns.rcode.NOERROR
            assert reply.flags & dns.flags.RA
        finally:
            client.close()
            loop.remove_reader(upstream.fileno())
            upstream.close()
            await server.stop()
    asyncio.run(main())
