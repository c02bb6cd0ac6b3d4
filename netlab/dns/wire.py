"""Query bytes in, response bytes out: the fast path, the slow path and truncation.

Most cluster DNS traffic is the same few questions asked again and again, so the
rendered answer sections are cached per (lowercased question, type, class) until
the record index changes. A cached answer is reused by copying the query's ID,
flags and question bytes in front of it: owner names in the cached sections are
compression pointers into the question, so the client's letter case comes back
as it was sent. Anything unusual (other opcodes, extra sections, compressed or
malformed names, EDNS versions, answers that need an upstream) takes the slow
path through dnspython.

Malformed input follows miekg/dns (CoreDNS's server library): shorter than a
header or a response → dropped; opcode other than QUERY → NOTIMP; not exactly one
question, or more records than a query carries → FORMERR; a body that does not
parse → FORMERR. Those replies carry only the header.
"""

from __future__ import annotations

import logging
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.renderer
import dns.rrset

from netlab.dns.metrics import TIME_BUCKETS, DnsMetrics, rcode_label, type_label
from netlab.dns.resolver import Answer, Resolver

log = logging.getLogger(__name__)

UDP_MIN = 512
FIRST_TIME_BUCKET = TIME_BUCKETS[0]
TCP_MAX = 65535
OPT_SIZE = 11  # root name, type, class, TTL, empty rdata
_HEAD_QUERY_ONE = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0
_PLAIN_QUERY = _HEAD_QUERY_ONE + b"\x00\x00"  # ... and no additional records
_EDNS_QUERY = _HEAD_QUERY_ONE + b"\x00\x01"  # ... and one (an OPT, hopefully)
BARE_OPTS_MAX = 1024  # distinct option-less OPT records remembered
_OPT_TYPE = b"\x00\x29"
_OPT_HEAD = b"\x00" + _OPT_TYPE  # root owner name, type OPT
DO_BIT = 0x80  # in the high byte of the OPT TTL's flags
_OPT_TAIL = bytes(6)  # extended rcode, version, flags, empty rdata
_OPT_TAIL_DO = bytes((0, 0, DO_BIT, 0, 0, 0))


class Edns:
    """The client's OPT record, reduced to what a response echoes (payload size, DO bit)."""

    __slots__ = ("payload", "do", "wire", "limit")

    def __init__(self, payload: int, do: bool) -> None:
        self.payload = payload
        self.do = do
        self.wire = _OPT_HEAD + payload.to_bytes(2, "big") + (_OPT_TAIL_DO if do
                                                                          else _OPT_TAIL)
        self.limit = max(UDP_MIN, payload)


@dataclass
class Pending:
    """A query whose answer needs an upstream: `forward` it whole, or `chase` a CNAME target."""

    query: dns.message.Message
    answer: Answer
    proto: str
    family: str
    started: float
    request_size: int


@dataclass(frozen=True)
class CachedAnswer:
    """Rendered sections for one question, plus the header bytes each RD/CD combination needs."""

    answer: Answer
    body: bytes
    heads: tuple[bytes, ...]       # index: RD | CD>>3; flags + 4 counts, no OPT
    heads_opt: tuple[bytes, ...]   # same with one more additional record (our OPT)
    qtype: str
    rcode: str
    plugin: str
    durations: list[float]  # the metrics histogram of this query type, updated in place


def _header_only(data: bytes, rcode: int) -> bytes:
    """A reply carrying just the header: ID, opcode and RD/CD copied, no sections."""
    return data[:2] + bytes(((data[2] & 0x79) | 0x80, (data[3] & 0x10) | rcode)) + bytes(8)


