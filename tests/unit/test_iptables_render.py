"""The iptables payload, compared line by line with what kube-proxy writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netlab.proxy.changes import ChangeTracker
from netlab.proxy.iptables.render import JUMP_RULES, NodeConfig, jump_rules, render
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service, snapshot_of

# shared/ sits beside the checkout (as in CI and on developer machines).
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "kube-proxy.md"
NODE = NodeConfig("test-node", ("192.168.0.2", "192.168.1.2"), cluster_cidr="10.0.0.0/8")

# kube-proxy.md §1.16 A, verbatim.
PAYLOAD_A = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-LXVODXWDISEETFEF - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SEP-DYIZ4A36D4G6TM2U - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-LXVODXWDISEETFEF
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 30080 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade traffic for ns2/svc2:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.1.1:8080" -j KUBE-SEP-DYIZ4A36D4G6TM2U
-A KUBE-SEP-DYIZ4A36D4G6TM2U -m comment --comment ns2/svc2:p80 -s 10.180.1.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-DYIZ4A36D4G6TM2U -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.1:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""  # noqa: E501


def worked_example_objects() -> list[dict]:
    return [
        service("ns1", "svc1", "172.30.0.41", [port("p80", 80)]),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), endpoint("10.180.0.2")],
                       [("p80", 80, "TCP")]),
        service("ns2", "svc2", "172.30.0.42", [port("p80", 80, 8080, node_port=30080)],
                svc_type="NodePort", externalTrafficPolicy="Cluster"),
        endpoint_slice("ns2", "svc2", [endpoint("10.180.1.1")], [("p80", 8080, "TCP")]),
    ]


def rules_of(payload: str, chain: str) -> list[str]:
    return [line for line in payload.splitlines() if line.startswith(f"-A {chain} ")]


def chains_of(payload: str, table: str) -> list[str]:
    section = payload.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    return [line[1:].split()[0] for line in section.splitlines() if line.startswith(":")]


def test_worked_example_payload_matches_kube_proxy_exactly():
    result = render(snapshot_of("test-node", *worked_example_objects()), NODE)
    assert result.payload == PAYLOAD_A


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference notes not available")
def test_worked_example_is_the_one_in_the_reference_notes():
    text = REFERENCE.read_text()
    block = text.split("**A. The `iptables-restore --noflush --counters` payload", 1)[1]
    block = block.split("```\n", 1)[1].split("```", 1)[0]
    assert block == PAYLOAD_A


def overall_objects() -> list[dict]:
    """The services of upstream TestOverallIPTablesRules (kube-proxy.md §1.16 C)."""
    return [
        service("ns1", "svc1", "172.30.0.41", [port("p80", 80)]),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], [("p80", 80, "TCP")]),
        service("ns2", "svc2", "172.30.0.42", [port("p80", 80, node_port=3001)],
                svc_type="LoadBalancer", externalTrafficPolicy="Local",
                externalIPs=["192.168.99.22"], healthCheckNodePort=30000,
                status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        endpoint_slice("ns2", "svc2", [endpoint("10.180.0.2")], [("p80", 80, "TCP")]),
        service("ns3", "svc3", "172.30.0.43", [port("p80", 80, node_port=3003)],
                svc_type="NodePort"),
        endpoint_slice("ns3", "svc3", [endpoint("10.180.0.3")], [("p80", 80, "TCP")]),
        service("ns4", "svc4", "172.30.0.44", [port("p80", 80)], svc_type="NodePort",
                externalIPs=["192.168.99.33"]),
        endpoint_slice("ns4", "svc4", [endpoint("10.180.0.4"),
                                       endpoint("10.180.0.5", node="test-node")],
                       [("p80", 80, "TCP")]),
        service("ns5", "svc5", "172.30.0.45", [port("p80", 80, node_port=3002)],
                svc_type="LoadBalancer", sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}},
                loadBalancerSourceRanges=[" 203.0.113.0/25"],
                status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
        endpoint_slice("ns5", "svc5", [endpoint("10.180.0.3")], [("p80", 80, "TCP")]),
        service("ns6", "svc6", "172.30.0.46", [port("p80", 80)]),
    ]


def _grouped(payload: str) -> dict[str, tuple[set[str], dict[str, list[str]]]]:
    """Per table: the declared chains, and each chain's rules in order."""
    tables: dict[str, tuple[set[str], dict[str, list[str]]]] = {}
    current = ""
    for line in payload.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = (set(), {})
        elif line.startswith(":"):
            tables[current][0].add(line.split()[0][1:])
        elif line.startswith("-A "):
            tables[current][1].setdefault(line.split()[1], []).append(line)
    return tables


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference notes not available")
def test_overall_rules_match_upstream_overall_test():
    text = REFERENCE.read_text()
    block = text.split("**C. Upstream reference: `TestOverallIPTablesRules`**", 1)[1]
    expected = block.split("```\n", 1)[1].split("```", 1)[0]
    # Upstream ran with nfacct available; our labs have no nfacct.
    expected = "\n".join(line for line in expected.splitlines()
                         if "localhost_nps_accepted_pkts" not in line)
    expected = expected.replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "")
    node = NodeConfig("test-node", ("192.168.0.2",), cluster_cidr="10.0.0.0/8",
                      random_fully=False)
    payload = render(snapshot_of("test-node", *overall_objects()), node).payload
    payload = payload.replace("0x00004000", "0x4000")
    assert _grouped(payload) == _grouped(expected)


