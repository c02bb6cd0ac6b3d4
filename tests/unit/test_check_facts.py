"""`check svc`'s pure judgements: selectors, ports, endpoints, rules, resolv.conf."""

from __future__ import annotations

import copy

import pytest

from netlab.check import facts, resolv, rules, steps_objects
from netlab.check.model import FAILED, PASSED, SKIPPED
from netlab.proxy.model import service_ports
from netlab.proxy.rules_view import Rule
from tests.unit.check_objects import BACKENDS, CLIENT, context, endpoint_slice, pod, service

# -- selector -------------------------------------------------------------------------------


def test_near_misses_say_what_differs_closest_first():
    pods = [pod("web-a", "10.244.1.3", labels={"app": "web", "tier": "be"}),
            pod("other", "10.244.1.4", labels={"role": "db"}),
            pod("named", "10.244.1.5", labels={"name": "webb"})]
    assert facts.near_misses({"app": "webb", "tier": "be"}, pods) == [
        "web-a: app=web (selector wants app=webb)",
        "named: name=webb (selector wants app=webb); no label tier (selector wants tier=be)",
    ]


def test_selector_step_fails_with_near_misses_and_matches_elsewhere():
    elsewhere = pod("web-x", "10.244.2.9", labels={"app": "webb"}, namespace="prod")
    ctx = context(svc=service(selector={"app": "webb"}), pods=[*BACKENDS, CLIENT, elsewhere])
    outcome = steps_objects.selector_matches(ctx)
    assert outcome.status == FAILED
    assert outcome.evidence == (
        "selector app=webb matches no pod in namespace default (3 pods there)",
        "near miss: web-a: app=web (selector wants app=webb)",
        "near miss: web-b: app=web (selector wants app=webb)",
        "matching pods in other namespaces (a Service selects in its own only): prod/web-x",
    )


def test_selector_step_lists_label_keys_when_nothing_is_close():
    ctx = context(svc=service(selector={"tier": "cache"}))
    outcome = steps_objects.selector_matches(ctx)
    assert outcome.evidence[-1] == "label keys of the pods there: app"


def test_a_service_without_selector_skips_the_pod_steps_without_blocking():
    ctx = context(svc=service(selector={}))
    for step in (steps_objects.selector_matches, steps_objects.pods_ready,
                 steps_objects.target_port):
        outcome = step(ctx)
        assert outcome.status == SKIPPED and "no selector" in outcome.hint


# -- pods -----------------------------------------------------------------------------------


def test_pods_ready_fails_only_when_no_selected_pod_serves():
    unready = [pod("web-a", "10.244.1.3", ready=False), pod("web-b", "10.244.2.2", ready=False)]
    for p in unready:
        p["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"port": 8080,
                                                                    "path": "/nope"}}
    outcome = steps_objects.pods_ready(context(pods=[*unready, CLIENT]))
    assert outcome.status == FAILED
    assert outcome.evidence[0] == ("web-a on worker-1 (10.244.1.3): Running, not Ready: "
                                   "readiness probe httpGet :8080/nope")
    half = steps_objects.pods_ready(context(pods=[unready[0], BACKENDS[1], CLIENT]))
    assert half.status == PASSED
    assert half.evidence[-1] == "1 of 2 pods serve; the others get no traffic"


# -- ports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port, problem", [
    ({"port": 80, "targetPort": "http"}, None),
    ({"port": 80, "targetPort": 8080}, None),
    ({"port": 80}, "no containerPort 80/TCP"),
    ({"port": 80, "targetPort": 9376}, "no containerPort 9376/TCP"),
    ({"port": 80, "targetPort": "web"}, "no containerPort is named web"),
    ({"port": 80, "targetPort": "udp"}, "its port udp is udp 8081/UDP, not TCP"),
    ({"port": 81, "targetPort": "udp", "protocol": "UDP"}, None),
])
def test_target_port_must_name_a_container_port(port, problem):
    assert facts.target_port_problem(port, BACKENDS[0]) == problem


def test_a_numeric_target_port_is_trusted_when_the_pod_declares_no_ports():
    bare = pod("bare", "10.244.1.9", ports=[])
    assert facts.target_port_problem({"port": 80, "targetPort": 9376}, bare) is None


