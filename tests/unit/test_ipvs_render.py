"""IPVS mode's desired state: virtual servers, ipsets and the iptables payload (§3), no root."""

from __future__ import annotations

import pytest

from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.render import (
    JUMP_RULES,
    NodeConfig,
    VirtualServer,
    render,
    with_jumps,
)
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service, snapshot_of
from tests.unit.test_iptables_render import overall_objects

NODE_IPS = ("192.168.0.2", "192.168.1.2")
NODE = NodeConfig("test-node", NODE_IPS, cluster_cidr="10.0.0.0/8")

# The services of upstream TestOverallIPTablesRules rendered in IPVS mode, hand-checked
# against pkg/proxy/ipvs/proxier.go's writeIptablesRules (order, comments, match types).
OVERALL_PAYLOAD = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port + source cidr for packet filter purpose" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-IPVS-OUT-FILTER -s 5.6.7.8 -m ipvs --vaddr 5.6.7.8 --vproto tcp --vport 80 -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""  # noqa: E501


def overall():
    return render(snapshot_of("test-node", *overall_objects()), NODE, NODE_IPS)


def servers(desired) -> dict[str, list[str]]:
    """`ipvsadm -Ln` in a dict: virtual server -> its real servers."""
    return {str(vs): sorted(f"{ip}:{p}" for ip, p in desired.reals[key])
            for key, vs in desired.services.items()}


def test_overall_payload_is_kube_proxys_constant_rule_set():
    assert overall().iptables == OVERALL_PAYLOAD


def test_every_service_address_is_a_virtual_server_with_its_endpoints():
    assert servers(overall()) == {
        "TCP  172.30.0.41:80 rr": ["10.180.0.1:80"],
        "TCP  172.30.0.42:80 rr": ["10.180.0.2:80"],
        # eTP Local without a local endpoint: every endpoint (kube-proxy PR #97081).
        "TCP  192.168.99.22:80 rr": ["10.180.0.2:80"],
        "TCP  1.2.3.4:80 rr": ["10.180.0.2:80"],
        "TCP  192.168.0.2:3001 rr": ["10.180.0.2:80"],
        "TCP  192.168.1.2:3001 rr": ["10.180.0.2:80"],
        "TCP  172.30.0.43:80 rr": ["10.180.0.3:80"],
        "TCP  192.168.0.2:3003 rr": ["10.180.0.3:80"],
        "TCP  192.168.1.2:3003 rr": ["10.180.0.3:80"],
        "TCP  172.30.0.44:80 rr": ["10.180.0.4:80", "10.180.0.5:80"],
        "TCP  192.168.99.33:80 rr": ["10.180.0.4:80", "10.180.0.5:80"],
        "TCP  172.30.0.45:80 rr persistent 10800": ["10.180.0.3:80"],
        "TCP  5.6.7.8:80 rr persistent 10800": ["10.180.0.3:80"],
        "TCP  192.168.0.2:3002 rr persistent 10800": ["10.180.0.3:80"],
        "TCP  192.168.1.2:3002 rr persistent 10800": ["10.180.0.3:80"],
        # No endpoints: the virtual server stays, with no real server.
        "TCP  172.30.0.46:80 rr": [],
    }


def test_service_addresses_but_not_node_addresses_are_bound_to_the_dummy():
    desired = overall()
    assert desired.bound == {"172.30.0.41", "172.30.0.42", "172.30.0.43", "172.30.0.44",
                             "172.30.0.45", "172.30.0.46", "192.168.99.22", "192.168.99.33",
                             "1.2.3.4", "5.6.7.8"}
    assert desired.ipsets[n.IPVS_IPS] == desired.bound