def test_nodeport_jumps_to_external_chain_which_masquerades():
    payload = render(snapshot_of("test-node", *worked_example_objects()), NODE).payload
    assert rules_of(payload, "KUBE-NODEPORTS") == [
        "-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 30080 "
        "-j KUBE-EXT-GNZBNJ2PO5MGZ6GT"]
    assert rules_of(payload, "KUBE-EXT-GNZBNJ2PO5MGZ6GT")[0].endswith("-j KUBE-MARK-MASQ")


def local_policy_service(local_ips: list[str], remote_ips: list[str], **spec) -> list[dict]:
    eps = [endpoint(ip, node="test-node") for ip in local_ips]
    eps += [endpoint(ip, node="other") for ip in remote_ips]
    return [service("ns", "web", "172.30.0.50", [port("http", 80, 8080, node_port=30050)],
                    svc_type="NodePort", **spec),
            endpoint_slice("ns", "web", eps, [("http", 8080, "TCP")])]


def test_external_policy_local_sends_outside_traffic_to_local_endpoints_only():
    objs = local_policy_service(["10.180.0.7"], ["10.180.1.7"], externalTrafficPolicy="Local")
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    svl = "KUBE-SVL-" + chains_of(payload, "nat")[4].split("-")[-1]
    ext = [c for c in chains_of(payload, "nat") if c.startswith("KUBE-EXT-")][0]
    svc = ext.replace("KUBE-EXT-", "KUBE-SVC-")
    assert rules_of(payload, ext) == [
        f'-A {ext} -m comment --comment "pod traffic for ns/web:http external destinations" '
        f"-s 10.0.0.0/8 -j {svc}",
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for ns/web:http external '
        'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {ext} -m comment --comment "route LOCAL traffic for ns/web:http external '
        f'destinations" -m addrtype --src-type LOCAL -j {svc}',
        f"-A {ext} -j {svl}",
    ]
    assert [r.split("-> ")[1].split('"')[0] for r in rules_of(payload, svl)] == [
        "10.180.0.7:8080"]
    assert len(rules_of(payload, svc)) == 3  # masq + both endpoints
    assert "has no local endpoints" not in payload


def test_external_policy_local_without_local_endpoints_drops_outside_traffic():
    objs = local_policy_service([], ["10.180.1.7"], externalTrafficPolicy="Local")
    result = render(snapshot_of("test-node", *objs), NODE)
    payload = result.payload
    ext = [c for c in chains_of(payload, "nat") if c.startswith("KUBE-EXT-")][0]
    assert not any(c.startswith("KUBE-SVL-") for c in chains_of(payload, "nat"))
    assert rules_of(payload, ext)[-1].endswith("-j " + ext.replace("EXT", "SVC"))
    assert rules_of(payload, "KUBE-EXTERNAL-SERVICES") == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web:http has no local endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30050 -j DROP"]
    assert result.no_local_external == 1 and result.no_local_internal == 0


def test_internal_policy_local_routes_cluster_ip_to_local_endpoints():
    objs = local_policy_service(["10.180.0.7"], ["10.180.1.7"], internalTrafficPolicy="Local")
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    services = rules_of(payload, "KUBE-SERVICES")
    assert services[0].startswith('-A KUBE-SERVICES -m comment --comment "ns/web:http cluster '
                                  'IP"')
    svl = services[0].split("-j ")[1]
    assert svl.startswith("KUBE-SVL-")
    svl_rules = rules_of(payload, svl)
    assert svl_rules[0].endswith("! -s 10.0.0.0/8 -j KUBE-MARK-MASQ")
    assert len(svl_rules) == 2


