"""nftables mode: kube-proxy's `ip kube-proxy` table read from nft's JSON, and walked.

The tables are what `nft -j list table` printed for the renderer's output on each
node of the test lab (trace_data/nft-*.json), so the evaluator reads the kernel's
own spelling of kube-proxy's rules.
"""

from __future__ import annotations

import pytest

from netlab.trace import nft
from netlab.trace.hooks import evaluate_point
from netlab.trace.model import DropReason, FlowTuple, Verdict
from netlab.trace.netfilter import HookContext, Packet
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab

VIEW = trace_lab.view(proxy_mode="nftables")
W1 = "192.168.10.3"


def sim(src: str, dst: str, rulesets=None, **kw):  # type: ignore[no-untyped-def]
    port, proto = kw.pop("port", None), kw.pop("proto", None)
    return simulate(VIEW, rulesets or trace_lab.nft_rulesets(), resolve_source(VIEW, src),
                    resolve_destination(VIEW, dst, port=port, proto=proto), **kw)


def sim_iptables(src: str, dst: str, **kw):  # type: ignore[no-untyped-def]
    view = trace_lab.view()
    return simulate(view, trace_lab.rulesets(), resolve_source(view, src),
                    resolve_destination(view, dst, **kw))


def prerouting(dst: str, dport: int = 80, src: str = "10.244.1.2"):  # type: ignore[no-untyped-def]
    rules = trace_lab.nft_rulesets()["worker-1"]
    ctx = HookContext(lambda ip: ip == W1, "cni0", None, None)
    return evaluate_point(rules, "nat", "PREROUTING",
                          Packet(FlowTuple("tcp", src, 40000, dst, dport)), ctx)


def test_the_table_is_read_with_base_chains_maps_and_rule_texts_without_counters():
    table = trace_lab.nft_rulesets()["worker-1"].nft
    assert table is not None
    hooks = {c.name: (c.hook, c.kind, c.priority) for c in table.chains.values() if c.hook}
    assert hooks["nat-prerouting"] == ("prerouting", "nat", -100)
    assert hooks["filter-prerouting-pre-dnat"] == ("prerouting", "filter", -110)
    assert [c.name for c in table.base_chains("nat", "PREROUTING")] == [
        "filter-prerouting-pre-dnat", "nat-prerouting"]
    assert [c.name for c in table.base_chains("nat", "OUTPUT")] == [
        "filter-output-pre-dnat", "nat-output"]
    elements = {e.key: e.verdict for e in table.sets["service-ips"]}
    assert elements[("10.96.0.20", "tcp", "80")] == ("goto",
                                                     "service-SUSTUHLJ-default/web/tcp/http")
    services = table.chains["services"].rules[0]
    assert services.text == "ip daddr . meta l4proto . th dport vmap @service-ips"
    assert services.hit().table == nft.TABLE_LABEL


def test_a_clusterip_is_dnatted_in_the_endpoint_chain_kube_proxy_named():
    outcomes = prerouting("10.96.0.20")
    assert len(outcomes) == 1 and outcomes[0].nat == "DNAT"
    assert outcomes[0].packet.flow.destination == "10.244.2.2:8080"
    chains = [h.chain for h in outcomes[0].hits]
    assert chains == ["filter-prerouting-pre-dnat", "firewall-check", "nat-prerouting",
                      "services", "@service-ips", "service-SUSTUHLJ-default/web/tcp/http",
                      "endpoint-AAOQDDFY-default/web/tcp/http__10.244.2.2/8080"]


def test_numgen_forks_into_every_endpoint_with_its_probability():
    outcomes = prerouting("10.96.0.21")
    assert sorted((o.packet.flow.destination, o.probability) for o in outcomes) == [
        ("10.244.2.2:8080", 0.5), ("10.244.2.3:8080", 0.5)]


def test_a_packet_for_no_service_passes_the_map_lookups_untouched():
    outcomes = prerouting("10.244.2.2", 8080)
    assert len(outcomes) == 1 and outcomes[0].nat is None and outcomes[0].verdict == "ACCEPT"


def test_clusterip_trace_names_the_nft_chain_the_service_and_its_endpoint():
    t = sim("a", "web")
    assert t.dnat is not None and t.dnat.stage == "netfilter:nat/PREROUTING"
    assert t.dnat.match == ("DNAT 10.96.0.20:80 -> 10.244.2.2:8080 "
                            "(endpoint-AAOQDDFY-default/web/tcp/http__10.244.2.2/8080)")
    ref = t.dnat.k8s_ref
    assert ref is not None
    assert (ref.service, ref.port_name, ref.endpointslice, ref.pod) == (
        "default/web", "http", "web-abcde", "default/c")
    assert any(r.rule.startswith("service-SUSTUHLJ-default/web/tcp/http: numgen random mod 1")
               for r in t.dnat.rules)


