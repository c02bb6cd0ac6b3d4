"""The nftables transaction, compared with the layout kube-proxy's nftables mode writes (§4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.proxy.changes import ChangeTracker
from netlab.proxy.model import ServicePortName
from netlab.proxy.nftables import names
from netlab.proxy.nftables.render import NodeConfig, TableState, cleanup, render
from netlab.proxy.nftables.rules_view import port_of_chain, rule_texts
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service, snapshot_of
from tests.unit.test_iptables_render import worked_example_objects

# shared/ sits beside the checkout (as in CI and on developer machines).
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "kube-proxy.md"
# The upstream tests' node: pod CIDR 10.0.0.0/8, services 172.30.0.0/16, NodePorts on
# the primary IP only (nftables mode's default), mark 0x4000 (their fake proxier's).
NODE = NodeConfig("test-node", ("192.168.0.2", "192.168.1.2"), cluster_cidr="10.0.0.0/8",
                  service_cidrs=("172.30.0.0/16",), masquerade_bit=14)
T = "ip kube-proxy"

# The fixed skeleton every full sync declares (upstream `baseRules`).
SKELETON = f"""\
add table {T} {{ comment "rules for kube-proxy" ; }}
add set {T} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}
add set {T} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}
add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}
add chain {T} cluster-ips-check
add chain {T} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}
add chain {T} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}
add chain {T} filter-forward {{ type filter hook forward priority 0 ; }}
add chain {T} filter-input {{ type filter hook input priority 0 ; }}
add chain {T} filter-output {{ type filter hook output priority 0 ; }}
add chain {T} firewall-check
add chain {T} mark-for-masquerade
add chain {T} masquerading
add chain {T} nat-output {{ type nat hook output priority -100 ; }}
add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {T} nodeport-endpoints-check
add chain {T} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}
add chain {T} services
add chain {T} service-endpoints-check
add rule {T} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule {T} cluster-ips-check ip daddr {{ 172.30.0.0/16 }} drop comment "Drop traffic to unallocated ClusterIPs"
add rule {T} filter-prerouting-pre-dnat ct state new jump firewall-check
add rule {T} filter-forward ct state new jump service-endpoints-check
add rule {T} filter-forward ct state new jump cluster-ips-check
add rule {T} filter-input ct state new jump nodeport-endpoints-check
add rule {T} filter-input ct state new jump service-endpoints-check
add rule {T} filter-output ct state new jump service-endpoints-check
add rule {T} filter-output-pre-dnat ct state new jump firewall-check
add rule {T} filter-output ct state new jump cluster-ips-check
add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule {T} mark-for-masquerade mark set mark or 0x4000
add rule {T} masquerading mark and 0x4000 == 0 return
add rule {T} masquerading mark set mark xor 0x4000
add rule {T} masquerading masquerade fully-random
add rule {T} nat-output jump services
add rule {T} nat-postrouting jump masquerading
add rule {T} nat-prerouting jump services
add rule {T} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule {T} reject-chain reject
add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {T} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element {T} nodeport-ips {{ 192.168.0.2 }}
add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"""  # noqa: E501

# kube-proxy.md §4, "Worked example", verbatim.
WORKED_EXAMPLE = """\
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 , 1 : goto endpoint-2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add chain ip kube-proxy endpoint-2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 goto service-42NFTM6N-ns2/svc2/tcp/p80
add chain ip kube-proxy endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080
add rule ip kube-proxy endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080 ip saddr 10.180.1.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080 meta l4proto tcp dnat to 10.180.1.1:8080
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
"""  # noqa: E501


def layout(text: str) -> tuple[set[str], dict[str, list[str]]]:
    """What a transaction leaves in an empty table: its objects, and each chain's rules in order.

    Flushes, deletions and the bare `add chain` that precede a base chain's
    re-creation change nothing in an empty table, so they are left out; what
    remains is what upstream's fake nftables dumps, compared without the
    order in which objects are declared (the rules of one chain keep theirs).
    """
    lines = [line for line in text.splitlines() if line.startswith("add ")]
    declared = {line.split(" {")[0] for line in lines
                if line.startswith("add chain") and " {" in line}
    objects = {line for line in lines if not line.startswith("add rule")
               and not (line.startswith("add chain") and " {" not in line and line in declared)}
    rules: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("add rule"):
            rules.setdefault(line.split()[4], []).append(line)
    return objects, rules


def kube_proxy(text: str) -> str:
    """Our transaction with upstream tests' spelling of the mark (their fake injects 0x4000)."""
    return text.replace("0x00004000", "0x4000")