def test_ipsets_hold_what_the_rules_act_on():
    sets = {name: sorted(members) for name, members in overall().ipsets.items() if members}
    del sets[n.IPVS_IPS]
    assert sets == {
        n.CLUSTER_IP: [f"172.30.0.4{i},tcp:80" for i in range(1, 7)],
        n.LOOP_BACK: ["10.180.0.5,tcp:80,10.180.0.5"],  # the one endpoint on this node
        n.EXTERNAL_IP: ["192.168.99.33,tcp:80"],
        n.EXTERNAL_IP_LOCAL: ["192.168.99.22,tcp:80"],
        n.LOAD_BALANCER: ["1.2.3.4,tcp:80", "5.6.7.8,tcp:80"],
        n.LOAD_BALANCER_LOCAL: ["1.2.3.4,tcp:80"],
        n.LOAD_BALANCER_FW: ["5.6.7.8,tcp:80"],
        n.LOAD_BALANCER_SOURCE_CIDR: ["5.6.7.8,tcp:80,203.0.113.0/25"],
        n.NODE_PORT_TCP: ["3001", "3002", "3003"],
        n.NODE_PORT_LOCAL_TCP: ["3001"],
        n.HEALTH_CHECK_NODE_PORT: ["30000"],
    }


def test_no_local_endpoint_is_counted_for_the_metric():
    desired = overall()
    assert (desired.no_local_internal, desired.no_local_external) == (0, 1)


def test_rule_count_does_not_grow_with_services():
    small = render(snapshot_of("test-node", *overall_objects()[:2]), NODE, NODE_IPS)
    many = [service("ns", f"s{i}", f"172.30.1.{i}", [port("p", 80)]) for i in range(1, 200)]
    big = render(snapshot_of("test-node", *overall_objects()[:2], *many), NODE, NODE_IPS)
    assert len(big.services) == 200
    assert (big.nat_rules, big.filter_rules) == (small.nat_rules, small.filter_rules)


def objects_with_local_endpoint(**spec):
    return [service("ns", "svc", "172.30.0.50", [port("p", 80, node_port=30050)],
                    svc_type="NodePort", **spec),
            endpoint_slice("ns", "svc", [endpoint("10.180.0.1", node="test-node"),
                                         endpoint("10.180.0.2")], [("p", 80, "TCP")])]


def test_external_policy_local_uses_the_nodes_own_endpoints_for_external_addresses():
    desired = render(snapshot_of("test-node", *objects_with_local_endpoint(
        externalTrafficPolicy="Local")), NODE, NODE_IPS)
    assert servers(desired)["TCP  192.168.0.2:30050 rr"] == ["10.180.0.1:80"]
    assert servers(desired)["TCP  172.30.0.50:80 rr"] == ["10.180.0.1:80", "10.180.0.2:80"]
    assert desired.ipsets[n.NODE_PORT_LOCAL_TCP] == {"30050"}


def test_internal_policy_local_without_local_endpoints_leaves_the_cluster_ip_empty():
    objs = [service("ns", "svc", "172.30.0.51", [port("p", 80)], internalTrafficPolicy="Local"),
            endpoint_slice("ns", "svc", [endpoint("10.180.0.2")], [("p", 80, "TCP")])]
    desired = render(snapshot_of("test-node", *objs), NODE, NODE_IPS)
    assert servers(desired) == {"TCP  172.30.0.51:80 rr": []}
    assert desired.no_local_internal == 1


def test_scheduler_is_configurable_and_mh_hashes_the_port_too():
    objs = objects_with_local_endpoint()
    lc = render(snapshot_of("test-node", *objs), NodeConfig("test-node", scheduler="lc"),
                NODE_IPS)
    assert {vs.scheduler for vs in lc.services.values()} == {"lc"}
    mh = render(snapshot_of("test-node", *objs), NodeConfig("test-node", scheduler="mh"),
                NODE_IPS)
    assert all(vs.flags == n.FLAG_SOURCE_HASH for vs in mh.services.values())


def test_an_unknown_scheduler_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown IPVS scheduler 'fastest'.*rr, wrr"):
        NodeConfig("test-node", scheduler="fastest")


