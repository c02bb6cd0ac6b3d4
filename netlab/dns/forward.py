"""Upstream resolvers for names the cluster zone does not hold (CoreDNS's `forward`).

Off unless upstreams are given. Like `forward . /etc/resolv.conf` it sends the
client's query as is, over the transport the client used, to upstreams in random
order until one answers; none answering gives SERVFAIL. It also resolves the
out-of-cluster targets of ExternalName CNAMEs, as CoreDNS's upstream lookup does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import dns.asyncquery
import dns.message
import dns.rdataclass

from netlab.dns.wire import Pending

DEFAULT_TIMEOUT = 2.0
Finish = Callable[[Pending, "dns.message.Message | None"], bytes]


def parse_upstream(text: str) -> tuple[str, int]:
    """`1.1.1.1`, `1.1.1.1:5353`, `[fd00::1]:53` or `fd00::1` -> (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


class Forwarder:
    """Queries upstream servers for one DNS server."""

    def __init__(self, upstreams: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.upstreams = [parse_upstream(u) for u in upstreams]
        self.timeout = timeout

    async def ask(self, query: dns.message.Message, tcp: bool) -> dns.message.Message | None:
        """The first upstream reply, trying upstreams in random order; None if all fail."""
        for host, port in random.sample(self.upstreams, len(self.upstreams)):
            try:
                if tcp:
                    return await dns.asyncquery.tcp(query, host, timeout=self.timeout, port=port)
                return await dns.asyncquery.udp(query, host, timeout=self.timeout, port=port,
                                                ignore_unexpected=True)
            except Exception:  # timeouts, refused, garbage: try the next one
                continue
        return None

    async def complete(self, finish: Finish, pending: Pending) -> bytes:
        """The reply bytes for a Pending query: forwarded whole, or with its CNAME chased.

        finish: Responder.finish (or a wrapper taking the server's lock).
        """
        tcp = pending.proto == "tcp"
        if pending.answer.forward:
            return finish(pending, await self.ask(pending.query, tcp))
        question = pending.query.question[0]
        chase = dns.message.make_query(pending.answer.chase, question.rdtype,
                                       dns.rdataclass.IN)
        return finish(pending, await self.ask(chase, tcp))