def rules_in(text: str, chain: str) -> list[str]:
    prefix = f"add rule {T} {chain} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def elements_in(text: str, container: str) -> list[str]:
    prefix = f"add element {T} {container} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def spn(ns: str, name: str, port_name: str = "p80", protocol: str = "TCP") -> ServicePortName:
    return ServicePortName(ns, name, port_name, protocol)


# -- names ------------------------------------------------------------------------------


def test_chain_names_match_the_hashes_verified_in_the_reference():
    assert names.service_chain(spn("ns1", "svc1")) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert names.endpoint_chain(spn("ns1", "svc1"), "10.180.0.1:80") == \
        "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert names.affinity_set(spn("ns5", "svc5"), "10.180.0.3:80") == \
        "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"


def test_over_long_names_are_cut_with_dots_and_stay_unique():
    a = names.hash_and_truncate("x" * 300)
    b = names.hash_and_truncate("x" * 299 + "y")
    assert len(a) == 240 and a.endswith("...") and a != b


def test_rules_view_finds_the_service_port_in_a_chain_name():
    assert port_of_chain("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80") == "ns1/svc1:p80"
    assert port_of_chain("service-AAAAAAAA-default/web/udp/") == "default/web"
    assert port_of_chain("services") is None


def test_rules_view_reads_rule_text_without_handles_or_counter_values():
    listing = ("table ip kube-proxy { # handle 3\n\tchain services { # handle 7\n"
               "\t\tcounter packets 4 bytes 240 ip daddr . meta l4proto . th dport "
               "vmap @service-ips # handle 9\n\t}\n}\n")
    assert rule_texts(listing) == {
        ("services", 9): "counter ip daddr . meta l4proto . th dport vmap @service-ips"}


# -- the documented layout ----------------------------------------------------------------


def test_worked_example_matches_the_reference_layout():
    text = kube_proxy(render(snapshot_of("test-node", *worked_example_objects()), NODE).text)
    assert layout(text) == layout(SKELETON + WORKED_EXAMPLE)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference notes not available")
