"""Simulated traces: the walk answered from the model and the rules each node has installed."""

from __future__ import annotations

from netlab.trace.model import Action, DropReason, Verdict
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab


def sim(src: str, dst: str, backend: str = "vxlan", proxy: bool = True, **kw):  # type: ignore[no-untyped-def]
    view = trace_lab.view(backend)
    port, proto = kw.pop("port", None), kw.pop("proto", None)
    return simulate(view, trace_lab.rulesets(proxy), resolve_source(view, src),
                    resolve_destination(view, dst, port=port, proto=proto), **kw)


def test_pod_to_pod_on_one_node_is_bridged_without_nat_or_tunnel():
    t = sim("a", "b")
    assert t.verdict == Verdict.DELIVERED
    assert t.minimal == ["worker-1/pod:default/b: DELIVERED 10.244.1.3:8080 from 10.244.1.2",
                         "verdict: DELIVERED"]
    assert not t.encapsulated()
    assert [h.match for h in t.hops_at("bridge")] == ["port vethc1b41cff -> bridged",
                                                      "cni0 -> port veth482010b2"]


def test_pod_to_pod_across_nodes_crosses_vxlan_between_node_ips():
    t = sim("a", "c")
    assert t.encapsulated(vni=1)
    assert t.encap is not None
    assert (t.encap.outer_src, t.encap.outer_dst, t.encap.dport) == ("192.168.10.3",
                                                                     "192.168.10.4", 8472)
    assert [h.stage for h in t.hops_at("vxlan")] == ["vxlan:encap", "vxlan:decap"]
    assert t.source_seen_by_server == "10.244.1.2"
    assert t.hops_at("route")[1].match == "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"


def test_host_gw_routes_via_the_peer_node_without_a_tunnel():
    t = sim("a", "c", backend="host-gw")
    assert t.verdict == Verdict.DELIVERED
    assert not t.encapsulated()
    assert t.hops_at("route")[1].match == "10.244.2.0/24 via 192.168.10.4 dev eth0"
    assert any(h.stage == "underlay" and "worker-2" in h.match for h in t.hops)


def test_clusterip_dnat_names_the_service_port_and_endpointslice_entry():
    t = sim("a", "web")
    assert t.dnat is not None
    assert t.dnat.stage == "netfilter:nat/PREROUTING"
    assert (t.dnat.before.destination, t.dnat.after.destination) == ("10.96.0.20:80",
                                                                     "10.244.2.2:8080")
    ref = t.dnat.k8s_ref
    assert ref is not None
    assert (ref.service, ref.port_name, ref.port) == ("default/web", "http", 80)
    assert (ref.endpointslice, ref.endpoint_index, ref.pod) == ("web-abcde", 0, "default/c")
    assert t.source_seen_by_server == "10.244.1.2"  # no SNAT for pod -> ClusterIP


def test_other_endpoints_are_listed_with_their_probability():
    t = sim("a", "two")
    assert t.dnat is not None and t.dnat.after.dst == "10.244.2.2"
    assert [(a.endpoint, a.probability) for a in t.dnat.alternatives] == [("10.244.2.3:8080",
                                                                           0.5)]
    picked = sim("a", "two", endpoint="10.244.2.3")
    assert picked.dnat is not None and picked.dnat.after.dst == "10.244.2.3"


def test_external_client_to_nodeport_is_dnatted_and_masqueraded():
    t = sim("ext", "worker-1:30080")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.k8s_ref.service == "default/np"
    assert t.snat is not None and t.snat.stage == "netfilter:nat/POSTROUTING"
    assert t.source_seen_by_server == "10.244.1.0"  # flannel.1's address on worker-1


def test_service_without_endpoints_is_rejected():
    t = sim("a", "empty")
    assert t.verdict == Verdict.REJECTED
    assert t.drop_reason == DropReason.NO_ENDPOINTS
    assert t.hops[-1].stage == "netfilter:filter/FORWARD"
    assert t.hops[-1].k8s_ref.service == "default/empty"


def test_etp_local_nodeport_on_a_node_without_endpoint_is_dropped_with_the_reason():
    t = sim("ext", "worker-1:30081")
    assert t.verdict == Verdict.DROPPED
    assert t.drop_reason == DropReason.NO_LOCAL_ENDPOINTS
    assert "no local endpoints" in t.reason
    on_endpoint_node = sim("ext", "worker-2:30081")
    assert on_endpoint_node.verdict == Verdict.DELIVERED
    assert on_endpoint_node.source_seen_by_server == "192.168.10.100"  # client IP kept


def test_hairpin_through_own_service_is_masqueraded_to_the_bridge_address():
    t = sim("a", "self")
    assert t.verdict == Verdict.DELIVERED
    assert t.delivered_to == "pod default/a"
    assert t.snat is not None and t.snat.after.src == "10.244.1.1"
    assert any("hairpin" in h.match for h in t.hops_at("bridge"))


def test_dns_query_goes_through_kube_dns_to_a_coredns_pod():
    t = sim("a", "kube-system/kube-dns", port="dns")
    assert t.probe.proto == "udp" and t.probe.dport == 53
    assert t.dnat is not None and t.dnat.k8s_ref.service == "kube-system/kube-dns"
    assert t.delivered_to == "pod kube-system/coredns-1"


def test_node_to_clusterip_is_dnatted_in_output_and_masqueraded():
    t = sim("worker-1", "web")
    assert t.dnat is not None and t.dnat.stage == "netfilter:nat/OUTPUT"
    assert t.snat is not None and t.source_seen_by_server == "10.244.1.0"


def test_without_proxy_rules_a_clusterip_leaves_by_the_default_route_and_is_lost():
    t = sim("a", "10.96.0.20:80", proxy=False)
    assert t.verdict == Verdict.DROPPED
    assert t.hops[-1].stage == "underlay"


def test_port_nothing_listens_on_is_dropped_for_no_listener():
    t = sim("a", "c", port=9999)
    assert t.verdict == Verdict.DROPPED
    assert t.drop_reason == DropReason.NO_LISTENER
    assert t.hops[-1].action == Action.DROPPED


def test_icmp_echo_to_a_pod_is_answered():
    t = sim("a", "c", proto="icmp")
    assert t.verdict == Verdict.DELIVERED
    assert t.minimal[-1] == "verdict: DELIVERED"
