"""`knetlab proxy rules` in IPVS mode: kernel state grouped by service port, and its tree."""

from __future__ import annotations

import re

from rich.console import Console

from netlab.cli.rules_render import rules_tree
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.netlink import Dest, Stats
from netlab.proxy.ipvs.render import VirtualServer
from netlab.proxy.ipvs.rules_view import group
from netlab.proxy.rules_view import Rule
from tests.unit.proxy_objects import port, service

WEB = service("default", "web", "10.96.5.5", [port("http", 80, 8080, node_port=30080)],
              svc_type="NodePort")
CLUSTER = VirtualServer("TCP", "10.96.5.5", 80)
NODE_PORT = VirtualServer("TCP", "192.168.10.3", 30080)
STRAY = VirtualServer("UDP", "10.96.9.9", 53)


def dest(ip: str, packets: int, weight: int = 1) -> Dest:
    return Dest(ip, 8080, weight, 0, 0, 2, Stats(2, packets, packets, packets * 60, 0))


SERVERS = [
    (NODE_PORT, Stats(), [dest("10.244.1.3", 4)]),
    (CLUSTER, Stats(), [dest("10.244.2.3", 7), dest("10.244.1.3", 5, weight=0)]),
    (STRAY, Stats(packets_in=3, bytes_in=180), []),
]
SETS = {n.CLUSTER_IP: frozenset({"10.96.5.5,tcp:80"}), n.NODE_PORT_TCP: frozenset({"30080"}),
        n.LOOP_BACK: frozenset({"10.244.1.3,tcp:8080,10.244.1.3"}),
        n.IPVS_IPS: frozenset({"10.96.5.5", "10.96.9.9"})}
IPTABLES = [Rule("nat", n.KUBE_SERVICES, 1, "-s 127.0.0.0/8 -j RETURN", "RETURN", "", 9, 540)]


def test_virtual_servers_and_set_members_are_grouped_under_their_service_port():
    view = group(SERVERS, SETS, [WEB], IPTABLES)
    (ports,) = view.services.values()
    (http,) = ports
    assert (http.service, http.port) == ("default/web", "http")
    assert [(r.table, r.chain, r.spec) for r in http.rules] == [
        ("ipvs", "TCP  10.96.5.5:80 rr",
         "-> 10.244.1.3:8080 Masq weight 0 active 0 inactive 2"),
        ("ipvs", "TCP  10.96.5.5:80 rr",
         "-> 10.244.2.3:8080 Masq weight 1 active 0 inactive 2"),
        ("ipvs", "TCP  192.168.10.3:30080 rr",
         "-> 10.244.1.3:8080 Masq weight 1 active 0 inactive 2"),
        ("ipset", n.LOOP_BACK, "10.244.1.3,tcp:8080,10.244.1.3"),
        ("ipset", n.CLUSTER_IP, "10.96.5.5,tcp:80"),
        ("ipset", n.NODE_PORT_TCP, "30080"),
        ("ipset", n.IPVS_IPS, "10.96.5.5"),
    ]
    assert http.packets == 5 + 7 + 4  # what IPVS counted towards the real servers


def test_what_no_service_claims_is_shared_with_the_iptables_rules():
    view = group(SERVERS, SETS, [WEB], IPTABLES)
    assert [(r.table, r.chain, r.spec) for r in view.common] == [
        ("nat", n.KUBE_SERVICES, "-s 127.0.0.0/8 -j RETURN"),
        ("ipvs", "UDP  10.96.9.9:53 rr",
         "(no real server: new connections get ICMP port unreachable)"),
        ("ipset", n.IPVS_IPS, "10.96.9.9"),
    ]


def test_one_service_leaves_out_the_others_and_the_shared_part():
    other = service("default", "db", "10.96.7.7", [port("pg", 5432)])
    view = group(SERVERS, SETS, [WEB, other], IPTABLES, service="default/db")
    assert view.services == {} and view.common == []


def test_the_tree_shows_virtual_servers_like_ipvsadm_and_sets_without_counters():
    console = Console(width=160, record=True)
    console.print(rules_tree(group(SERVERS, SETS, [WEB], IPTABLES), "worker-1", "ipvs"))
    text = console.export_text()
    assert "kube-proxy rules (ipvs mode)" in text
    assert "ipvs TCP  10.96.5.5:80 rr" in text
    assert "-> 10.244.2.3:8080 Masq weight 1 active 0 inactive 2" in text
    assert re.search(r"1\s+-\s+-\s+30080 *$", text, re.MULTILINE)  # a member: no counters
