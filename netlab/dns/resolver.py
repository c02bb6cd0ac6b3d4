"""DNS questions -> answers from the record index, as CoreDNS's kubernetes plugin gives them.

`Resolver.lookup(qname, qtype)` decides rcode and sections the way handler.go and
plugin/backend_lookup.go do (A/AAAA with CNAME chasing, SRV weights, PTR, NS, SOA,
TXT dns-version, NXDOMAIN vs NODATA, SERVFAIL before the first sync, REFUSED for
zone transfers). `Resolver.answer(query)` wraps that in a full dnspython message
(header checks, EDNS echo). Owner names are the query name as the client spelled
it, so case is preserved; targets carry the query's spelling of the zone.

Names outside the served zones, and reverse-zone misses (the stock Corefile's
`fallthrough in-addr.arpa ip6.arpa`), come back marked `forward`: the server sends
them upstream when it has upstreams, else answers SERVFAIL as CoreDNS does when no
plugin follows the kubernetes plugin.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from netlab.dns.records import Entry, NameError_, RecordIndex

IN = dns.rdataclass.IN
A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.NS,
    dns.rdatatype.PTR, dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.TXT)
ZONE_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
SCHEMA_VERSION = b"1.1.0"
SCHEMA_TTL = 28800  # CoreDNS hard-codes it for dns-version, whatever its ttl option says
MAX_CNAME_CHAIN = 7  # backend_lookup.go stops following once more than 7 are behind it
PLUGIN = "kubernetes"

Record = tuple[dns.name.Name, int, dns.rdata.Rdata]  # owner, TTL, data


@dataclass(frozen=True)
class ResolverConfig:
    """What the Corefile's kubernetes block says, in kubeadm's flavour.

    zone: the cluster domain.
    ttl: TTL of every answer (kubeadm writes `ttl 30`); SOA minimum too.
    reverse_zones: reverse zones answered from ClusterIPs and endpoints.
    fallthrough_reverse: misses in the reverse zones go upstream, as in kubeadm.
    local_ips: this server's own (pod) IPs, to find the Service it backs for NS.
    """

    zone: str = "cluster.local"
    ttl: int = 30
    reverse_zones: tuple[str, ...] = ("in-addr.arpa", "ip6.arpa")
    fallthrough_reverse: bool = True
    local_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """A decided response, before it meets a particular query's header.

    forward: the name is not ours: upstreams should answer it (SERVFAIL without any).
    chase: a CNAME target outside the cluster zone whose records an upstream may add.
    plugin: which part wrote it, for coredns_dns_responses_total{plugin}.
    """

    rcode: int
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    authoritative: bool = False
    recursion_available: bool = False
    plugin: str = ""
    forward: bool = False
    chase: dns.name.Name | None = None

    @property
    def cacheable(self) -> bool:
        """Depends only on (qname, qtype) and the index: safe to reuse until the index changes."""
        return not self.forward and self.chase is None

    def flags(self) -> int:
        return ((dns.flags.AA if self.authoritative else 0)
                | (dns.flags.RA if self.recursion_available else 0))


@dataclass(frozen=True)
class _Where:
    """A query name placed in one of our zones."""

    zone: dns.name.Name        # the zone as the query spells it
    rel: tuple[str, ...]       # lowercase labels below the zone
    reverse: bool
    fallthrough: bool


def host_family(host: str) -> tuple[int, str] | None:
    """(A or AAAA, address text) for an IP, None for a name (Go's To4 rule: v4-mapped is A)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return A, str(ip.ipv4_mapped)
        return AAAA, str(ip)
    return A, str(ip)


def address_from_reverse(name: dns.name.Name) -> str | None:
    """The IP a full reverse name spells (4 labels in-addr.arpa, 32 nibbles ip6.arpa)."""
    labels = [label.decode("latin-1").lower() for label in name.labels[:-1]]
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = labels[:32]
            if all(len(n) == 1 for n in nibbles):
                digits = "".join(reversed(nibbles))
                groups = ":".join(digits[i:i + 4] for i in range(0, 32, 4))
                return str(ipaddress.IPv6Address(groups))
    except ValueError:
        return None
    return None


def _name(labels: tuple[str, ...], zone: dns.name.Name) -> dns.name.Name:
    return dns.name.Name([label.encode() for label in labels] + list(zone.labels))


def _address(owner: dns.name.Name, ttl: int, rdtype: int, ip: str) -> Record:
    if rdtype == A:
        return owner, ttl, dns.rdtypes.IN.A.A(IN, A, ip)
    return owner, ttl, dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, ip)


