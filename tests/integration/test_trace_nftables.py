"""Live traces on a lab whose kube-proxy runs in nftables mode, each against its simulated twin.

The hops name kube-proxy's nftables objects (the `ip kube-proxy` table, its
`service-…`/`endpoint-…` chains and verdict maps), the rules hit are confirmed by
the table's counters, and the packet's fate is the same as in iptables mode.
"""

from __future__ import annotations

import re

import pytest

from netlab.trace.model import DropReason, Verdict
from netlab.trace.nft import TABLE_LABEL
from tests.integration.labs import lab_data
from tests.integration.trace_checks import (
    agrees_with_model,
    answer_is_un_natted,
    cluster_ip,
    session_affinity_pins_the_chosen_endpoint,
)
from tests.integration.trace_manifests import manifests

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

netlab_lab = {**lab_data("trc-nft"), "proxy": {"mode": "nftables"}}
netlab_manifests = manifests()


def test_clusterip_dnat_names_kube_proxys_nft_chain_service_and_endpoint(trace, lab):
    t = trace("client", "web", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.stage == "netfilter:nat/PREROUTING"
    server = lab.pod_ip("server")
    assert t.dnat.after.destination == f"{server}:8080"
    vip = cluster_ip(lab, "web")
    assert re.fullmatch(rf"DNAT {vip}:80 -> {server}:8080 "
                        rf"\(endpoint-[A-Z2-7]{{8}}-default/web/tcp/http__{server}/8080\)",
                        t.dnat.match), t.dnat.match
    ref = t.dnat.k8s_ref
    assert (ref.service, ref.port_name, ref.pod) == ("default/web", "http", "default/server")
    dnat_rule = next(r for r in t.dnat.rules if "dnat to" in r.rule)
    assert dnat_rule.table == TABLE_LABEL and dnat_rule.counter  # the nft counter moved
    assert any(r.chain == "@service-ips" for r in t.dnat.rules)
    assert "DST_NAT" in t.dnat.conntrack.status
    answer_is_un_natted(t, ["un-DNAT"], f"{vip}:80")
    agrees_with_model(t)


def test_external_client_to_nodeport_is_masqueraded_by_the_masquerading_chain(trace, lab):
    t = trace("ext", "worker-1:30080", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.k8s_ref.service == "default/web-np"
    assert t.snat is not None and t.snat.match.endswith("(masquerading)")
    assert t.source_seen_by_server == "10.244.1.0"
    answer_is_un_natted(t, ["un-SNAT", "un-DNAT"], f"{lab.node_ip('worker-1')}:30080")
    agrees_with_model(t)


def test_service_without_endpoints_is_rejected_by_the_no_endpoint_map(trace):
    t = trace("client", "empty", mode="diff")
    assert t.verdict == Verdict.REJECTED and t.drop_reason == DropReason.NO_ENDPOINTS
    assert t.hops[-1].match.startswith("@no-endpoint-services: ")
    assert "default/empty:http has no endpoints" in t.reason
    assert any("ICMP port-unreachable" in n for n in t.notes)
    assert t.reply_verdict is None
    agrees_with_model(t)


def test_etp_local_nodeport_without_local_endpoint_is_dropped_with_the_reason(trace):
    t = trace("ext", "worker-1:30081", mode="diff", timeout=1.0)
    assert t.verdict == Verdict.DROPPED
    assert t.drop_reason == DropReason.NO_LOCAL_ENDPOINTS
    assert "default/web-local:http has no local endpoints" in t.reason
    agrees_with_model(t)


def test_pod_reaches_itself_through_its_service_by_hairpin(trace, lab):
    t = trace("client", "loopback", mode="diff")
    assert t.delivered_to == "pod default/client"
    assert t.snat is not None and t.snat.after.src == "10.244.1.1"
    answer_is_un_natted(t, ["un-SNAT", "un-DNAT"], f"{cluster_ip(lab, 'loopback')}:80")
    agrees_with_model(t)


def test_dns_query_goes_through_kube_dns(trace):
    t = trace("client", "kube-system/kube-dns", port="dns", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.k8s_ref.service == "kube-system/kube-dns"
    assert any("dns reply" in n for n in t.notes)
    agrees_with_model(t)


def test_session_affinity_pins_the_endpoint_already_chosen(trace, lab):
    session_affinity_pins_the_chosen_endpoint(trace, lab)