def test_an_external_ip_the_node_holds_is_not_bound_again():
    objs = [service("ns", "svc", "172.30.0.52", [port("p", 80)], externalIPs=["192.168.1.2"])]
    desired = render(snapshot_of("test-node", *objs), NODE, NODE_IPS)
    assert ("TCP", "192.168.1.2", 80) in desired.services
    assert desired.bound == {"172.30.0.52"}


def test_udp_and_sctp_node_ports_go_to_their_own_sets():
    objs = [service("ns", "u", "172.30.0.53", [port("p", 53, protocol="UDP", node_port=30053)],
                    svc_type="NodePort"),
            service("ns", "s", "172.30.0.54", [port("p", 99, protocol="SCTP", node_port=30099)],
                    svc_type="NodePort")]
    desired = render(snapshot_of("test-node", *objs), NODE, NODE_IPS)
    assert desired.ipsets[n.NODE_PORT_UDP] == {"30053"}
    # bitmap:port cannot hold SCTP apart from TCP: a hash of node IP and port instead.
    assert desired.ipsets[n.NODE_PORT_SCTP] == {"192.168.0.2,sctp:30099",
                                                "192.168.1.2,sctp:30099"}
    assert "-A KUBE-NODE-PORT -p udp" in desired.iptables
    assert "-p sctp" in desired.iptables and "KUBE-NODE-PORT-SCTP-HASH dst,dst" in \
        desired.iptables


def cluster_ip_masquerade(node: NodeConfig) -> list[str]:
    desired = render(snapshot_of("test-node", *overall_objects()[:2]), node, NODE_IPS)
    return [line for line in desired.iptables.splitlines()
            if "KUBE-CLUSTER-IP" in line and "KUBE-MARK-MASQ" in line]


def test_cluster_ip_masquerade_follows_the_local_traffic_detector():
    assert cluster_ip_masquerade(NODE) == [
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for '
        'masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 '
        '-j KUBE-MARK-MASQ']
    assert cluster_ip_masquerade(NodeConfig("test-node", cluster_cidr=None))[0].endswith(
        "--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ")
    assert cluster_ip_masquerade(NodeConfig("test-node", masquerade_all=True))[0].endswith(
        "--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ")


def test_source_range_covering_the_node_lets_the_node_reach_the_lb_ip():
    objs = [service("ns", "lb", "172.30.0.55", [port("p", 80, node_port=30055)],
                    svc_type="LoadBalancer", loadBalancerSourceRanges=["192.168.0.0/16"],
                    status={"loadBalancer": {"ingress": [{"ip": "5.6.7.9"}]}})]
    desired = render(snapshot_of("test-node", *objs), NODE, NODE_IPS)
    assert desired.ipsets[n.LOAD_BALANCER_SOURCE_IP] == {"5.6.7.9,tcp:80,5.6.7.9"}
    assert "KUBE-IPVS-OUT-FILTER -s" not in desired.iptables


def test_same_state_renders_the_same():
    assert overall() == overall()


def test_missing_hooks_are_prepended_at_the_end_of_their_table():
    payload = with_jumps(OVERALL_PAYLOAD, JUMP_RULES)
    nat, filt = payload.split("*filter\n")
    assert nat.endswith("-I OUTPUT 1 -m comment --comment \"kubernetes service portals\" "
                        "-j KUBE-SERVICES\n"
                        "-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" "
                        "-j KUBE-SERVICES\n"
                        "-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" "
                        "-j KUBE-POSTROUTING\nCOMMIT\n")
    assert filt.count("-I ") == 6 and filt.endswith(
        "-I OUTPUT 1 -m comment --comment \"kubernetes ipvs access filter\" "
        "-j KUBE-IPVS-OUT-FILTER\nCOMMIT\n")
    assert with_jumps(OVERALL_PAYLOAD, ()) == OVERALL_PAYLOAD


def test_virtual_server_prints_like_ipvsadm():
    vs = VirtualServer("UDP", "10.96.0.10", 53, "rr", n.FLAG_PERSISTENT, 300)
    assert str(vs) == "UDP  10.96.0.10:53 rr persistent 300"
    assert vs.key == ("UDP", "10.96.0.10", 53)
