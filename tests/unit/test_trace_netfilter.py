"""The iptables reader and evaluator behind every netfilter hop of a trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.trace.model import FlowTuple
from netlab.trace.netfilter import HookContext, Packet, evaluate, parse_save
from netlab.trace.observe import parse_recent
from tests.unit import trace_lab

SAVE = (Path(__file__).parent / "trace_data" / "kube-nat.save").read_text()


def ctx(local: tuple[str, ...] = ("192.168.10.3",), masq: str | None = None,
        out: str | None = None) -> HookContext:
    return HookContext(lambda ip: ip in local, "cni0", out, masq)


def flow(src: str = "10.244.1.5", dst: str = "10.96.0.50", dport: int = 80) -> FlowTuple:
    return FlowTuple("tcp", src, 40000, dst, dport)


def test_save_text_is_read_with_policies_counters_and_rule_positions():
    rules = parse_save(SAVE)
    prerouting = rules.chain("nat", "PREROUTING")
    assert prerouting is not None and prerouting.policy == "ACCEPT"
    assert prerouting.rules[0].counters == (5, 300)
    assert prerouting.rules[0].comment == "kubernetes service portals"
    svc = rules.chain("nat", "KUBE-SVC-X")
    assert svc is not None and svc.policy is None
    assert [r.position for r in svc.rules] == [1, 2, 3]


def test_random_endpoint_rules_fork_into_every_endpoint_with_its_probability():
    outcomes = evaluate(parse_save(SAVE), "nat", "PREROUTING", Packet(flow()), ctx())
    assert sorted((o.packet.flow.destination, o.probability) for o in outcomes) == [
        ("10.244.1.2:8080", 0.5), ("10.244.2.2:8080", 0.5)]
    first = next(o for o in outcomes if o.packet.flow.dst == "10.244.1.2")
    assert first.nat == "DNAT"
    assert [h.chain for h in first.hits] == ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-X",
                                             "KUBE-SEP-A"]


def test_traffic_from_outside_the_cluster_cidr_is_marked_for_masquerade():
    outcomes = evaluate(parse_save(SAVE), "nat", "PREROUTING",
                        Packet(flow(src="192.168.10.100")), ctx())
    assert all(o.packet.mark & 0x4000 for o in outcomes)
    after = outcomes[0].packet
    post = evaluate(parse_save(SAVE), "nat", "POSTROUTING", after,
                    ctx(masq="10.244.1.0", out="flannel.1"))
    assert post[0].nat == "MASQUERADE"
    assert post[0].packet.flow.src == "10.244.1.0"


def test_unmarked_packets_return_from_kube_postrouting_unchanged():
    post = evaluate(parse_save(SAVE), "nat", "POSTROUTING", Packet(flow()), ctx(masq="x"))
    assert post[0].nat is None and post[0].verdict == "ACCEPT"
    assert post[0].packet.flow == flow()


def test_a_packet_for_another_address_matches_no_service_rule():
    outcomes = evaluate(parse_save(SAVE), "nat", "PREROUTING",
                        Packet(flow(dst="10.244.2.2", dport=8080)), ctx())
    assert len(outcomes) == 1 and outcomes[0].nat is None
    assert [h.chain for h in outcomes[0].hits] == ["PREROUTING"]


def test_hairpin_source_is_marked_in_its_own_endpoint_chain():
    outcomes = evaluate(parse_save(SAVE), "nat", "PREROUTING", Packet(flow(src="10.244.1.2")),
                        ctx())
    to_self = next(o for o in outcomes if o.packet.flow.dst == "10.244.1.2")
    assert to_self.packet.mark & 0x4000
    other = next(o for o in outcomes if o.packet.flow.dst == "10.244.2.2")
    assert not other.packet.mark & 0x4000


def test_restore_payloads_with_inserted_hooks_are_read_in_kernel_order():
    text = trace_lab.installed_rules("worker-1")
    forward = parse_save(text).chain("filter", "FORWARD")
    assert forward is not None
    assert forward.rules[0].target == "KUBE-PROXY-FIREWALL"  # inserted last, so first
    assert forward.rules[-1].target == "FLANNEL-FWD"


def test_no_endpoints_service_is_rejected_in_filter_forward():
    rules = parse_save(trace_lab.installed_rules("worker-1"))
    outcomes = evaluate(rules, "filter", "FORWARD",
                        Packet(flow(dst="10.96.0.23", src="10.244.1.2")), ctx(out="eth0"))
    assert outcomes[0].verdict == "REJECT"
    assert outcomes[0].reject_with == "icmp-port-unreachable"
    assert "has no endpoints" in outcomes[0].hits[-1].comment


def test_unknown_matches_do_not_match_and_are_named_in_the_notes():
    text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m physdev --physdev-in veth1 -j DROP\nCOMMIT\n"
    outcome = evaluate(parse_save(text), "filter", "INPUT", Packet(flow()), ctx())[0]
    assert outcome.verdict == "ACCEPT"
    assert any("physdev" in n for n in outcome.notes)


@pytest.mark.parametrize(("spec", "mark", "expected"), [
    ("--set-xmark 0x4000/0x4000", 0, 0x4000),
    ("--set-xmark 0x4000/0x0", 0x4000, 0),
    ("--or-mark 0x4000", 0x1, 0x4001),
    ("--xor-mark 0x4000", 0x4001, 0x1),
])
def test_mark_targets_change_the_mark_as_the_kernel_does(spec: str, mark: int, expected: int):
    text = f"*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j MARK {spec}\nCOMMIT\n"
    outcome = evaluate(parse_save(text), "nat", "OUTPUT", Packet(flow(), mark=mark), ctx())[0]
    assert outcome.packet.mark == expected


def _sticky(recent: dict[str, dict[str, float]]):  # type: ignore[no-untyped-def]
    rules = parse_save(trace_lab.installed_rules("worker-1"))
    rules.recent = recent
    context = HookContext(lambda ip: ip == "192.168.10.3", "cni0", None, None, rules.recent)
    return evaluate(rules, "nat", "PREROUTING",
                    Packet(flow(src="10.244.1.2", dst="10.96.0.26")), context)


def _recent_list(endpoint: str) -> str:
    """The xt_recent list kube-proxy names after the endpoint's KUBE-SEP chain."""
    rules = parse_save(trace_lab.installed_rules("worker-1"))
    return next(c.values[0] for r in rules.rules() for c in r.conds
                if c.module == "recent" and c.key == "name" and endpoint in r.comment)


