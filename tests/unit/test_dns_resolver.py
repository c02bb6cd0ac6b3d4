"""Whole answers as CoreDNS's kubernetes plugin gives them: rcodes, sections, TTLs, case."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from netlab.dns.records import RecordIndex, RecordOptions
from netlab.dns.resolver import Resolver, ResolverConfig, address_from_reverse
from tests.unit.dns_k8s_objects import endpoint, endpoint_slice, service

SERIAL = 1_700_000_000
SOA_TEXT = f"ns.dns.cluster.local. hostmaster.cluster.local. {SERIAL} 7200 1800 86400 30"


def build_index(**options: object) -> RecordIndex:
    idx = RecordIndex(RecordOptions(**options), clock=lambda: SERIAL)  # type: ignore[arg-type]
    idx.apply("Service", "ADDED", service("web", "prod", "10.96.0.20"))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("web", "prod", [
        endpoint("10.244.1.5", hostname="web-a")]))
    idx.apply("Service", "ADDED", service("v6", "prod", "fd00:10:96::6"))
    idx.apply("Service", "ADDED", service("dual", "prod", ips=["10.96.0.3", "fd00:10:96::3"]))
    idx.apply("Service", "ADDED", service("db", "prod", headless=True,
                                          ports=(("pg", 5432, "TCP"),)))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("db", "prod", [
        endpoint("10.244.1.7", hostname="db-0"), endpoint("10.244.2.8"),
        endpoint("10.244.2.9", ready=False), endpoint("10.244.3.1", hostname="dup"),
        endpoint("10.244.3.2", hostname="dup")], ports=(("pg", 5432, "TCP"),)))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("db", "prod", [
        endpoint("fd00::5")], ports=(("pg", 5432, "TCP"),), name="db-v6", family="IPv6"))
    idx.apply("Service", "ADDED", service("ext", "prod", external="db.example.org"))
    idx.apply("Service", "ADDED", service("alias", "prod",
                                          external="web.prod.svc.cluster.local"))
    idx.apply("Service", "ADDED", service("kube-dns", "kube-system", "10.96.0.10",
                                          ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("kube-dns", "kube-system", [
        endpoint("10.244.0.2")], ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))))
    idx.mark_synced()
    return idx


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(build_index(), ResolverConfig(local_ips=("10.244.0.2",)))


def ask(resolver: Resolver, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    return resolver.answer(dns.message.make_query(name, rdtype, **kw))  # type: ignore[arg-type]


def answers(msg: dns.message.Message) -> list[str]:
    return [line for rrset in msg.answer for line in rrset.to_text().splitlines()]


def additional(msg: dns.message.Message) -> list[str]:
    return [line for rrset in msg.additional for line in rrset.to_text().splitlines()]


def assert_negative(msg: dns.message.Message, rcode: int) -> None:
    assert msg.rcode() == rcode
    assert msg.answer == []
    assert msg.flags & dns.flags.AA
    assert [rr.to_text() for rr in msg.authority] == [f"cluster.local. 30 IN SOA {SOA_TEXT}"]


# -- positive answers ---------------------------------------------------------------


def test_clusterip_service_a_record(resolver: Resolver) -> None:
    msg = ask(resolver, "web.prod.svc.cluster.local")
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.RA
    assert answers(msg) == ["web.prod.svc.cluster.local. 30 IN A 10.96.0.20"]


def test_ipv6_service_aaaa_record(resolver: Resolver) -> None:
    assert answers(ask(resolver, "v6.prod.svc.cluster.local", "AAAA")) == [
        "v6.prod.svc.cluster.local. 30 IN AAAA fd00:10:96::6"]


def test_dual_stack_service_answers_each_family(resolver: Resolver) -> None:
    assert answers(ask(resolver, "dual.prod.svc.cluster.local")) == [
        "dual.prod.svc.cluster.local. 30 IN A 10.96.0.3"]
    assert answers(ask(resolver, "dual.prod.svc.cluster.local", "AAAA")) == [
        "dual.prod.svc.cluster.local. 30 IN AAAA fd00:10:96::3"]


def test_dual_stack_srv_has_one_record_weight_50_and_both_addresses(resolver: Resolver) -> None:
    msg = ask(resolver, "_http._tcp.dual.prod.svc.cluster.local", "SRV")
    assert answers(msg) == ["_http._tcp.dual.prod.svc.cluster.local. 30 IN SRV "
                            "0 50 80 dual.prod.svc.cluster.local."]
    assert additional(msg) == ["dual.prod.svc.cluster.local. 30 IN A 10.96.0.3",
                               "dual.prod.svc.cluster.local. 30 IN AAAA fd00:10:96::3"]


def test_clusterip_srv_targets_the_service_with_its_address_as_glue(resolver: Resolver) -> None:
    msg = ask(resolver, "_http._tcp.web.prod.svc.cluster.local", "SRV")
    assert answers(msg) == ["_http._tcp.web.prod.svc.cluster.local. 30 IN SRV "
                            "0 100 80 web.prod.svc.cluster.local."]
    assert additional(msg) == ["web.prod.svc.cluster.local. 30 IN A 10.96.0.20"]


def test_bare_service_srv_lists_every_port(resolver: Resolver) -> None:
    msg = ask(resolver, "kube-dns.kube-system.svc.cluster.local", "SRV")
    assert answers(msg) == ["kube-dns.kube-system.svc.cluster.local. 30 IN SRV "
                            "0 50 53 kube-dns.kube-system.svc.cluster.local."]


def test_headless_service_a_records_are_its_ready_endpoints(resolver: Resolver) -> None:
    msg = ask(resolver, "db.prod.svc.cluster.local")
    assert sorted(answers(msg)) == [f"db.prod.svc.cluster.local. 30 IN A {ip}" for ip in
                                    ("10.244.1.7", "10.244.2.8", "10.244.3.1", "10.244.3.2")]
    assert answers(ask(resolver, "db.prod.svc.cluster.local", "AAAA")) == [
        "db.prod.svc.cluster.local. 30 IN AAAA fd00::5"]


def test_headless_hostname_with_two_endpoints_gives_two_records(resolver: Resolver) -> None:
    assert sorted(answers(ask(resolver, "dup.db.prod.svc.cluster.local"))) == [
        "dup.db.prod.svc.cluster.local. 30 IN A 10.244.3.1",
        "dup.db.prod.svc.cluster.local. 30 IN A 10.244.3.2"]


def test_headless_srv_is_one_record_per_endpoint_with_weights_and_glue(resolver: Resolver) -> None:
    msg = ask(resolver, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    targets = ["db-0", "10-244-2-8", "dup", "fd00--5"]
    assert sorted(answers(msg)) == sorted(
        f"_pg._tcp.db.prod.svc.cluster.local. 30 IN SRV 0 20 5432 {t}.db.prod.svc.cluster.local."
        for t in targets)
    assert "fd00--5.db.prod.svc.cluster.local. 30 IN AAAA fd00::5" in additional(msg)
    assert "dup.db.prod.svc.cluster.local. 30 IN A 10.244.3.2" in additional(msg)


def test_not_ready_endpoint_is_not_published(resolver: Resolver) -> None:
    assert_negative(ask(resolver, "10-244-2-9.db.prod.svc.cluster.local"), dns.rcode.NXDOMAIN)


def test_publish_not_ready_addresses_publishes_it() -> None:
    idx = build_index()
    idx.apply("Service", "MODIFIED", service("db", "prod", headless=True,
                                             ports=(("pg", 5432, "TCP"),),
                                             publish_not_ready=True))
    msg = ask(Resolver(idx), "10-244-2-9.db.prod.svc.cluster.local")
    assert answers(msg) == ["10-244-2-9.db.prod.svc.cluster.local. 30 IN A 10.244.2.9"]


def test_external_name_cname_query_gives_just_the_cname(resolver: Resolver) -> None:
    msg = ask(resolver, "ext.prod.svc.cluster.local", "CNAME")
    assert answers(msg) == ["ext.prod.svc.cluster.local. 30 IN CNAME db.example.org."]


def test_external_name_a_query_gives_cname_and_asks_upstream_for_the_rest() -> None:
    idx = build_index()
    found = Resolver(idx).lookup(dns.name.from_text("ext.prod.svc.cluster.local"),
                                 dns.rdatatype.A)
    assert [rrset.to_text() for rrset in found.answer] == [
        "ext.prod.svc.cluster.local. 30 IN CNAME db.example.org."]
    assert found.chase == dns.name.from_text("db.example.org")


def test_external_name_pointing_inside_the_zone_is_resolved_internally(
        resolver: Resolver) -> None:
    assert answers(ask(resolver, "alias.prod.svc.cluster.local")) == [
        "alias.prod.svc.cluster.local. 30 IN CNAME web.prod.svc.cluster.local.",
        "web.prod.svc.cluster.local. 30 IN A 10.96.0.20"]


def test_external_name_srv_is_nodata(resolver: Resolver) -> None:
    assert_negative(ask(resolver, "ext.prod.svc.cluster.local", "SRV"), dns.rcode.NOERROR)


def test_ptr_of_cluster_ip_and_endpoints(resolver: Resolver) -> None:
    assert answers(ask(resolver, "20.0.96.10.in-addr.arpa", "PTR")) == [
        "20.0.96.10.in-addr.arpa. 30 IN PTR web.prod.svc.cluster.local."]
    assert answers(ask(resolver, "7.1.244.10.in-addr.arpa", "PTR")) == [
        "7.1.244.10.in-addr.arpa. 30 IN PTR db-0.db.prod.svc.cluster.local."]
    assert answers(ask(resolver, "8.2.244.10.in-addr.arpa", "PTR")) == [
        "8.2.244.10.in-addr.arpa. 30 IN PTR 10-244-2-8.db.prod.svc.cluster.local."]


def test_ptr_of_ipv6_cluster_ip_uses_full_nibble_names(resolver: Resolver) -> None:
    name = dns.reversename.from_address("fd00:10:96::6")
    assert answers(ask(resolver, name.to_text(), "PTR")) == [
        f"{name} 30 IN PTR v6.prod.svc.cluster.local."]


def test_ptr_for_unknown_ip_falls_through_to_upstream(resolver: Resolver) -> None:
    found = resolver.lookup(dns.name.from_text("1.2.0.192.in-addr.arpa"), dns.rdatatype.PTR)
    assert found.forward and found.rcode == dns.rcode.SERVFAIL


def test_dns_version_txt_has_fixed_ttl(resolver: Resolver) -> None:
    assert answers(ask(resolver, "dns-version.cluster.local", "TXT")) == [
        'dns-version.cluster.local. 28800 IN TXT "1.1.0"']


def test_pod_record_insecure_mode(resolver: Resolver) -> None:
    assert answers(ask(resolver, "10-244-9-9.prod.pod.cluster.local")) == [
        "10-244-9-9.prod.pod.cluster.local. 30 IN A 10.244.9.9"]


def test_soa_at_apex(resolver: Resolver) -> None:
    msg = ask(resolver, "cluster.local", "SOA")
    assert answers(msg) == [f"cluster.local. 30 IN SOA {SOA_TEXT}"]


def test_ns_at_apex_names_the_dns_service_with_its_cluster_ip_as_glue(resolver: Resolver) -> None:
    msg = ask(resolver, "cluster.local", "NS")
    assert answers(msg) == ["cluster.local. 30 IN NS kube-dns.kube-system.svc.cluster.local."]
    assert additional(msg) == ["kube-dns.kube-system.svc.cluster.local. 30 IN A 10.96.0.10"]


def test_ns_without_own_service_falls_back_to_ns_dns() -> None:
    resolver = Resolver(build_index(), ResolverConfig(local_ips=("127.0.0.1",)))
    msg = ask(resolver, "cluster.local", "NS")
    assert answers(msg) == ["cluster.local. 30 IN NS ns.dns.cluster.local."]
    assert answers(ask(resolver, "ns.dns.cluster.local")) == [
        "ns.dns.cluster.local. 30 IN A 127.0.0.1"]


# -- case ---------------------------------------------------------------------------


def test_answers_keep_the_query_spelling(resolver: Resolver) -> None:
    msg = ask(resolver, "WeB.PrOd.SvC.cLuStEr.LoCaL")
    assert answers(msg) == ["WeB.PrOd.SvC.cLuStEr.LoCaL. 30 IN A 10.96.0.20"]


def test_srv_targets_carry_the_query_spelling_of_the_zone(resolver: Resolver) -> None:
    msg = ask(resolver, "_HtTp._TcP.wEb.PrOd.SvC.cLuStEr.LoCaL", "SRV")
    assert answers(msg) == ["_HtTp._TcP.wEb.PrOd.SvC.cLuStEr.LoCaL. 30 IN SRV "
                            "0 100 80 web.prod.svc.cLuStEr.LoCaL."]


def test_negative_answers_carry_the_soa_of_the_query_spelled_zone(resolver: Resolver) -> None:
    msg = ask(resolver, "nope.prod.svc.ClUsTeR.lOcAl")
    assert msg.authority[0].name.to_text() == "ClUsTeR.lOcAl."


# -- NXDOMAIN vs NODATA (dns.md 1.10) -------------------------------------------------


@pytest.mark.parametrize(("name", "rdtype"), [
    ("web.prod.svc.cluster.local", "AAAA"),       # IPv4-only service
    ("v6.prod.svc.cluster.local", "A"),            # IPv6-only service
    ("web.prod.svc.cluster.local", "MX"),
    ("web.prod.svc.cluster.local", "HINFO"),
    ("web.prod.svc.cluster.local", "SOA"),          # SOA below the apex
    ("web.prod.svc.cluster.local", "NS"),           # NS below the apex
    ("web.prod.svc.cluster.local", "TYPE65280"),    # unknown type
    ("prod.svc.cluster.local", "A"),                # existing namespace
    ("prod.pod.cluster.local", "A"),
    ("svc.cluster.local", "A"),
    ("pod.cluster.local", "A"),
    ("cluster.local", "A"),                        # apex
    ("cluster.local", "SRV"),
    ("cluster.local", "HINFO"),
    ("nosuch.prod.svc.cluster.local", "TXT"),       # CoreDNS: TXT is NODATA off dns-version
])
def test_nodata(resolver: Resolver, name: str, rdtype: str) -> None:
    assert_negative(ask(resolver, name, rdtype), dns.rcode.NOERROR)


@pytest.mark.parametrize(("name", "rdtype"), [
    ("nosuch.prod.svc.cluster.local", "A"),
    ("nosuch.prod.svc.cluster.local", "AAAA"),
    ("web.nosuch.svc.cluster.local", "A"),          # namespace does not exist
    ("nosuch.svc.cluster.local", "A"),
    ("foo.cluster.local", "A"),                     # neither svc nor pod
    ("foo.cluster.local", "NS"),
    ("dns-version.cluster.local", "A"),
    ("bogus.db.prod.svc.cluster.local", "A"),       # unknown endpoint
    ("_http._udp.web.prod.svc.cluster.local", "SRV"),  # unknown protocol
    ("_nope._tcp.web.prod.svc.cluster.local", "SRV"),  # unknown port
    ("_tcp.web.prod.svc.cluster.local", "SRV"),     # empty non-terminal
    ("a.b.c.web.prod.svc.cluster.local", "A"),      # too many labels
    ("anything.ext.prod.svc.cluster.local", "CNAME"),  # below an ExternalName
    ("_http._tcp.ext.prod.svc.cluster.local", "SRV"),
    ("*.db.prod.svc.cluster.local", "A"),           # no wildcards since CoreDNS 1.9
    ("not-an-ip.prod.pod.cluster.local", "A"),
])
def test_nxdomain(resolver: Resolver, name: str, rdtype: str) -> None:
    assert_negative(ask(resolver, name, rdtype), dns.rcode.NXDOMAIN)


def test_headless_service_with_no_ready_endpoints_is_nxdomain() -> None:
    idx = build_index()
    idx.apply("Service", "ADDED", service("lonely", "prod", headless=True))
    assert_negative(ask(Resolver(idx), "lonely.prod.svc.cluster.local"), dns.rcode.NXDOMAIN)


def test_negative_answers_do_not_claim_recursion(resolver: Resolver) -> None:
    assert not ask(resolver, "nosuch.prod.svc.cluster.local").flags & dns.flags.RA


def test_missing_names_are_servfail_until_the_index_has_synced() -> None:
    resolver = Resolver(RecordIndex(clock=lambda: SERIAL))
    assert_negative(ask(resolver, "web.prod.svc.cluster.local"), dns.rcode.SERVFAIL)


# -- TTLs -----------------------------------------------------------------------------


def test_ttl_is_configurable_and_soa_ttl_is_capped_at_300() -> None:
    resolver = Resolver(build_index(), ResolverConfig(ttl=3600))
    assert ask(resolver, "web.prod.svc.cluster.local").answer[0].ttl == 3600
    soa = ask(resolver, "nosuch.prod.svc.cluster.local").authority[0]
    assert soa.ttl == 300 and soa[0].minimum == 3600


def test_soa_serial_follows_the_last_change() -> None:
    now = [SERIAL]
    idx = RecordIndex(clock=lambda: now[0])
    idx.mark_synced()
    resolver = Resolver(idx)
    now[0] = SERIAL + 60
    idx.apply("Service", "ADDED", service("late"))
    assert ask(resolver, "cluster.local", "SOA").answer[0][0].serial == SERIAL + 60


# -- outside the zones, transfers, headers -------------------------------------------


def test_names_outside_the_zone_are_servfail_without_upstreams(resolver: Resolver) -> None:
    msg = ask(resolver, "example.com")
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert not msg.flags & dns.flags.AA and msg.authority == []


def test_zone_transfers_are_refused(resolver: Resolver) -> None:
    assert ask(resolver, "cluster.local", "AXFR").rcode() == dns.rcode.REFUSED
    assert ask(resolver, "cluster.local", "IXFR").rcode() == dns.rcode.REFUSED


def test_rd_and_cd_are_copied_and_qr_set(resolver: Resolver) -> None:
    query = dns.message.make_query("web.prod.svc.cluster.local", "A")
    query.flags |= dns.flags.CD
    msg = resolver.answer(query)
    assert msg.id == query.id
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RD and msg.flags & dns.flags.CD


def test_edns_is_echoed_with_the_clients_payload_and_do_bit(resolver: Resolver) -> None:
    msg = ask(resolver, "web.prod.svc.cluster.local", use_edns=0, payload=1232,
              want_dnssec=True)
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert ask(resolver, "web.prod.svc.cluster.local", use_edns=False).edns == -1


def test_unknown_edns_version_is_badvers(resolver: Resolver) -> None:
    msg = ask(resolver, "web.prod.svc.cluster.local", use_edns=1)
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0


def test_other_opcodes_are_notimp(resolver: Resolver) -> None:
    query = dns.message.make_query("web.prod.svc.cluster.local", "A")
    query.set_opcode(dns.opcode.UPDATE)
    assert resolver.answer(query).rcode() == dns.rcode.NOTIMP


def test_two_questions_are_formerr(resolver: Resolver) -> None:
    query = dns.message.make_query("web.prod.svc.cluster.local", "A")
    query.question.append(dns.message.make_query("db.prod.svc.cluster.local", "A").question[0])
    assert resolver.answer(query).rcode() == dns.rcode.FORMERR


def test_address_from_reverse_accepts_only_full_reverse_names() -> None:
    assert address_from_reverse(dns.name.from_text("4.3.2.1.in-addr.arpa")) == "1.2.3.4"
    assert address_from_reverse(dns.name.from_text("3.2.1.in-addr.arpa")) is None
    assert address_from_reverse(dns.name.from_text("x.3.2.1.in-addr.arpa")) is None
    assert address_from_reverse(dns.reversename.from_address("fd00::1")) == "fd00::1"