def test_worked_example_is_the_one_in_the_reference_notes():
    section = REFERENCE.read_text().split("## 4. nftables mode", 1)[1]
    block = section.split("* Worked example", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    assert block == WORKED_EXAMPLE


def test_first_full_sync_recreates_the_base_chains_then_never_again():
    snapshot = snapshot_of("test-node", *worked_example_objects())
    first = render(snapshot, NODE)
    assert f"delete chain {T} nat-prerouting" in first.text
    again = render(snapshot, NODE, first.state)
    assert "delete chain" not in again.text
    assert f"flush chain {T} nat-prerouting" in again.text


def test_node_port_goes_through_the_external_chain_which_masquerades():
    text = render(snapshot_of("test-node", *worked_example_objects()), NODE).text
    ext = "external-42NFTM6N-ns2/svc2/tcp/p80"
    assert elements_in(text, "service-nodeports") == [f"{{ tcp . 30080 : goto {ext} }}"]
    assert rules_in(text, ext) == ["jump mark-for-masquerade",
                                   "goto service-42NFTM6N-ns2/svc2/tcp/p80"]


def test_service_without_endpoints_is_rejected_through_the_no_endpoint_map():
    objs = [service("ns6", "svc6", "172.30.0.46", [port("p80", 80)], svc_type="NodePort",
                    externalIPs=["192.168.99.46"])]
    objs[0]["spec"]["ports"][0]["nodePort"] = 3006
    text = render(snapshot_of("test-node", *objs), NODE).text
    assert elements_in(text, "cluster-ips") == ["{ 172.30.0.46 }"]
    assert elements_in(text, "no-endpoint-services") == [
        '{ 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }',
        '{ 192.168.99.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }']
    assert elements_in(text, "no-endpoint-nodeports") == [
        '{ tcp . 3006 comment "ns6/svc6:p80" : goto reject-chain }']
    assert not elements_in(text, "service-ips")
    assert "service-" + names.port_base(spn("ns6", "svc6")) not in text  # no chains at all


def test_a_port_not_defined_on_a_cluster_ip_is_rejected_and_unallocated_ips_dropped():
    text = render(snapshot_of("test-node", *worked_example_objects()), NODE).text
    assert rules_in(text, "cluster-ips-check") == [
        'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        'ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"']
    assert rules_in(text, "filter-forward")[-1] == "ct state new jump cluster-ips-check"


def test_client_ip_affinity_uses_a_timeout_set_per_endpoint():
    objs = [service("ns5", "svc5", "172.30.0.45", [port("p80", 80)], sessionAffinity="ClientIP",
                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}}),
            endpoint_slice("ns5", "svc5", [endpoint("10.180.0.3")], [("p80", 80, "TCP")])]
    text = render(snapshot_of("test-node", *objs), NODE).text
    svc = "service-HVFWP5L3-ns5/svc5/tcp/p80"
    ep = "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    affinity = "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    assert f"add set {T} {affinity} {{ type ipv4_addr ; flags dynamic,timeout ; " \
           "timeout 10800s ; }" in text.splitlines()
    assert rules_in(text, svc) == [
        "ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        f"ip saddr @{affinity} goto {ep}",
        f"numgen random mod 1 vmap {{ 0 : goto {ep} }}"]
    assert rules_in(text, ep) == ["ip saddr 10.180.0.3 jump mark-for-masquerade",
                                  f"update @{affinity} {{ ip saddr }}",
                                  "meta l4proto tcp dnat to 10.180.0.3:80"]


def local_policy_objects(local: list[str], remote: list[str], **spec) -> list[dict]:
    eps = [endpoint(ip, node="test-node") for ip in local]
    eps += [endpoint(ip, node="other") for ip in remote]
    return [service("ns2", "svc2", "172.30.0.42", [port("p80", 80, node_port=3001)],
                    svc_type="LoadBalancer", externalIPs=["192.168.99.22"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}, **spec),
            endpoint_slice("ns2", "svc2", eps, [("p80", 80, "TCP")])]


def test_external_policy_local_short_circuits_pods_and_the_node_and_sends_the_rest_local():
    objs = local_policy_objects(["10.180.0.2"], ["10.180.1.2"], externalTrafficPolicy="Local")
    result = render(snapshot_of("test-node", *objs), NODE)
    text = result.text
    svc = "service-42NFTM6N-ns2/svc2/tcp/p80"
    local = "local-42NFTM6N-ns2/svc2/tcp/p80"
    ext = "external-42NFTM6N-ns2/svc2/tcp/p80"
    assert rules_in(text, ext) == [
        f'ip saddr 10.0.0.0/8 goto {svc} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto {svc} comment "short-circuit local traffic"',
        f"goto {local}"]
    assert len(rules_in(text, local)) == 1  # no masquerade: the client IP is kept
    assert "10.180.0.2/80" in rules_in(text, local)[0]
    assert "10.180.1.2/80" not in rules_in(text, local)[0]
    assert "mod 2" in rules_in(text, svc)[-1]  # pods and the node reach every endpoint
    assert not elements_in(text, "no-endpoint-services")
    assert result.no_local_external == 0


def test_external_policy_local_without_local_endpoints_drops_outside_traffic():
    objs = local_policy_objects([], ["10.180.0.2"], externalTrafficPolicy="Local")
    result = render(snapshot_of("test-node", *objs), NODE)
    text = result.text
    ext = "external-42NFTM6N-ns2/svc2/tcp/p80"
    assert [r.split(" comment")[0] for r in rules_in(text, ext)] == [
        "ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80",
        "fib saddr type local jump mark-for-masquerade",
        "fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80"]
    assert sorted(elements_in(text, "no-endpoint-services")) == [
        '{ 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }',
        '{ 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }']
    assert elements_in(text, "no-endpoint-nodeports") == [
        '{ tcp . 3001 comment "ns2/svc2:p80" : drop }']
    assert "local-42NFTM6N" not in text
    assert result.no_local_external == 1


