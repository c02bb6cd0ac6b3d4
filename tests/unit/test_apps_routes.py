"""netexec's answers as plain data: no sockets."""

from __future__ import annotations

import asyncio
import json

from netlab.apps.container import NETEXEC, SERVE_HOSTNAME
from netlab.apps.routes import (
    DialFailed,
    DialQuery,
    Reply,
    Request,
    canonical_header,
    format_peer,
    parse_dial,
    respond,
    run_dial,
    udp_reply,
)

PEER = ("10.244.1.7", 40000)


def ask(target: str, method: str = "GET", body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    async def no_dial(protocol: str, host: str, port: int, request: str) -> str:
        raise AssertionError("no dial expected")
    return asyncio.run(respond(Request(method, target, headers, body, PEER),
                               hostname="pod-1", mode=NETEXEC, dialer=no_dial))


def test_peer_is_formatted_like_go_remote_addr() -> None:
    assert format_peer(PEER) == "10.244.1.7:40000"
    assert format_peer(("fd00::1", 80)) == "[fd00::1]:80"


def test_header_names_are_canonicalised_like_go() -> None:
    assert canonical_header("x-forwarded-FOR") == "X-Forwarded-For"


def test_udp_echo_is_trimmed_and_lower_cased_like_netexec() -> None:
    assert udp_reply(b"  ECHO Hello World\n", PEER, hostname="p", mode=NETEXEC) == b"hello world"


def test_udp_unknown_command_gets_no_reply_from_netexec_but_hostname_otherwise() -> None:
    assert udp_reply(b"ping", PEER, hostname="p", mode=NETEXEC) is None
    assert udp_reply(b"ping", PEER, hostname="p", mode=SERVE_HOSTNAME) == b"p"


def test_clientip_over_udp_is_the_sender() -> None:
    assert udp_reply(b"clientip", PEER, hostname="p", mode=NETEXEC) == b"10.244.1.7:40000"


def test_echo_reads_url_encoded_post_bodies_too() -> None:
    reply = ask("/echo", "POST", b"msg=from+body",
                (("content-type", "application/x-www-form-urlencoded"),))
    assert reply == Reply(200, b"from body")


def test_unsupported_endpoints_say_so() -> None:
    assert ask("/shell?cmd=ls").status == 501


def test_dial_defaults_to_one_http_try() -> None:
    assert parse_dial({"request": ["hostname"], "host": ["10.96.0.10"], "port": ["80"]}) == \
        DialQuery("http", "10.96.0.10", 80, "hostname", 1)


def test_dial_reports_responses_and_errors_side_by_side() -> None:
    answers = iter(["pod-a", None, "pod-b"])

    async def flaky(protocol: str, host: str, port: int, request: str) -> str:
        answer = next(answers)
        if answer is None:
            raise DialFailed("i/o timeout")
        return answer

    reply = asyncio.run(run_dial(DialQuery("udp", "10.96.0.10", 53, "hostname", 3), flaky))
    assert reply.status == 200
    assert json.loads(reply.body) == {"responses": ["pod-a", "pod-b"], "errors": ["i/o timeout"]}


def test_dial_with_zero_tries_is_an_empty_object() -> None:
    async def never(protocol: str, host: str, port: int, request: str) -> str:
        raise AssertionError

    reply = asyncio.run(run_dial(DialQuery("http", "10.0.0.1", 80, "hostname", 0), never))
    assert reply.body == b"{}"