def test_target_port_step_shows_the_pods_ports():
    ctx = context(svc=service(ports=[{"name": "http", "port": 80, "targetPort": "htp"}]))
    outcome = steps_objects.target_port(ctx)
    assert outcome.status == FAILED
    assert outcome.evidence[0] == ("http 80/TCP: targetPort htp does not fit pod web-a: no "
                                   "containerPort is named htp (its ports: http 8080/TCP, "
                                   "udp 8081/UDP)")
    good = steps_objects.target_port(context())
    assert good.evidence == ("http 80/TCP: targetPort http -> containerPort 8080 on 2 pod(s)",)


# -- endpoints ------------------------------------------------------------------------------


def test_endpoints_step_fails_on_a_port_without_ready_endpoints():
    unready = [pod("web-a", "10.244.1.3", ready=False)]
    ctx = context(pods=[*unready, CLIENT],
                  slices=[endpoint_slice(unready, [("http", 8080, "TCP")])])
    outcome = steps_objects.endpoints(ctx)
    assert outcome.status == FAILED
    assert outcome.evidence == ("EndpointSlices: web-abcde",
                                "http 80/TCP: 0 ready of 1: 10.244.1.3:8080 (web-a, worker-1) "
                                "not ready")


def test_no_endpointslice_at_all_fails():
    outcome = steps_objects.endpoints(context(slices=[]))
    assert outcome.status == FAILED and "none" in outcome.evidence[0]


def test_expected_endpoints_follow_the_traffic_policy():
    svc = service(internalTrafficPolicy="Local")
    slices = [endpoint_slice(BACKENDS, [("http", 8080, "TCP")])]
    expected = facts.expected_on_node(svc, slices, "worker-1")
    (required, allowed), = expected.values()
    assert required == {"10.244.1.3:8080"}
    assert allowed == {"10.244.1.3:8080", "10.244.2.2:8080"}


# -- the source of traffic ------------------------------------------------------------------


def test_the_source_is_a_pod_the_service_does_not_select():
    dns = pod("coredns-1", "10.244.0.2", labels={"k8s-app": "kube-dns"},
              namespace="kube-system")
    assert facts.choose_source(service(), [*BACKENDS, dns, CLIENT]) is CLIENT
    assert facts.choose_source(service(), [*BACKENDS, dns]) is dns
    assert facts.choose_source(service(), BACKENDS) is BACKENDS[0]
    stopped = copy.deepcopy(CLIENT)
    stopped["status"]["phase"] = "Pending"
    assert facts.choose_source(service(), [stopped]) is None


def test_how_to_speak_to_a_port():
    assert facts.speaks(BACKENDS[0], "TCP", 8080) == "http"
    assert facts.speaks(BACKENDS[0], "UDP", 8081) == "udp"
    assert facts.speaks(BACKENDS[0], "TCP", 9999) == "tcp"
    assert facts.speaks(None, "TCP", 80) == "tcp"


# -- rules ----------------------------------------------------------------------------------

NODEPORT_SVC = service(type="NodePort", ports=[{"name": "http", "port": 80, "targetPort": 8080,
                                                "protocol": "TCP", "nodePort": 30080}])
PORT = next(iter(service_ports(NODEPORT_SVC).values()))


def ipt(table: str, chain: str, spec: str) -> Rule:
    target = spec.rsplit("-j ", 1)[1].split()[0]
    return Rule(table, chain, 1, spec, target, "", 0, 0)


def nft(chain: str, spec: str) -> Rule:
    return Rule("kube-proxy", chain, 1, spec, "", "", 0, 0)


IPTABLES = [
    ipt("nat", "KUBE-SERVICES", '-d 10.96.0.50/32 -p tcp -m comment --comment '
        '"default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-X'),
    ipt("nat", "KUBE-NODEPORTS", '-p tcp -m comment --comment "default/web:http" -m tcp '
        '--dport 30080 -j KUBE-EXT-X'),
    ipt("nat", "KUBE-SEP-A", "-p tcp -m tcp -j DNAT --to-destination 10.244.1.3:8080"),
    ipt("nat", "KUBE-SEP-B", "-p tcp -m tcp -j DNAT --to-destination 10.244.2.2:8080"),
]
NFT = [
    nft("service-ips", "10.96.0.50 . tcp . 80 : goto service-X-default/web/tcp/http"),
    nft("service-nodeports", "tcp . 30080 : goto external-X-default/web/tcp/http"),
    nft("endpoint-A", "meta l4proto tcp counter dnat to 10.244.1.3:8080"),
    nft("endpoint-B", "meta l4proto tcp counter dnat to 10.244.2.2:8080"),
]
BOTH = {"10.244.1.3:8080", "10.244.2.2:8080"}