def render(qname: dns.name.Name, qtype: int, qclass: int, answer: Answer, *, msg_id: int,
           flags: int, limit: int, edns: Edns | None, truncated: bool = False) -> bytes:
    """Wire form of a response, cut to `limit` bytes the way miekg's Truncate cuts.

    flags: header bits besides AA/RA/TC/rcode (QR, opcode, RD, CD). Records are added
    in order until one does not fit; dropping any answer or authority record sets TC
    (dropping only additional records does not, RFC 2181 section 9). The OPT record
    always fits: its room is reserved first.
    """
    r = dns.renderer.Renderer(msg_id, 0, limit)
    if edns is not None:
        r.reserve(OPT_SIZE)
    r.add_question(qname, qtype, qclass)
    cut = False
    for section, rrsets in ((dns.renderer.ANSWER, answer.answer),
                            (dns.renderer.AUTHORITY, answer.authority),
                            (dns.renderer.ADDITIONAL, answer.additional)):
        for rrset in rrsets:
            if cut:
                break
            try:
                r.add_rrset(section, rrset)
                continue
            except dns.exception.TooBig:
                pass
            for rdata in rrset:
                one = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
                one.update_ttl(rrset.ttl)
                one.add(rdata)
                try:
                    r.add_rrset(section, one)
                except dns.exception.TooBig:
                    cut = True
                    truncated = truncated or section != dns.renderer.ADDITIONAL
                    break
    if edns is not None:
        r.release_reserved()
        r.add_edns(0, dns.flags.DO if edns.do else 0, edns.payload)
    r.flags = (dns.flags.QR | flags | answer.flags() | (dns.flags.TC if truncated else 0)
               | (answer.rcode & 0xF))
    r.write_header()
    return r.get_wire()