def test_internal_policy_local_without_local_endpoints_drops_cluster_ip_traffic():
    objs = local_policy_service([], ["10.180.1.7"], internalTrafficPolicy="Local")
    result = render(snapshot_of("test-node", *objs), NODE)
    assert rules_of(result.payload, "KUBE-SERVICES")[0] == (
        '-A KUBE-SERVICES -m comment --comment "ns/web:http has no local endpoints" '
        "-m tcp -p tcp -d 172.30.0.50 --dport 80 -j DROP")
    assert result.no_local_internal == 1
    # NodePort traffic still reaches every endpoint.
    assert rules_of(result.payload, "KUBE-NODEPORTS")


def test_service_without_endpoints_is_rejected_in_filter_and_absent_from_nat():
    objs = [service("ns", "empty", "172.30.0.60", [port("p", 80, node_port=30060)],
                    svc_type="NodePort", externalIPs=["192.168.99.60"])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    comment = '-m comment --comment "ns/empty:p has no endpoints"'
    assert rules_of(payload, "KUBE-SERVICES") == [
        f"-A KUBE-SERVICES {comment} -m tcp -p tcp -d 172.30.0.60 --dport 80 -j REJECT",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must '
        'be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS']
    assert rules_of(payload, "KUBE-EXTERNAL-SERVICES") == [
        f"-A KUBE-EXTERNAL-SERVICES {comment} -m tcp -p tcp -d 192.168.99.60 --dport 80 "
        "-j REJECT",
        f"-A KUBE-EXTERNAL-SERVICES {comment} -m addrtype --dst-type LOCAL -m tcp -p tcp "
        "--dport 30060 -j REJECT"]
    assert chains_of(payload, "nat") == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING",
                                         "KUBE-MARK-MASQ"]


def test_not_ready_endpoints_count_as_no_endpoints():
    objs = [service("ns", "s", "172.30.0.61", [port("p", 80)]),
            endpoint_slice("ns", "s", [endpoint("10.180.0.9", ready=False)], [("p", 80, "TCP")])]
    assert "has no endpoints" in render(snapshot_of("test-node", *objs), NODE).payload