@pytest.mark.parametrize("rule_set", [IPTABLES, NFT], ids=["iptables", "nftables"])
def test_complete_rules_have_no_problems(rule_set):
    have = rules.found(rule_set, PORT)
    assert have.cluster_ip and have.node_port and have.dnat == BOTH
    assert rules.problems(have, PORT, BOTH, BOTH) == []
    assert rules.summary(have, PORT) == ("10.96.0.50:80 + NodePort 30080 -> DNAT to "
                                         "10.244.1.3:8080, 10.244.2.2:8080 (4 rules)")


@pytest.mark.parametrize("rule_set", [IPTABLES, NFT], ids=["iptables", "nftables"])
def test_missing_and_stale_rules_are_named(rule_set):
    have = rules.found(rule_set[1:3], PORT)
    expected = {"10.244.2.2:8080", "10.244.2.7:8080"}
    assert rules.problems(have, PORT, expected, expected) == [
        "no rule catches 10.96.0.50:80/TCP",
        "no DNAT to 10.244.2.2:8080, 10.244.2.7:8080 reachable from its rules",
        "DNAT to 10.244.1.3:8080, which is no endpoint (stale rules)",
    ]


def test_the_no_endpoints_reject_is_not_a_frontend():
    rejects = [ipt("filter", "KUBE-SERVICES", '-d 10.96.0.50/32 -p tcp -m comment --comment '
                   '"default/web:http has no endpoints" -m tcp --dport 80 -j REJECT')]
    have = rules.found(rejects, PORT)
    assert not have.cluster_ip and have.no_endpoints
    assert rules.problems(have, PORT, set(), set())[0] == (
        "no rule catches 10.96.0.50:80/TCP (only the no-endpoints REJECT)")


def test_a_rule_for_another_port_does_not_count():
    other = [ipt("nat", "KUBE-SERVICES", "-d 10.96.0.50/32 -p tcp -m tcp --dport 8080 "
                 "-j KUBE-SVC-X")]
    assert not rules.found(other, PORT).cluster_ip


# -- resolv.conf ----------------------------------------------------------------------------

KUBELET = "search default.svc.cluster.local svc.cluster.local cluster.local\n" \
          "nameserver 10.96.0.10\noptions ndots:5\n"


def test_resolv_conf_is_read_as_the_resolver_reads_it():
    conf = resolv.parse("# written by kubelet\n" + KUBELET + "domain other.local\n")
    assert conf == resolv.ResolvConf(("10.96.0.10",), ("other.local",), 5)
    assert resolv.parse("nameserver 1.1.1.1").ndots == 1


def test_short_names_try_the_search_path_first():
    conf = resolv.parse(KUBELET)
    assert resolv.candidates("web", conf) == [
        "web.default.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.",
        "web."]
    assert resolv.candidates("web.default.svc.cluster.local.", conf) == [
        "web.default.svc.cluster.local."]
    few = resolv.parse("search default.svc.cluster.local\noptions ndots:1")
    assert resolv.candidates("web.default", few) == ["web.default.",
                                                     "web.default.default.svc.cluster.local."]


def test_a_headless_services_endpoints_count_though_kube_proxy_ignores_its_slices():
    svc = service(clusterIP="None")
    eps = endpoint_slice(BACKENDS, [("http", 8080, "TCP")])
    eps["metadata"]["labels"]["service.kubernetes.io/headless"] = ""
    ctx = context(svc=svc, slices=[eps])
    assert steps_objects.endpoints(ctx).status == PASSED
    assert facts.not_proxied(svc) == ("a headless Service (clusterIP: None) has no ClusterIP "
                                      "and no proxy rules")
    assert facts.slice_endpoints([eps]) == {}  # what kube-proxy sees