class Responder:
    """Turns query packets into response packets for one resolver.

    can_forward: upstreams exist, so answers marked forward/chase become Pending
    (the server completes them); without upstreams those answers are final.
    """

    def __init__(self, resolver: Resolver, metrics: DnsMetrics | None = None, *,
                 can_forward: bool = False, cache_size: int = 50_000) -> None:
        self.resolver = resolver
        self._index = resolver.index  # its version says when cached answers went stale
        self.metrics = metrics or DnsMetrics()
        self._raw = self.metrics.raw
        self.can_forward = can_forward
        self.cache_size = cache_size
        self._cache: dict[bytes, CachedAnswer] = {}
        # Option-less OPT records seen (11 bytes -> parsed), so the hot path skips parsing.
        self._bare_opts: dict[bytes, Edns] = {}
        self._version = -1

    def handle(self, data: bytes, proto: str = "udp", family: str = "1") -> bytes | Pending | None:
        """The reply for one query packet: bytes, Pending (needs upstream) or None (drop).

        Never raises: a failure inside is counted as a panic and answered SERVFAIL,
        as CoreDNS's recover does.
        """
        return self.resolve(data, proto, family)[0]

    def resolve(self, data: bytes, proto: str = "udp", family: str = "1"
                ) -> tuple[bytes | Pending | None, CachedAnswer | None]:
        """`handle`, plus the cached answer the reply was made from, if any.

        With one, the reply is a function of `data[2:]` and `proto` until the index
        changes (its ID is data[:2]), so a caller may keep the reply's bytes for equal
        queries and count them under that answer's labels.
        """
        started = time.perf_counter()
        try:
            # The common case inline: a plain query, without EDNS or with an option-less
            # OPT, whose answer is cached.
            if len(data) > 16 and not data[2] & 0xF8 and self._version == self._index.version:
                counts = data[4:12]
                if counts == _PLAIN_QUERY:
                    qend, edns = len(data), None
                elif counts == _EDNS_QUERY:
                    qend, edns = len(data) - OPT_SIZE, self._bare_opts.get(data[-OPT_SIZE:])
                else:
                    qend = 0
                cached = self._cache.get(data[12:qend - 4].lower() + data[qend - 4:qend]) \
                    if qend > 16 and (edns is not None or qend == len(data)) else None
                if cached is not None:
                    variant = (data[2] & 1) | ((data[3] & 0x10) >> 3)
                    if edns is None:
                        reply = data[:2] + cached.heads[variant] + data[12:] + cached.body
                        limit = UDP_MIN
                    else:
                        reply = (data[:2] + cached.heads_opt[variant] + data[12:qend]
                                 + cached.body + edns.wire)
                        limit = edns.limit
                    if len(reply) <= limit or proto == "tcp":
                        # DnsMetrics.observe, inlined: the call alone costs more than counting.
                        elapsed = time.perf_counter() - started
                        hist = cached.durations
                        hist[0 if elapsed < FIRST_TIME_BUCKET
                             else bisect_left(TIME_BUCKETS, elapsed)] += 1
                        hist[-1] += elapsed
                        raw = self._raw
                        key = (proto, family, cached.qtype, cached.rcode, cached.plugin,
                               len(data), len(reply))
                        raw[key] = raw.get(key, 0) + 1
                        if len(raw) > DnsMetrics.FOLD_AT:
                            self.metrics.fold()
                        return reply, cached
            return self._handle(data, proto, family, started)
        except Exception:
            log.exception("DNS handler failed on a %d-byte packet", len(data))
            self.metrics.panic()
            return (_header_only(data, dns.rcode.SERVFAIL) if len(data) >= 12 else None), None

    def _handle(self, data: bytes, proto: str, family: str, started: float
                ) -> tuple[bytes | Pending | None, CachedAnswer | None]:
        size = len(data)
        if size < 12:
            self.metrics.bad_packet("short_header")
            return None, None
        if data[2] & 0x80:
            self.metrics.bad_packet("response_bit")
            return None, None
        if self._version != self.resolver.version:
            self._cache.clear()
            self._version = self.resolver.version
        if not data[2] & 0x78 and data[4:10] == _HEAD_QUERY_ONE:
            found = self._fast(data, proto, family, started)
            if found is not None:
                return found
        return self._slow(data, proto, family, started), None

    # -- fast path --------------------------------------------------------------

    def _fast(self, data: bytes, proto: str, family: str, started: float
              ) -> tuple[bytes, CachedAnswer] | None:
        arcount = data[10:12]
        if arcount == b"\x00\x00":
            qend, edns = len(data), None
        elif arcount == b"\x00\x01":
            if data[-11:-8] == _OPT_HEAD and data[-5] == 0 and data[-2:] == b"\x00\x00":
                qend = len(data) - OPT_SIZE  # an OPT without options, as most stubs send
                bare = _client_opt(data[-OPT_SIZE:])
                if bare is not None and len(self._bare_opts) < BARE_OPTS_MAX:
                    self._bare_opts[data[-OPT_SIZE:]] = bare
            else:
                qend = _name_end(data, 12) + 4
                if qend < 16:
                    return None
            edns = _client_opt(data[qend:])
            if edns is None:
                return None
        else:
            return None
        key = data[12:qend - 4].lower() + data[qend - 4:qend]
        cached = self._cache.get(key)
        if cached is None:
            cached = self._fill(data, qend, key)
            if cached is None:
                return None
        variant = (data[2] & 0x01) | ((data[3] & 0x10) >> 3)
        if edns is None:
            reply = data[:2] + cached.heads[variant] + data[12:qend] + cached.body
            limit = TCP_MAX if proto == "tcp" else UDP_MIN
        else:
            reply = data[:2] + cached.heads_opt[variant] + data[12:qend] + cached.body + edns.wire
            limit = TCP_MAX if proto == "tcp" else edns.limit
        if len(reply) > limit:
            qname = dns.name.from_wire(data, 12)[0]
            qtype, qclass = struct.unpack("!HH", data[qend - 4:qend])
            reply = render(qname, qtype, qclass, cached.answer,
                           msg_id=struct.unpack("!H", data[:2])[0],
                           flags=(data[2] & 0x01) << 8 | (data[3] & 0x10), limit=limit,
                           edns=edns)
        self.metrics.observe(proto, family, cached.qtype, cached.rcode, cached.plugin,
                             len(data), len(reply), time.perf_counter() - started)
        return reply, cached

    def _fill(self, data: bytes, qend: int, key: bytes) -> CachedAnswer | None:
        """Resolve an uncached question and cache its rendered sections; None if not cacheable."""
        if _name_end(data, 12) != qend - 4:
            return None
        qname = dns.name.from_wire(key, 0)[0]
        qtype, qclass = struct.unpack("!HH", key[-4:])
        answer = self.resolver.lookup(qname, qtype)
        if self.can_forward and not answer.cacheable:
            return None
        wire = render(qname, qtype, qclass, answer, msg_id=0, flags=0, limit=TCP_MAX, edns=None)
        flags, counts = wire[2:4], wire[4:12]
        with_opt = counts[:6] + struct.pack("!H", struct.unpack("!H", counts[6:])[0] + 1)
        heads, heads_opt = [], []
        for variant in range(4):
            rd_cd = bytes((flags[0] | (variant & 1), flags[1] | ((variant & 2) << 3)))
            heads.append(rd_cd + counts)
            heads_opt.append(rd_cd + with_opt)
        cached = CachedAnswer(answer, wire[12 + len(key):], tuple(heads), tuple(heads_opt),
                         type_label(qtype), rcode_label(answer.rcode), answer.plugin,
                         self.metrics.duration_histogram(type_label(qtype)))
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[key] = cached
        return cached

    # -- slow path --------------------------------------------------------------

    def _slow(self, data: bytes, proto: str, family: str, started: float
              ) -> bytes | Pending | None:
        opcode = (data[2] >> 3) & 0xF
        if opcode != dns.opcode.QUERY:
            self.metrics.bad_packet("notimp")
            return _header_only(data, dns.rcode.NOTIMP)
        qd, an, ns, ar = struct.unpack("!HHHH", data[4:12])
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            self.metrics.bad_packet("formerr")
            return _header_only(data, dns.rcode.FORMERR)
        try:
            query = dns.message.from_wire(data, ignore_trailing=True)
        except Exception:
            self.metrics.bad_packet("formerr")
            return _header_only(data, dns.rcode.FORMERR)
        question = query.question[0]
        limit = TCP_MAX if proto == "tcp" else UDP_MIN
        if query.edns > 0:  # BADVERS, from the resolver's message-level answer
            reply = self.resolver.answer(query).to_wire(max_size=limit)
            self._observe_query(proto, family, question.rdtype, dns.rcode.BADVERS, "",
                                len(data), len(reply), started)
            return reply
        answer = self.resolver.lookup(question.name, question.rdtype)
        if self.can_forward and not answer.cacheable:
            return Pending(query, answer, proto, family, started, len(data))
        return self._reply(query, question, answer, proto, family, started, len(data))

    def finish(self, pending: Pending, upstream: dns.message.Message | None) -> bytes:
        """The reply once the upstream answered (or not: None)."""
        query, answer = pending.query, pending.answer
        truncated = False
        if answer.forward:
            if upstream is None:
                answer = Answer(dns.rcode.SERVFAIL, plugin="forward")
            else:
                answer = Answer(upstream.rcode(), tuple(upstream.answer), tuple(upstream.authority),
                                tuple(upstream.additional),
                                authoritative=bool(upstream.flags & dns.flags.AA),
                                recursion_available=bool(upstream.flags & dns.flags.RA),
                                plugin="forward")
                truncated = bool(upstream.flags & dns.flags.TC)
        elif upstream is not None:
            answer = Answer(answer.rcode, answer.answer + tuple(upstream.answer), answer.authority,
                            answer.additional, authoritative=answer.authoritative,
                            recursion_available=answer.recursion_available, plugin=answer.plugin)
            truncated = bool(upstream.flags & dns.flags.TC)
        return self._reply(query, query.question[0], answer, pending.proto, pending.family,
                           pending.started, pending.request_size, truncated)

    def _reply(self, query: dns.message.Message, question: dns.rrset.RRset, answer: Answer,
               proto: str, family: str, started: float, request_size: int,
               truncated: bool = False) -> bytes:
        edns = Edns(query.payload, bool(query.ednsflags & dns.flags.DO)) if query.edns == 0 \
            else None
        limit = TCP_MAX if proto == "tcp" else (edns.limit if edns else UDP_MIN)
        reply = render(question.name, question.rdtype, question.rdclass, answer,
                       msg_id=query.id, flags=query.flags & (dns.flags.RD | dns.flags.CD),
                       limit=limit, edns=edns, truncated=truncated)
        self._observe_query(proto, family, question.rdtype, answer.rcode, answer.plugin,
                            request_size, len(reply), started)
        return reply

    def _observe_query(self, proto: str, family: str, qtype: int, rcode: int, plugin: str,
                       request_size: int, response_size: int, started: float) -> None:
        self.metrics.observe(proto, family, type_label(qtype), rcode_label(rcode), plugin,
                             request_size, response_size, time.perf_counter() - started)


def _name_end(data: bytes, offset: int) -> int:
    """Offset just past an uncompressed name of at most 255 bytes, or -1."""
    start = offset
    size = len(data)
    while offset < size:
        length = data[offset]
        if length == 0:
            return offset + 1 if offset + 1 - start <= 255 else -1
        if length > 63:
            return -1
        offset += length + 1
    return -1


def _client_opt(opt: bytes) -> Edns | None:
    """The client's EDNS when `opt` is exactly one version-0 OPT record at the root."""
    if len(opt) < OPT_SIZE or opt[:3] != _OPT_HEAD or opt[6] != 0:
        return None
    if len(opt) != OPT_SIZE + ((opt[9] << 8) | opt[10]):
        return None
    return Edns((opt[3] << 8) | opt[4], bool(opt[7] & DO_BIT))