@pytest.mark.parametrize(("src", "dst"), [
    ("a", "web"), ("a", "c"), ("a", "b"), ("ext", "worker-1:30080"), ("a", "self"),
    ("worker-1", "web"), ("a", "kube-system/kube-dns"), ("ext", "worker-2:30081"),
])
def test_both_proxy_modes_change_the_packet_the_same_way(src: str, dst: str):
    port = "dns" if "dns" in dst else None
    assert sim(src, dst, port=port).minimal == sim_iptables(src, dst, port=port).minimal


def test_nodeport_from_outside_is_masqueraded_by_the_masquerading_chain():
    t = sim("ext", "worker-1:30080")
    assert t.verdict == Verdict.DELIVERED
    assert t.snat is not None and t.snat.match == "MASQUERADE 192.168.10.100 -> 10.244.1.0 " \
                                                  "(masquerading)"
    assert t.dnat is not None and t.dnat.k8s_ref.service == "default/np"


def test_service_without_endpoints_is_rejected_through_the_no_endpoint_map():
    t = sim("a", "empty")
    assert t.verdict == Verdict.REJECTED and t.drop_reason == DropReason.NO_ENDPOINTS
    hop = t.hops[-1]
    assert hop.stage == "netfilter:filter/FORWARD"
    assert hop.match == ('@no-endpoint-services: 10.96.0.23 . tcp . 80 comment '
                         '"default/empty:http" : goto reject-chain')
    assert hop.k8s_ref is not None and hop.k8s_ref.service == "default/empty"
    assert "default/empty:http has no endpoints" in t.reason


def test_etp_local_without_a_local_endpoint_is_dropped_with_the_reason():
    t = sim("ext", "worker-1:30081")
    assert t.verdict == Verdict.DROPPED
    assert t.drop_reason == DropReason.NO_LOCAL_ENDPOINTS
    assert t.hops[-1].stage == "netfilter:filter/INPUT"
    assert "default/local:http has no local endpoints" in t.reason


def test_a_client_in_an_affinity_set_is_pinned_to_that_endpoint():
    rulesets = trace_lab.nft_rulesets()
    table = rulesets["worker-1"].nft
    assert table is not None
    pinned = next(n for n in table.sets if n.startswith("affinity-") and "10.244.2.3" in n)
    table.sets[pinned] = [nft.NftElement(("10.244.1.2",), expires=300)]
    t = sim("a", "sticky", rulesets)
    assert t.dnat is not None and t.dnat.after.dst == "10.244.2.3"
    assert t.dnat.alternatives == ()  # numgen is never reached: no other endpoint possible
    assert any("10.244.1.2 is pinned to 10.244.2.3:8080" in n for n in t.notes)
    assert nft.affinity_entries(table)[pinned] == frozenset({"10.244.1.2"})


def test_an_unpinned_client_gets_a_random_endpoint_and_is_pinned_by_it():
    t = sim("a", "sticky")
    assert t.dnat is not None
    assert [(a.endpoint, a.probability) for a in t.dnat.alternatives] == [
        ("10.244.2.3:8080", 0.5)]
    assert any("this connection pins 10.244.1.2 to 10.244.2.2:8080" in n for n in t.notes)


def test_counters_are_keyed_by_chain_and_handle():
    items = [{"rule": {"chain": "services", "handle": 53, "expr": [
        {"counter": {"packets": 3, "bytes": 180}}, {"accept": None}]}}]
    assert nft.counters(items) == {(nft.TABLE_LABEL, "services", 53): 3}


def test_statements_it_does_not_know_are_named_in_the_notes():
    table = nft.parse_table([
        {"chain": {"name": "filter-input", "hook": "input", "type": "filter", "prio": 0,
                   "policy": "accept"}},
        {"rule": {"chain": "filter-input", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
            {"drop": None}]}},
        {"rule": {"chain": "filter-input", "handle": 3, "expr": [{"log": {}}]}},
    ])
    outcome = nft.evaluate_chain(table, table.chains["filter-input"],
                                 Packet(FlowTuple("tcp", "1.1.1.1", 1, "2.2.2.2", 2)),
                                 HookContext(lambda ip: False))[0]
    assert outcome.verdict == "ACCEPT"
    assert any("osf" in n for n in outcome.notes)
    assert any("statement log" in n for n in outcome.notes)