def test_internal_policy_local_sends_cluster_ip_traffic_to_local_endpoints():
    objs = local_policy_objects(["10.180.0.2"], ["10.180.1.2"], internalTrafficPolicy="Local")
    text = render(snapshot_of("test-node", *objs), NODE).text
    local = "local-42NFTM6N-ns2/svc2/tcp/p80"
    assert f"{{ 172.30.0.42 . tcp . 80 : goto {local} }}" in elements_in(text, "service-ips")
    assert rules_in(text, local)[0] == \
        "ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"


def test_internal_policy_local_without_local_endpoints_drops_cluster_ip_traffic():
    objs = local_policy_objects([], ["10.180.1.2"], internalTrafficPolicy="Local")
    result = render(snapshot_of("test-node", *objs), NODE)
    assert elements_in(result.text, "no-endpoint-services") == [
        '{ 172.30.0.42 . tcp . 80 comment "ns2/svc2:p80" : drop }']
    assert result.no_local_internal == 1


def test_load_balancer_source_ranges_drop_other_sources_before_dnat():
    objs = [service("ns5", "svc5", "172.30.0.45", [port("p80", 80, node_port=3002)],
                    svc_type="LoadBalancer", loadBalancerSourceRanges=[" 203.0.113.0/25"],
                    status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
            endpoint_slice("ns5", "svc5", [endpoint("10.180.0.3")], [("p80", 80, "TCP")])]
    text = render(snapshot_of("test-node", *objs), NODE).text
    fw = "firewall-HVFWP5L3-ns5/svc5/tcp/p80"
    assert elements_in(text, "firewall-ips") == [f"{{ 5.6.7.8 . tcp . 80 : goto {fw} }}"]
    assert rules_in(text, fw) == ["ip saddr != { 203.0.113.0/25 } drop"]


def test_node_ports_on_every_local_address_use_a_fib_lookup_instead_of_the_set():
    node = NodeConfig("test-node", ("192.168.0.2",), nodeport_addresses=())
    text = render(snapshot_of("test-node", *worked_example_objects()), node).text
    assert f"delete set {T} nodeport-ips" in text
    assert rules_in(text, "services")[-1] == \
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap " \
        "@service-nodeports"


def test_counters_go_before_each_rules_action():
    node = NodeConfig("test-node", ("192.168.0.2",), counters=True)
    text = render(snapshot_of("test-node", *worked_example_objects()), node).text
    assert rules_in(text, "services")[0] == \
        "counter ip daddr . meta l4proto . th dport vmap @service-ips"
    assert rules_in(text, "endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080") == [
        "ip saddr 10.180.1.1 counter jump mark-for-masquerade",
        "meta l4proto tcp counter dnat to 10.180.1.1:8080"]


# -- syncs after the first ------------------------------------------------------------------


def tracker_with(*objects: dict) -> ChangeTracker:
    tracker = ChangeTracker("test-node")
    for obj in objects:
        tracker.update(obj["kind"], "ADDED", obj)
    return tracker


def test_partial_sync_writes_only_the_changed_service():
    tracker = tracker_with(*worked_example_objects())
    first = render(tracker.snapshot(), NODE)
    tracker.update("EndpointSlice", "MODIFIED", endpoint_slice(
        "ns1", "svc1", [endpoint("10.180.0.1")], [("p80", 80, "TCP")]))
    second = render(tracker.snapshot(), NODE, first.state, full=False, now=10.0)
    lines = second.text.splitlines()
    gone = "endpoint-2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80"
    assert "svc2" not in second.text
    assert f"flush chain {T} service-ULMVA6XW-ns1/svc1/tcp/p80" in lines
    assert f"flush chain {T} {gone}" in lines  # stale: flushed now, deleted later
    assert not any(line.startswith("add element") for line in lines)  # same verdicts
    assert "add table" not in second.text and "add map" not in second.text
    assert second.stale_flushed == (gone,)
    assert cleanup(second.state, 10.5) == ("", second.state)
    text, after = cleanup(second.state, 11.0)
    assert text == f"delete chain {T} {gone}\n"
    assert gone not in after.chains and not after.stale_since


def test_partial_sync_without_changes_writes_nothing():
    tracker = tracker_with(*worked_example_objects())
    first = render(tracker.snapshot(), NODE)
    assert render(tracker.snapshot(), NODE, first.state, full=False).text == ""


def test_deleted_service_loses_its_elements_and_chains():
    objs = worked_example_objects()
    tracker = tracker_with(*objs)
    first = render(tracker.snapshot(), NODE)
    for obj in objs[2:]:
        tracker.update(obj["kind"], "DELETED", obj)
    second = render(tracker.snapshot(), NODE, first.state, full=False, now=5.0)
    lines = second.text.splitlines()
    assert f"delete element {T} cluster-ips {{ 172.30.0.42 }}" in lines
    assert f"delete element {T} service-ips {{ 172.30.0.42 . tcp . 80 }}" in lines
    assert f"delete element {T} service-nodeports {{ tcp . 30080 }}" in lines
    assert {c for c in second.stale_flushed} == {
        "service-42NFTM6N-ns2/svc2/tcp/p80", "external-42NFTM6N-ns2/svc2/tcp/p80",
        "endpoint-HP63VQQM-ns2/svc2/tcp/p80__10.180.1.1/8080"}
    assert all(line.startswith(("flush chain", "delete element")) for line in lines)


def test_endpoints_gone_turn_the_service_ip_into_a_reject_element():
    objs = worked_example_objects()
    tracker = tracker_with(*objs)
    first = render(tracker.snapshot(), NODE)
    tracker.update("EndpointSlice", "DELETED", objs[1])
    second = render(tracker.snapshot(), NODE, first.state, full=False, now=1.0)
    lines = second.text.splitlines()
    delete = f"delete element {T} service-ips {{ 172.30.0.41 . tcp . 80 }}"
    add = (f'add element {T} no-endpoint-services {{ 172.30.0.41 . tcp . 80 comment '
           '"ns1/svc1:p80" : goto reject-chain }')
    assert delete in lines and add in lines


def test_affinity_sets_no_longer_needed_are_deleted_at_once():
    objs = [service("ns5", "svc5", "172.30.0.45", [port("p80", 80)], sessionAffinity="ClientIP"),
            endpoint_slice("ns5", "svc5", [endpoint("10.180.0.3")], [("p80", 80, "TCP")])]
    tracker = tracker_with(*objs)
    first = render(tracker.snapshot(), NODE)
    assert "timeout 10800s" in first.text  # the API default
    plain = service("ns5", "svc5", "172.30.0.45", [port("p80", 80)])
    tracker.update("Service", "MODIFIED", plain)
    second = render(tracker.snapshot(), NODE, first.state, full=False)
    assert f"delete set {T} affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80" in second.text
    assert not second.state.affinity_sets


def test_full_sync_over_a_table_from_an_earlier_run_flushes_what_is_not_needed():
    leftover = "service-AAAAAAAA-old/svc/tcp/http"
    previous = TableState(chains=frozenset({leftover}),
                          affinity_sets=frozenset({"affinity-BBBBBBBB-old/svc/tcp/http__1.2.3.4/80"}),
                          base_chains_ok=True)
    result = render(snapshot_of("test-node", *worked_example_objects()), NODE, previous, now=3.0)
    assert f"flush chain {T} {leftover}" in result.text
    assert f"delete set {T} affinity-BBBBBBBB-old/svc/tcp/http__1.2.3.4/80" in result.text
    assert result.state.stale_since == {leftover: 3.0}
    assert f"flush map {T} service-ips" in result.text  # full: every element re-added
