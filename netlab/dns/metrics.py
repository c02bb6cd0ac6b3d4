"""Prometheus metrics under CoreDNS's names, counted cheaply on the query path.

Dashboards and alerts written for CoreDNS (coredns_dns_requests_total and friends)
work unchanged against the lab's DNS. Counting goes into plain dicts and small
bucket arrays; the prometheus-client objects are built only when /metrics is
scraped, because labelled client metrics cost microseconds per update and the
query path answers tens of thousands of queries a second.

Each server owns its CollectorRegistry, so several servers (tests, several DNS
pods in one process) never collide in the global registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

import dns.rcode
import dns.rdatatype
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# plugin.TimeBuckets and plugin.SizeBuckets in CoreDNS.
TIME_BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)

# CoreDNS reports these query types by name and lumps the rest into "other".
_MONITORED = ("A", "AAAA", "MX", "SOA", "CNAME", "PTR", "TXT", "NS", "SRV", "DS", "DNSKEY",
              "RRSIG", "NSEC", "NSEC3", "HINFO", "IXFR", "AXFR", "ANY")
_TYPE_LABELS = {dns.rdatatype.from_text(t): t for t in _MONITORED}


def type_label(qtype: int) -> str:
    return _TYPE_LABELS.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    return dns.rcode.to_text(rcode)


class _Histogram:
    """Non-cumulative bucket counts plus sum; made cumulative at scrape time."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class DnsMetrics:
    """Counters of one DNS server, exposed through its own registry.

    server: the `server` label, CoreDNS style (`dns://:53`).
    zone: the `zone` label: the server block's zone (`.` for the stock one).

    `observe` only bumps one dict entry keyed by every label and both sizes (a
    given question has fixed sizes, so the keys stay few) plus a duration bucket;
    `fold` spreads those into the CoreDNS families at scrape time.
    """

    FOLD_AT = 50_000  # raw keys kept before folding early, so memory stays bounded

    def __init__(self, server: str = "dns://:53", zone: str = ".") -> None:
        self.server = server
        self.zone = zone
        # Public so the responder's cache-hit path can count inline (see Responder.handle).
        self.raw: dict[tuple[str, str, str, str, str, int, int], int] = {}
        self._durations: dict[str, list[float]] = {}  # bucket counts, then the sum
        self.requests: dict[tuple[str, str, str], int] = {}
        self.responses: dict[tuple[str, str], int] = {}
        self.request_sizes: dict[str, _Histogram] = {}
        self.response_sizes: dict[str, _Histogram] = {}
        self.bad_packets: dict[str, int] = {}
        self.panics = 0
        self._flushers: list[Callable[[], None]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, proto: str, family: str, qtype: str, rcode: str, plugin: str,
                request_size: int, response_size: int, seconds: float) -> None:
        """Count one answered query (labels already as CoreDNS spells them)."""
        key = (proto, family, qtype, rcode, plugin, request_size, response_size)
        raw = self.raw
        raw[key] = raw.get(key, 0) + 1
        hist = self.duration_histogram(qtype)
        hist[bisect_left(TIME_BUCKETS, seconds)] += 1
        hist[-1] += seconds
        if len(raw) > self.FOLD_AT:
            self.fold()

    def duration_histogram(self, qtype: str) -> list[float]:
        """The live bucket list for one query type: counts per TIME_BUCKETS slot, then the sum."""
        hist = self._durations.get(qtype)
        if hist is None:
            hist = self._durations[qtype] = [0] * (len(TIME_BUCKETS) + 1) + [0.0]
        return hist

    def add_flusher(self, flush: Callable[[], None]) -> None:
        """Have `flush` called before counts are read: it adds counts kept elsewhere to `raw`.

        For counters kept beside cached replies (one integer per hit) instead of here.
        """
        self._flushers.append(flush)

    def fold(self) -> None:
        """Move raw counts into the per-family aggregates (in place: holders keep `raw`)."""
        for flush in self._flushers:
            flush()
        raw = list(self.raw.items())
        self.raw.clear()
        for (proto, family, qtype, rcode, plugin, req, resp), n in raw:
            key = (proto, family, qtype)
            self.requests[key] = self.requests.get(key, 0) + n
            rkey = (rcode, plugin)
            self.responses[rkey] = self.responses.get(rkey, 0) + n
            for sizes, value in ((self.request_sizes, req), (self.response_sizes, resp)):
                hist = sizes.get(proto)
                if hist is None:
                    hist = sizes[proto] = _Histogram(SIZE_BUCKETS)
                hist.observe(value, n)

    def bad_packet(self, reason: str) -> None:
        """Count a packet answered FORMERR/NOTIMP or dropped (short_header, response_bit...)."""
        self.bad_packets[reason] = self.bad_packets.get(reason, 0) + 1

    def panic(self) -> None:
        """Count a handler exception (the query got SERVFAIL or nothing)."""
        self.panics += 1

    def total_requests(self) -> int:
        self.fold()
        return sum(self.requests.values())

    def exposition(self) -> bytes:
        """The text /metrics serves."""
        return generate_latest(self.registry)

    # prometheus-client collector protocol
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self.fold()
        durations = {}
        for qtype, raw in self._durations.items():
            hist = _Histogram(TIME_BUCKETS)
            hist.counts = [int(c) for c in raw[:-1]]
            hist.total = raw[-1]
            durations[qtype] = hist
        base = ["server", "zone", "view"]
        head = [self.server, self.zone, ""]
        m = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per zone, "
                                "protocol and family.", labels=[*base, "proto", "family", "type"])
        for (proto, family, qtype), n in sorted(self.requests.items()):
            m.add_metric([*head, proto, family, qtype], n)
        yield m
        m = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                labels=[*base, "rcode", "plugin"])
        for (rcode, plugin), n in sorted(self.responses.items()):
            m.add_metric([*head, rcode, plugin], n)
        yield m
        yield self._histograms("coredns_dns_request_duration_seconds", "Histogram of the time "
                               "(in seconds) each request took.", "type", durations)
        yield self._histograms("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP buffer "
                               "in bytes (64K for TCP).", "proto", self.request_sizes)
        yield self._histograms("coredns_dns_response_size_bytes", "Size of the returned "
                               "response in bytes.", "proto", self.response_sizes)
        m = CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics.")
        m.add_metric([], self.panics)
        yield m
        m = CounterMetricFamily("netlab_dns_bad_packets", "Packets answered FORMERR or NOTIMP, "
                                "or dropped, by reason.", labels=["server", "reason"])
        for reason, n in sorted(self.bad_packets.items()):
            m.add_metric([self.server, reason], n)
        yield m

    def _histograms(self, name: str, doc: str, label: str,
                    hists: dict[str, _Histogram]) -> HistogramMetricFamily:
        m = HistogramMetricFamily(name, doc, labels=["server", "zone", "view", label])
        for value, hist in sorted(hists.items()):
            m.add_metric([self.server, self.zone, "", value], hist.buckets(), hist.total)
        return m