def group(records: list[Record]) -> tuple[dns.rrset.RRset, ...]:
    """RRsets in the order their first record came (CNAMEs stay before their targets)."""
    sets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
    for owner, ttl, rdata in records:
        key = (owner, rdata.rdtype)
        rrset = sets.get(key)
        if rrset is None:
            rrset = sets[key] = dns.rrset.RRset(owner, IN, rdata.rdtype)
            rrset.update_ttl(ttl)
        rrset.add(rdata)
    return tuple(sets.values())


class Resolver:
    """Answers for the cluster zone and the reverse zones from a RecordIndex."""

    def __init__(self, index: RecordIndex, config: ResolverConfig | None = None) -> None:
        self.index = index
        self.config = config or ResolverConfig()
        self.zone = dns.name.from_text(self.config.zone)
        zones = [(self.zone, False, False)]
        zones += [(dns.name.from_text(z), True, self.config.fallthrough_reverse)
                  for z in self.config.reverse_zones]
        # Longest first, so the most specific zone wins (plugin.Zones.Matches).
        self._zones = sorted(zones, key=lambda z: -len(z[0]))

    @property
    def version(self) -> int:
        """Changes whenever an answer may have changed (cache invalidation)."""
        return self.index.version

    # -- whole messages --------------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response CoreDNS would send for a parsed query (no upstream forwarding)."""
        response = dns.message.Message(query.id)
        response.flags = dns.flags.QR | (query.flags & (dns.flags.RD | dns.flags.CD))
        response.set_opcode(query.opcode())
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        response.question = list(query.question)
        if query.edns > 0:
            response.use_edns(0, 0, 512)
            response.set_rcode(dns.rcode.BADVERS)
            return response
        question = query.question[0]
        found = self.lookup(question.name, question.rdtype)
        response.flags |= found.flags()
        response.answer = list(found.answer)
        response.authority = list(found.authority)
        response.additional = list(found.additional)
        if query.edns == 0:
            response.use_edns(0, query.ednsflags & dns.flags.DO, query.payload)
        response.set_rcode(found.rcode)
        return response

    # -- one question ---------------------------------------------------------

    def lookup(self, qname: dns.name.Name, qtype: int) -> Answer:
        """Decide the response for one question; owner names are `qname` as given."""
        where = self._place(qname)
        if where is None:
            return Answer(dns.rcode.SERVFAIL, forward=True)
        if qtype in ZONE_TRANSFERS:
            return Answer(dns.rcode.REFUSED)
        chase = None
        extra: list[Record] = []
        try:
            if qtype in (A, AAAA):
                records, chase = self._addresses(where, qname, qtype, [])
            elif qtype == TXT:
                records = self._txt(where, qname)
            elif qtype == CNAME:
                records = self._cname(where, qname)
            elif qtype == PTR:
                records = self._ptr(where, qname)
            elif qtype == SRV:
                records, extra = self._srv(where, qname)
            elif qtype == SOA and not where.rel:
                records = [self._soa_record(where.zone)]
            elif qtype == NS and not where.rel:
                records, extra = self._ns(where, qname)
            elif qtype == dns.rdatatype.MX:
                self._entries(where, qtype)  # never mail: NODATA or NXDOMAIN
                records = []
            else:
                self._addresses(where, qname, A, [])  # existence decides NODATA vs NXDOMAIN
                records = []
        except NameError_:
            if where.fallthrough:
                return Answer(dns.rcode.SERVFAIL, forward=True)
            rcode = dns.rcode.NXDOMAIN if self.index.synced else dns.rcode.SERVFAIL
            return self._negative(where, rcode)
        if not records:
            return self._negative(where, dns.rcode.NOERROR)
        return Answer(dns.rcode.NOERROR, group(records), (), group(extra), authoritative=True,
                      recursion_available=True, plugin=PLUGIN, chase=chase)

    def _negative(self, where: _Where, rcode: int) -> Answer:
        return Answer(rcode, (), group([self._soa_record(where.zone)]), (),
                      authoritative=True, plugin=PLUGIN)

    def _place(self, qname: dns.name.Name) -> _Where | None:
        for zone, reverse, fallthrough in self._zones:
            if qname.is_subdomain(zone):
                depth = len(zone.labels)
                rel = tuple(label.decode("latin-1").lower() for label in qname.labels[:-depth])
                return _Where(dns.name.Name(qname.labels[-depth:]), rel, reverse, fallthrough)
        return None

    def _soa_record(self, zone: dns.name.Name) -> Record:
        ttl = self.config.ttl
        soa = dns.rdtypes.ANY.SOA.SOA(
            IN, SOA, _name(("ns", "dns"), zone), _name(("hostmaster",), zone),
            self.index.serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl)
        return zone, min(ttl, 300), soa

    # -- the backend (kubernetes.go Services/Records) -------------------------

    def _entries(self, where: _Where, qtype: int) -> list[Entry]:
        if where.rel == ("ns", "dns"):
            if qtype not in (A, AAAA):
                return []
            return [Entry(ip, -1, ()) for _, ip in self._nameservers(where)
                    if (fam := host_family(ip)) and fam[0] == qtype]
        if where.reverse:
            if where.rel in ((), ("svc",), ("pod",)):
                return []
            raise NameError_("reverse names only answer PTR")
        return self.index.find(where.rel)

    def _nameservers(self, where: _Where) -> list[tuple[dns.name.Name, str]]:
        found = self.index.nameservers(self.config.local_ips)
        if found:
            return [(_name(labels, where.zone), ip) for labels, ip in found]
        fallback = _name(("ns", "dns"), where.zone)
        return [(fallback, ip) for ip in self.config.local_ips]

    # -- per type (backend_lookup.go) -----------------------------------------

    def _addresses(self, where: _Where, qname: dns.name.Name, qtype: int,
                   previous: list[Record]) -> tuple[list[Record], dns.name.Name | None]:
        ttl = self.config.ttl
        records: list[Record] = []
        seen: set[str] = set()
        chase = None
        for entry in self._entries(where, qtype):
            family = host_family(entry.host)
            if family is not None:
                if family[0] == qtype and family[1] not in seen:
                    seen.add(family[1])
                    records.append(_address(qname, ttl, qtype, family[1]))
                continue
            try:
                target = dns.name.from_text(entry.host)
            except dns.exception.DNSException:
                continue
            if target == qname or len(previous) > MAX_CNAME_CHAIN:
                continue
            cname = (qname, ttl, dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, target))
            if any(p[0] == qname and p[2] == cname[2] for p in previous):
                continue
            if target.is_subdomain(where.zone):
                inner = self._place(target)
                if inner is None:
                    continue
                try:
                    more, more_chase = self._addresses(inner, target, qtype, [*previous, cname])
                except NameError_:
                    continue
                if more:
                    records += [cname, *more]
                    chase = chase or more_chase
                continue
            records.append(cname)
            chase = target
        return records, chase

    def _txt(self, where: _Where, qname: dns.name.Name) -> list[Record]:
        if where.rel != ("dns-version",):
            return []  # CoreDNS: every other TXT question in its zones is NODATA
        return [(qname, SCHEMA_TTL, dns.rdtypes.ANY.TXT.TXT(IN, TXT, [SCHEMA_VERSION]))]

    def _cname(self, where: _Where, qname: dns.name.Name) -> list[Record]:
        entries = self._entries(where, CNAME)
        if not entries or host_family(entries[0].host) is not None:
            return []
        try:
            target = dns.name.from_text(entries[0].host)
        except dns.exception.DNSException:
            return []
        return [(qname, self.config.ttl, dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, target))]

    def _ptr(self, where: _Where, qname: dns.name.Name) -> list[Record]:
        ip = address_from_reverse(qname)
        if ip is None:
            self._entries(where, PTR)
            return []
        names = self.index.reverse(ip)
        if not names:
            raise NameError_("no service or endpoint has this IP")
        ttl = self.config.ttl
        return [(qname, ttl, dns.rdtypes.ANY.PTR.PTR(IN, PTR, _name(labels, self.zone)))
                for labels in names]

    def _srv(self, where: _Where, qname: dns.name.Name) -> tuple[list[Record], list[Record]]:
        entries = [e for e in self._entries(where, SRV) if host_family(e.host) is not None]
        if not entries:
            return [], []
        weight = max(1, 100 // len(entries))
        ttl = self.config.ttl
        records: list[Record] = []
        extra: list[Record] = []
        seen_srv: set[tuple[dns.name.Name, int]] = set()
        seen_addr: set[tuple[dns.name.Name, str]] = set()
        for entry in entries:
            if entry.port == -1:
                continue
            rdtype, ip = host_family(entry.host)  # type: ignore[misc]
            target = _name(entry.name, where.zone)
            if (target, entry.port) not in seen_srv:
                seen_srv.add((target, entry.port))
                records.append((qname, ttl, dns.rdtypes.IN.SRV.SRV(
                    IN, SRV, 0, weight, entry.port, target)))
            if (target, ip) not in seen_addr:
                seen_addr.add((target, ip))
                extra.append(_address(target, ttl, rdtype, ip))
        return records, extra

    def _ns(self, where: _Where, qname: dns.name.Name) -> tuple[list[Record], list[Record]]:
        ttl = self.config.ttl
        records: list[Record] = []
        extra: list[Record] = []
        for name, ip in self._nameservers(where):
            family = host_family(ip)
            if family is None:
                continue
            extra.append(_address(name, ttl, family[0], family[1]))
            if all(r[2].target != name for r in records):  # type: ignore[attr-defined]
                records.append((qname, ttl, dns.rdtypes.ANY.NS.NS(IN, NS, name)))
        return records, extra
