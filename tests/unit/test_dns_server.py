"""The server on loopback: UDP, TCP, truncation and retry, bad input, metrics and probes."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from netlab.dns.records import RecordIndex
from netlab.dns.server import DnsServer, Listeners, open_listeners
from tests.unit.dns_k8s_objects import endpoint, endpoint_slice, service

HOST = "127.0.0.1"


def build_index(synced: bool = True) -> RecordIndex:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("web", "prod", "10.96.0.20"))
    idx.apply("Service", "ADDED", service("big", "prod", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("big", "prod", [
        endpoint(f"10.244.{i // 200}.{i % 200 + 1}") for i in range(80)]))
    idx.apply("Service", "ADDED", service("ext", "prod", external="db.example.org"))
    if synced:
        idx.mark_synced()
    return idx


class Running:
    """A started server plus where it listens."""

    def __init__(self, server: DnsServer, listeners: Listeners) -> None:
        self.server = server
        self.port = listeners.udp[0].getsockname()[1]
        self.http = {kind: socks[0].getsockname()[1] for kind, socks in (
            ("metrics", listeners.metrics), ("health", listeners.health),
            ("ready", listeners.ready)) if socks}


def with_server(body: Callable[[Running], Awaitable[None]], *, index: RecordIndex | None = None,
                upstreams: tuple[str, ...] = ()) -> None:
    async def main() -> None:
        server = DnsServer(index or build_index(), upstreams=upstreams)
        listeners = open_listeners(HOST, 0, metrics_port=0, health_port=0, ready_port=0)
        await server.start(listeners)
        try:
            await asyncio.wait_for(body(Running(server, listeners)), 20)
        finally:
            await server.stop()
    asyncio.run(main())


def query(name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def tcp_exchange(port: int, payload: bytes, replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(payload)
    out = []
    for _ in range(replies):
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        out.append(await reader.readexactly(size))
    writer.close()
    return out


def framed(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def test_answers_over_udp_and_tcp() -> None:
    async def body(run: Running) -> None:
        q = query("web.prod.svc.cluster.local")
        udp = await dns.asyncquery.udp(q, HOST, port=run.port, timeout=2)
        tcp = await dns.asyncquery.tcp(q, HOST, port=run.port, timeout=2)
        for reply in (udp, tcp):
            assert reply.answer[0][0].address == "10.96.0.20"
    with_server(body)


def test_truncated_udp_answer_is_retried_over_tcp_in_full() -> None:
    async def body(run: Running) -> None:
        q = query("big.prod.svc.cluster.local", use_edns=False)
        udp = await dns.asyncquery.udp(q, HOST, port=run.port, timeout=2)
        assert udp.flags & dns.flags.TC
        full, used_tcp = await dns.asyncquery.udp_with_fallback(q, HOST, port=run.port,
                                                                timeout=2)
        assert used_tcp and not full.flags & dns.flags.TC and len(full.answer[0]) == 80
    with_server(body)


def test_tcp_pipelined_queries_each_get_their_answer() -> None:
    async def body(run: Running) -> None:
        queries = [query(f"{name}.prod.svc.cluster.local") for name in ("web", "nope", "big")]
        payload = b"".join(framed(q.to_wire()) for q in queries)
        replies = [dns.message.from_wire(r) for r in await tcp_exchange(run.port, payload, 3)]
        assert {r.id: r.rcode() for r in replies} == {
            queries[0].id: dns.rcode.NOERROR, queries[1].id: dns.rcode.NXDOMAIN,
            queries[2].id: dns.rcode.NOERROR}
    with_server(body)


def test_garbage_on_tcp_does_not_end_the_connection() -> None:
    async def body(run: Running) -> None:
        good = query("web.prod.svc.cluster.local")
        two_questions = b"\x12\x34\x01\x00\x00\x02" + bytes(6) + b"\xff" * 30
        payload = framed(b"\x00") + framed(two_questions) + framed(good.to_wire())
        replies = await tcp_exchange(run.port, payload, 2)  # the 1-byte frame gets none
        assert replies[0][3] & 0x0F == dns.rcode.FORMERR
        assert dns.message.from_wire(replies[1]).id == good.id
    with_server(body)


def test_garbage_on_udp_is_survived_and_counted() -> None:
    async def body(run: Running) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (b"", b"\x01", b"\x00" * 11, b"\xab\xcd\x81\x00" + b"\x00" * 8):
                sock.sendto(junk, (HOST, run.port))
        reply = await dns.asyncquery.udp(query("web.prod.svc.cluster.local"), HOST,
                                         port=run.port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR
        bad = run.server.metrics.bad_packets
        assert bad.get("short_header") == 3 and bad.get("response_bit") == 1
    with_server(body)


def test_metrics_endpoint_shows_coredns_counters() -> None:
    async def body(run: Running) -> None:
        await dns.asyncquery.udp(query("web.prod.svc.cluster.local"), HOST, port=run.port,
                                 timeout=2)
        await dns.asyncquery.tcp(query("nope.prod.svc.cluster.local"), HOST, port=run.port,
                                 timeout=2)
        status, text = await http_get(run.http["metrics"], "/metrics")
        assert status == 200
        body_text = text.decode()
        assert 'coredns_dns_requests_total{family="1",proto="udp"' in body_text
        assert 'proto="tcp"' in body_text
        assert 'coredns_dns_responses_total{plugin="kubernetes",rcode="NXDOMAIN"' in body_text
        assert "coredns_dns_request_duration_seconds_bucket" in body_text
        assert f'server="dns://:{run.port}"' in body_text
    with_server(body)


def test_health_is_ok_and_ready_waits_for_the_initial_sync() -> None:
    index = build_index(synced=False)

    async def body(run: Running) -> None:
        assert await http_get(run.http["health"], "/health") == (200, b"OK")
        assert (await http_get(run.http["ready"], "/ready"))[0] == 503
        reply = await dns.asyncquery.udp(query("nope.prod.svc.cluster.local"), HOST,
                                         port=run.port, timeout=2)
        assert reply.rcode() == dns.rcode.SERVFAIL  # unsynced: no false NXDOMAIN
        run.server.mark_synced()
        assert await http_get(run.http["ready"], "/ready") == (200, b"OK")
        assert (await http_get(run.http["ready"], "/nope"))[0] == 404
    with_server(body, index=index)


def test_objects_applied_from_another_thread_show_up_in_answers() -> None:
    async def body(run: Running) -> None:
        thread = threading.Thread(target=run.server.apply_threadsafe, args=(
            "Service", "ADDED", service("late", "prod", "10.96.0.77")))
        thread.start()
        thread.join()
        await asyncio.sleep(0.05)
        reply = await dns.asyncquery.udp(query("late.prod.svc.cluster.local"), HOST,
                                         port=run.port, timeout=2)
        assert reply.answer[0][0].address == "10.96.0.77"
    with_server(body)


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers every question with 192.0.2.53, like a recursive resolver would."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = dns.message.from_wire(data)
        reply = dns.message.make_response(q)
        reply.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A",
                                                "192.0.2.53"))
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


def test_outside_names_and_external_name_targets_go_to_upstreams() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(FakeUpstream, local_addr=(HOST, 0))
        upstream_port = transport.get_extra_info("sockname")[1]

        async def body(run: Running) -> None:
            reply = await dns.asyncquery.udp(query("example.com"), HOST, port=run.port,
                                             timeout=3)
            assert reply.answer[0][0].address == "192.0.2.53"
            reply = await dns.asyncquery.udp(query("ext.prod.svc.cluster.local"), HOST,
                                             port=run.port, timeout=3)
            assert [rrset.to_text() for rrset in reply.answer] == [
                "ext.prod.svc.cluster.local. 30 IN CNAME db.example.org.",
                "db.example.org. 60 IN A 192.0.2.53"]

        server = DnsServer(build_index(), upstreams=(f"{HOST}:{upstream_port}",))
        listeners = open_listeners(HOST, 0, metrics_port=None, health_port=None,
                                   ready_port=None)
        await server.start(listeners)
        try:
            await asyncio.wait_for(body(Running(server, listeners)), 20)
        finally:
            await server.stop()
            transport.close()
    asyncio.run(main())


def test_stop_releases_the_ports() -> None:
    ports: list[int] = []

    async def body(run: Running) -> None:
        ports.append(run.port)
    with_server(body)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, ports[0]))


def test_two_servers_can_share_a_port_with_reuse_port() -> None:
    async def main() -> None:
        first = open_listeners(HOST, 0, metrics_port=None, health_port=None, ready_port=None,
                               reuse_port=True)
        port = first.udp[0].getsockname()[1]
        second = open_listeners(HOST, port, metrics_port=None, health_port=None,
                                ready_port=None, reuse_port=True)
        servers = [DnsServer(build_index()), DnsServer(build_index())]
        await servers[0].start(first)
        await servers[1].start(second)
        try:
            for _ in range(24):  # fresh source ports: the kernel hashes them over both
                reply = await dns.asyncquery.udp(query("web.prod.svc.cluster.local"), HOST,
                                                 port=port, timeout=2)
                assert reply.answer[0][0].address == "10.96.0.20"
            assert all(s.metrics.total_requests() > 0 for s in servers)
        finally:
            for server in servers:
                await server.stop()
    asyncio.run(main())