def test_session_affinity_without_a_recent_entry_picks_at_random_and_pins_the_client():
    outcomes = _sticky({})
    assert sorted((o.packet.flow.dst, o.probability) for o in outcomes) == [
        ("10.244.2.2", 0.5), ("10.244.2.3", 0.5)]
    assert all(any("this connection pins 10.244.1.2" in n for n in o.notes) for o in outcomes)


def test_session_affinity_pins_a_client_seen_within_the_timeout_to_its_endpoint():
    pinned = _recent_list("10.244.2.3:8080")
    outcomes = _sticky({pinned: {"10.244.1.2": 30.0}})
    assert [(o.packet.flow.dst, o.probability) for o in outcomes] == [("10.244.2.3", 1.0)]
    assert any(f"pinned by recent list {pinned} (seen 30s ago, timeout 600s)" in n
               for n in outcomes[0].notes)


def test_a_recent_entry_older_than_the_affinity_timeout_no_longer_pins():
    outcomes = _sticky({_recent_list("10.244.2.3:8080"): {"10.244.1.2": 601.0}})
    assert len(outcomes) == 2


def test_recent_lists_are_read_with_each_address_age():
    text = ("src=10.244.1.2 ttl: 64 last_seen: 4295000500 oldest_pkt: 2 4294990000, "
            "4295000500\nsrc=10.244.1.9 ttl: 64 last_seen: 4295000000 oldest_pkt: 1 "
            "4295000000\n")
    assert parse_recent(text, 4295001000, 250) == {"10.244.1.2": 2.0, "10.244.1.9": 4.0}
    assert parse_recent(text, None, 250) == {"10.244.1.2": 0.0, "10.244.1.9": 0.0}