def test_client_ip_affinity_checks_recent_lists_before_the_probability_ladder():
    objs = [service("ns", "sticky", "172.30.0.62", [port("p", 80)], sessionAffinity="ClientIP",
                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}),
            endpoint_slice("ns", "sticky", [endpoint("10.180.0.1"), endpoint("10.180.0.2")],
                           [("p", 80, "TCP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    svc = rules_of(payload, "KUBE-SERVICES")[0].split("-j ")[1]
    body = rules_of(payload, svc)[1:]
    seps = [r.split("-j ")[1] for r in body[2:]]
    assert body[0] == (f'-A {svc} -m comment --comment "ns/sticky:p -> 10.180.0.1:80" -m recent '
                       f"--name {seps[0]} --rcheck --seconds 60 --reap -j {seps[0]}")
    assert "--rcheck" in body[1] and "--probability 0.5000000000" in body[2]
    assert rules_of(payload, seps[0])[1] == (
        f"-A {seps[0]} -m comment --comment ns/sticky:p -m recent --name {seps[0]} --set "
        "-m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80")


def test_default_affinity_timeout_is_three_hours():
    objs = [service("ns", "sticky", "172.30.0.62", [port("p", 80)], sessionAffinity="ClientIP"),
            endpoint_slice("ns", "sticky", [endpoint("10.180.0.1")], [("p", 80, "TCP")])]
    assert "--seconds 10800 --reap" in render(snapshot_of("test-node", *objs), NODE).payload


def test_external_ips_go_through_the_external_chain():
    objs = [service("ns", "ext", "172.30.0.63", [port("p", 80)], externalIPs=["192.168.99.1"]),
            endpoint_slice("ns", "ext", [endpoint("10.180.0.1")], [("p", 80, "TCP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    rule = rules_of(payload, "KUBE-SERVICES")[1]
    assert rule.startswith('-A KUBE-SERVICES -m comment --comment "ns/ext:p external IP" '
                           "-m tcp -p tcp -d 192.168.99.1 --dport 80 -j KUBE-EXT-")
    ext = rule.split("-j ")[1]
    assert rules_of(payload, ext)[0].endswith("external destinations\" -j KUBE-MARK-MASQ")


def test_load_balancer_is_a_node_port_plus_its_ingress_ips():
    objs = [service("ns", "lb", "172.30.0.64", [port("p", 80, node_port=30064)],
                    svc_type="LoadBalancer",
                    status={"loadBalancer": {"ingress": [{"ip": "192.168.10.200"},
                                                         {"ip": "192.168.10.201",
                                                          "ipMode": "Proxy"}]}}),
            endpoint_slice("ns", "lb", [endpoint("10.180.0.1")], [("p", 80, "TCP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    assert len(rules_of(payload, "KUBE-NODEPORTS")) == 1
    lb_rules = [r for r in rules_of(payload, "KUBE-SERVICES") if "loadbalancer IP" in r]
    assert len(lb_rules) == 1 and "-d 192.168.10.200 --dport 80 -j KUBE-EXT-" in lb_rules[0]


def test_udp_services_match_udp():
    objs = [service("kube-system", "kube-dns", "10.96.0.10", [port("dns", 53, protocol="UDP")]),
            endpoint_slice("kube-system", "kube-dns", [endpoint("10.244.1.5")],
                           [("dns", 53, "UDP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    assert ('-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:dns cluster IP" '
            "-m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU") in payload
    assert "-m udp -p udp -j DNAT --to-destination 10.244.1.5:53" in payload


def test_three_endpoints_split_one_third_each():
    objs = [service("ns", "three", "172.30.0.65", [port("p", 80)]),
            endpoint_slice("ns", "three", [endpoint(f"10.180.0.{i}") for i in (1, 2, 3)],
                           [("p", 80, "TCP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    probabilities = re.findall(r"--probability (\S+)", payload)
    assert probabilities == ["0.3333333333", "0.5000000000"]


def test_endpoints_are_ordered_as_strings_like_kube_proxy():
    objs = [service("ns", "s", "172.30.0.66", [port("p", 11)]),
            endpoint_slice("ns", "s", [endpoint("10.1.1.1"), endpoint("10.1.1.11")],
                           [("p", 11, "TCP")])]
    payload = render(snapshot_of("test-node", *objs), NODE).payload
    assert payload.index("-> 10.1.1.11:11") < payload.index("-> 10.1.1.1:11")


def test_cluster_ip_service_writes_two_plus_three_n_nat_rules():
    base = render(snapshot_of("test-node"), NODE).nat_rules
    for n in (1, 2, 5):
        objs = [service("ns", "s", "172.30.0.67", [port("p", 80)]),
                endpoint_slice("ns", "s", [endpoint(f"10.180.0.{i}") for i in range(1, n + 1)],
                               [("p", 80, "TCP")])]
        assert render(snapshot_of("test-node", *objs), NODE).nat_rules == base + 2 + 3 * n


def many_services(tracker: ChangeTracker, count: int, endpoints_each: int) -> None:
    for i in range(count):
        name = f"svc{i}"
        tracker.update("Service", "ADDED", service("ns", name, f"172.30.{i // 250}.{i % 250 + 1}",
                                                   [port("p", 80)]))
        eps = [endpoint(f"10.{180 + i // 250}.{i % 250}.{e + 1}") for e in range(endpoints_each)]
        tracker.update("EndpointSlice", "ADDED", endpoint_slice("ns", name, eps,
                                                                [("p", 80, "TCP")]))


def test_partial_sync_writes_only_changed_services_chains():
    tracker = ChangeTracker("test-node")
    many_services(tracker, 3, 2)
    full = render(tracker.snapshot(), NODE)
    tracker.update("EndpointSlice", "MODIFIED", endpoint_slice(
        "ns", "svc1", [endpoint("10.180.1.1"), endpoint("10.180.1.9")], [("p", 80, "TCP")]))
    snap = tracker.snapshot()
    partial = render(snap, NODE, full=False)
    declared = chains_of(partial.payload, "nat")
    # Top-level chains are always rewritten, every service keeps its KUBE-SERVICES rule …
    assert declared[:4] == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING",
                            "KUBE-MARK-MASQ"]
    assert len(rules_of(partial.payload, "KUBE-SERVICES")) == 4
    # … but only svc1's own chains are mentioned; the others stay as they are.
    assert all("ns/svc1:p" in r for c in declared[4:] for r in rules_of(partial.payload, c))
    assert len(declared) == 4 + 1 + 2
    assert "10.180.1.9:80" in partial.payload
    # The metric counts what the kernel holds, not just what was written.
    assert partial.nat_rules_total == render(snap, NODE).nat_rules_total
    assert partial.nat_rules < full.nat_rules


def test_partial_sync_counts_skipped_rules_for_every_policy_shape():
    objs = overall_objects() + local_policy_service(["10.180.0.7"], ["10.180.1.7"],
                                                    externalTrafficPolicy="Local")
    snap = snapshot_of("test-node", *objs)
    unchanged = type(snap)(snap.services, snap.endpoints, frozenset())
    assert (render(unchanged, NODE, full=False).nat_rules_total
            == render(snap, NODE).nat_rules_total)


def test_stale_service_chains_are_flushed_and_deleted():
    snap = snapshot_of("test-node", *worked_example_objects())
    existing = {"KUBE-SERVICES", "KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SVC-AAAAAAAAAAAAAAAA",
                "KUBE-SEP-BBBBBBBBBBBBBBBB", "KUBE-MARK-DROP", "MY-OWN-CHAIN"}
    result = render(snap, NODE, existing_nat_chains=existing)
    assert result.deleted_chains == ("KUBE-SEP-BBBBBBBBBBBBBBBB", "KUBE-SVC-AAAAAAAAAAAAAAAA")
    lines = result.payload.splitlines()
    for chain in result.deleted_chains:
        assert f":{chain} - [0:0]" in lines and f"-X {chain}" in lines
    assert "-X KUBE-MARK-DROP" not in lines and "-X MY-OWN-CHAIN" not in lines
    assert lines[-2].startswith("-A KUBE-SERVICES") and "KUBE-NODEPORTS" in lines[-2]
    assert result.nat_rules == render(snap, NODE).nat_rules


def test_partial_sync_keeps_unchanged_services_chains_out_of_stale_removal():
    tracker = ChangeTracker("test-node")
    many_services(tracker, 2, 1)
    first = render(tracker.snapshot(), NODE, existing_nat_chains=set())
    tracker.update("Service", "DELETED", service("ns", "svc1", "172.30.0.2", []))
    result = render(tracker.snapshot(), NODE, full=False,
                    existing_nat_chains=first.active_nat_chains)
    assert len(result.deleted_chains) == 2  # svc1's SVC and SEP
    assert result.active_nat_chains and len(result.active_nat_chains) == 2


def test_large_clusters_drop_endpoint_comments_only():
    tracker = ChangeTracker("test-node")
    many_services(tracker, 101, 10)
    payload = render(tracker.snapshot(), NODE).payload
    sep_rules = [line for line in payload.splitlines() if line.startswith("-A KUBE-SEP-")]
    assert sep_rules and not any("--comment" in r for r in sep_rules)
    assert not any("->" in line for line in payload.splitlines())
    assert all("cluster IP" in r for r in rules_of(payload, "KUBE-SERVICES")[:-1])


def test_without_localhost_nodeports_there_is_no_anti_martian_chain():
    node = NodeConfig("test-node", ("192.168.0.2",), cluster_cidr="10.0.0.0/8",
                      localhost_nodeports=False)
    payload = render(snapshot_of("test-node", *worked_example_objects()), node).payload
    assert "KUBE-FIREWALL" not in payload
    assert rules_of(payload, "KUBE-SERVICES")[-1].endswith(
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")
    assert all(j.target != "KUBE-FIREWALL" for j in jump_rules(node))


def test_masquerade_mark_follows_the_bit_in_kube_proxy_spelling():
    node = NodeConfig("test-node", masquerade_bit=15)
    assert node.mark == "0x00008000"
    assert "--or-mark 0x00008000" in render(snapshot_of("test-node"), node).payload


def test_liberal_conntrack_drops_the_invalid_rule():
    node = NodeConfig("test-node", conntrack_tcp_liberal=True)
    assert "INVALID" not in render(snapshot_of("test-node"), node).payload


def test_no_cluster_cidr_means_no_cluster_ip_masquerade():
    node = NodeConfig("test-node", cluster_cidr=None)
    payload = render(snapshot_of("test-node", *worked_example_objects()), node).payload
    svc_rules = rules_of(payload, "KUBE-SVC-XPGD46QRK7WJZT7O")
    assert not any(r.endswith("-j KUBE-MARK-MASQ") for r in svc_rules)
    assert len(svc_rules) == 2


def test_jump_rules_are_spelled_as_iptables_save_prints_them():
    assert JUMP_RULES[0].save_line() == (
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible '
        'service portals" -j KUBE-EXTERNAL-SERVICES')
    assert JUMP_RULES[-1].save_line() == "-A OUTPUT -j KUBE-FIREWALL"
    assert JUMP_RULES[9].argv() == ["-m", "comment", "--comment", "kubernetes service portals",
                                    "-j", "KUBE-SERVICES"]


def test_missing_hooks_and_canaries_ride_in_the_same_restore():
    snap = snapshot_of("test-node")
    payload = render(snap, NODE, insert_jumps=JUMP_RULES, canaries=True).payload
    assert payload.startswith("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*filter\n")
    nat = payload.split("*nat\n")[1]
    assert ":KUBE-PROXY-CANARY - [0:0]" in nat
    assert nat.splitlines()[-2] == ("-I POSTROUTING 1 -m comment --comment "
                                    '"kubernetes postrouting rules" -j KUBE-POSTROUTING')
