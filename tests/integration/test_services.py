"""Services through the kernel, after the Kubernetes e2e Service tests (issues 3 and 6).

Each test is named after the e2e test it mirrors (the docstring quotes the e2e
name; ux-anchors.md §6). Every test runs once per proxy mode (iptables,
nftables, ipvs), each mode on a lab of its own; IPVS needs ip_vs and dummy, so
its run is skipped, with the kernel's reason, on hosts whose kernel lacks them
(tests/vm/test_ipvs_services.py runs it inside a VM). A lab holds three netexec
backends labelled `tier=be` (b1 on worker-1, b2 and b3 on worker-2) and two
client pods (c1 on worker-1, c2 on worker-2). Every test makes its own Services
(and pods, where it needs them) and removes them again; the lab's host
footprint is checked at the end.

Where kube-proxy's own modes behave differently, the test says what each mode
does (`MODE_DIFFERENCES`: an expected failure, strict, with the reason), so a
mode that starts to behave like another is noticed too.

Traffic is real: each request is a new TCP connection or UDP socket made inside a
pod, node or `ext` namespace (tests/integration/svc_traffic.py), so it crosses
veths, the cni0 bridge, VXLAN and the proxy's rules (or IPVS) in the kernel.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netlab.api import keys
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from netlab.proxy import modes
from netlab.proxy.rules_view import read_rules
from tests.hoststate import HostState
from tests.integration import svc_traffic
from tests.integration.labs import lab_data, pod
from tests.integration.svc_traffic import Client

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

MODES = ("iptables", "nftables", "ipvs")
# Waits for the proxies to converge, stretched where the CPU is emulated: under TCG
# (tests/vm) every instruction runs in software, 15 to 35 times slower on this project's
# machine, and a node's full sync takes seconds. What each test checks is unchanged.
TIME_SCALE = float(os.environ.get("KNETLAB_TEST_TIME_SCALE", "1"))
LABS = {"iptables": "ipvs-sv-ipt", "nftables": "ipvs-sv-nft", "ipvs": "ipvs-sv-ipvs"}
BACKENDS = {"b1": "worker-1", "b2": "worker-2", "b3": "worker-2"}
CLIENTS = {"c1": "worker-1", "c2": "worker-2"}
EXT_IP = "192.168.10.100"  # the lab file's default `ext` address
IGNORED = ("service.kubernetes.io/headless", "service.kubernetes.io/service-proxy-name")


def backend(name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    """A netexec pod with named ports: http 8080, udp 8081 and, in a second container, alt 9090."""
    obj = pod(name, node)
    main = obj["spec"]["containers"][0]
    main["ports"] = [{"name": "http", "containerPort": 8080},
                     {"name": "udp", "containerPort": 8081, "protocol": "UDP"}]
    main["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080},
                              "periodSeconds": 1}
    obj["spec"]["containers"].append({
        "name": "alt", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
        "args": ["netexec", "--http-port=9090", "--udp-port=-1"],
        "ports": [{"name": "alt", "containerPort": 9090}]})
    obj["metadata"]["labels"].update(labels)
    return obj


def service(name: str, selector: dict[str, str] | None = None,
            ports: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ports": ports or [{"name": "http", "port": 80, "targetPort": "http"}], **spec}
    body["selector"] = {"tier": "be"} if selector is None else selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels or {}}, "spec": body}


# (test, mode) -> why kube-proxy's mode behaves otherwise there. Each is an expected
# failure, strict: the day that mode behaves like the others, the test says so.
MODE_DIFFERENCES = {
    ("test_respect_internal_traffic_policy_local_pod_to_pod", "ipvs"):
        "kube-proxy's IPVS mode keeps the virtual server of an internalTrafficPolicy=Local "
        "Service on a node without local endpoints, with no real server: the kernel answers "
        "ICMP port unreachable (refused) where iptables and nftables mode DROP (a timeout)",
    ("test_external_traffic_policy_local_keeps_the_client_ip", "ipvs"):
        "kube-proxy's IPVS mode gives an externalTrafficPolicy=Local NodePort on a node "
        "without local endpoints every endpoint (kubernetes PR #97081); flannel masquerades "
        "traffic from outside the pod network to another node's pods (`! -s 10.244.0.0/16 "
        "-d 10.244.0.0/16`), so the answer finds its way back and the connection succeeds, "
        "without the client's address, where iptables and nftables mode DROP (a timeout)",
}
# Tests of the API server and the store, not of the proxy: run once, in iptables mode.
PROXY_INDEPENDENT = ("test_bad_service_is_refused_with_a_clear_message",)


@pytest.fixture(scope="module", params=MODES)
def lab(request: pytest.FixtureRequest) -> Iterator[RunningLab]:
    mode = request.param
    missing = modes.ipvs_missing() if mode == "ipvs" else []
    if missing:
        pytest.skip(f"proxy mode ipvs: this kernel lacks {' and '.join(missing)} "
                    "(tests/vm runs these in a VM)")
    name = LABS[mode]
    before = HostState.capture(name)
    data = lab_data(name)
    data["dns"] = {"enabled": False}  # not under test here; two fewer pods to wait for
    data["proxy"] = {"mode": mode}
    running = start_lab(data, name)
    try:
        running.apply([backend(n, node, {"tier": "be"}) for n, node in BACKENDS.items()]
                      + [pod(n, node) for n, node in CLIENTS.items()])
        running.wait_ready()
        yield running
    finally:
        lifecycle.down(name)
    assert lab_footprint(HostState.capture(name), name).differences(
        lab_footprint(before, name)) == []


def lab_footprint(state: HostState, lab: str) -> HostState:
    """The host state with only what this lab makes, namespaces and processes.

    A lab names its namespaces `nl-<lab>-*` and starts its processes with
    `--state-dir /run/knetlab/<lab>` (and records both), so that is all it can
    leave behind; namespaces and processes of other people's tests and tools
    come and go while this module runs on a shared machine (and a guest's /etc
    shows the host's, changes included).
    """
    prefix = f"nl-{lab}-"

    def keep(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if n.startswith(prefix))

    return dataclasses.replace(
        state, netns=keep(state.netns), etc_netns=keep(state.etc_netns),
        run_netns=keep(state.run_netns),
        mounts=tuple(m for m in state.mounts
                     if f"/{prefix}" in m or m in ("/run/netns", "/etc/netns")),
        processes=tuple(p for p in state.processes if f"/run/knetlab/{lab} " in p + " "))


@pytest.fixture(autouse=True)
def mode_differences(request: pytest.FixtureRequest, lab: RunningLab) -> None:
    """Mark this test's expected failure in this mode, or skip a proxy-independent rerun."""
    mode = lab.config.proxy_mode
    test = request.node.originalname
    if test in PROXY_INDEPENDENT and mode != MODES[0]:
        pytest.skip(f"tests the API server, not the proxy: runs in {MODES[0]} mode only")
    reason = MODE_DIFFERENCES.get((test, mode))
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


class Made:
    """Objects a test applied, deleted again when it ends (pods waited for)."""

    def __init__(self, lab: RunningLab) -> None:
        self.lab = lab
        self.objs: list[dict[str, Any]] = []

    def __call__(self, *objs: dict[str, Any]) -> None:
        self.lab.apply([copy.deepcopy(o) for o in objs])
        self.objs.extend(o for o in objs if (o["kind"], o["metadata"]["name"]) not in
                         {(m["kind"], m["metadata"]["name"]) for m in self.objs})

    def cleanup(self) -> None:
        for obj in reversed(self.objs):
            self.lab.delete(obj["kind"], obj["metadata"]["name"])
        for obj in self.objs:
            if obj["kind"] in ("Pod", "Deployment"):
                self.lab.wait_for(lambda o=obj: not any(
                    p["metadata"]["name"] == o["metadata"]["name"]
                    or p["metadata"]["name"].startswith(o["metadata"]["name"] + "-")
                    for p in self.lab.pods()), 30 * TIME_SCALE,
                    what=f"{obj['metadata']['name']} to go")


@pytest.fixture
def made(lab: RunningLab) -> Iterator[Made]:
    objs = Made(lab)
    try:
        yield objs
    finally:
        objs.cleanup()


def eventually(check: Callable[[], object], timeout: float = 15.0, what: str = "it") -> object:
    """svc_traffic.eventually, with the wait stretched by TIME_SCALE."""
    return svc_traffic.eventually(check, timeout * TIME_SCALE, what)


def cluster_ip(lab: RunningLab, name: str) -> str:
    return lab.objects.get("Service", "default", name)["spec"]["clusterIP"]


def node_port(lab: RunningLab, name: str, index: int = 0) -> int:
    return lab.objects.get("Service", "default", name)["spec"]["ports"][index]["nodePort"]


def view_of(lab: RunningLab, node: str, name: str):  # type: ignore[no-untyped-def]
    """kube-proxy's state on `node` for default/<name>, in the lab's mode."""
    mode = lab.config.proxy_mode
    services = lab.objects.list("Service")[0] if mode == "ipvs" else ()
    return read_rules(lab.netns(node), service=f"default/{name}", mode=mode, services=services)


def rules_of(lab: RunningLab, node: str, name: str) -> list[str]:
    """Every kube-proxy rule (IPVS: real server, ipset member) on `node` for default/<name>."""
    return [f"{r.table} {r.chain} {r.spec}" for ports in view_of(lab, node, name).services.values()
            for p in ports for r in p.rules]


def ports_with_rules(lab: RunningLab, node: str, name: str) -> set[str]:
    return {p.port for ports in view_of(lab, node, name).services.values() for p in ports}


def sends_to(lab: RunningLab, ip: str, port: int) -> str:
    """How the mode's rules spell "to this endpoint"."""
    return {"iptables": f"--to-destination {ip}:{port}", "nftables": f"dnat to {ip}:{port}",
            "ipvs": f"-> {ip}:{port} "}[lab.config.proxy_mode]


def has_no_endpoints(lab: RunningLab, rule: str) -> bool:
    """The rule that answers a Service without endpoints: iptables and nftables REJECT;
    IPVS keeps the virtual server with no real server (the kernel sends ICMP unreachable)."""
    return {"iptables": "has no endpoints" in rule and "REJECT" in rule,
            "nftables": "no-endpoint-services" in rule and "reject-chain" in rule,
            "ipvs": rule.startswith("ipvs ") and "(no real server" in rule,
            }[lab.config.proxy_mode]


def has_affinity(lab: RunningLab, rule: str) -> bool:
    """ClientIP affinity: `recent` (iptables), an affinity set (nftables), persistence (IPVS)."""
    return {"iptables": "--rcheck" in rule, "nftables": "@affinity-" in rule,
            "ipvs": " persistent " in rule}[lab.config.proxy_mode]


def up(client: Client, ip: str, port: int = 80, want: set[str] | None = None,
       protocol: str = "TCP", timeout: float = 15.0) -> set[str]:
    """Wait until the Service answers (with exactly `want` among 30 answers, if given)."""
    def check() -> set[str] | None:
        seen = set(client.hostnames(ip, port, 30 if want else 1, protocol))
        return seen if want is None or seen == want else None
    return eventually(check, timeout, f"{client.source} -> {ip}:{port}/{protocol} "
                                      f"to answer with {sorted(want or ['anything'])}")


def refused(lab: RunningLab, client: Client, node: str, name: str, ip: str) -> float:
    """Wait for the no-endpoints rule on the client's node, then connect once: refused.

    One attempt, as the e2e test makes (`agnhost connect --timeout=3s`): the
    kernel sends at most one ICMP error per second to a host after a burst of six
    (net.ipv4.icmp_ratelimit), so polling with connects would soon see timeouts.
    Returns when the attempt started.
    """
    eventually(lambda: any(has_no_endpoints(lab, r) for r in rules_of(lab, node, name)),
               what=f"{name}'s no-endpoints rule")
    started = time.monotonic()
    assert client.error(ip, timeout=3) is ConnectionRefusedError
    return started


def knows_endpoints(lab: RunningLab, node: str, name: str) -> None:
    """Wait until `node`'s proxy has programmed the Service with its endpoints.

    A node without a local endpoint answers nothing to prove it has synced: before
    it knows the endpoints it REJECTs (no endpoints at all), after it DROPs.
    """
    eventually(lambda: (rules := rules_of(lab, node, name))
               and not any(has_no_endpoints(lab, r) for r in rules),
               what=f"{node}'s rules for {name} with its endpoints")


def down(client: Client, ip: str, port: int = 80, timeout: float = 15.0) -> None:
    """Wait until a request to ip:port fails (no rule any more: the packet goes nowhere)."""
    eventually(lambda: client.error(ip, port) is not None, timeout,
               f"{ip}:{port} to stop answering {client.source}")


# -- the e2e Service tests --------------------------------------------------------------


def test_serve_a_basic_endpoint_from_pods(lab, made):
    """Services should serve a basic endpoint from pods [Conformance]"""
    c1 = Client(lab, "c1")
    made(service("sv-basic", {"test": "basic"}))
    ip = cluster_ip(lab, "sv-basic")
    refused(lab, c1, "worker-1", "sv-basic", ip)
    made(backend("basic-1", "worker-1", {"test": "basic"}))
    up(c1, ip, want={"basic-1"})
    made(backend("basic-2", "worker-2", {"test": "basic"}))
    up(c1, ip, want={"basic-1", "basic-2"})
    lab.delete("Pod", "basic-1")
    up(c1, ip, want={"basic-2"})


def test_serve_multiport_endpoints_from_pods(lab, made):
    """Services should serve multiport endpoints from pods [Conformance] (named targetPorts)"""
    made(service("sv-multi", ports=[
        {"name": "portname1", "port": 80, "targetPort": "http"},
        {"name": "portname2", "port": 81, "targetPort": "alt"}]))
    ip = cluster_ip(lab, "sv-multi")
    c2 = Client(lab, "c2")
    up(c2, ip, 80, want=set(BACKENDS))
    up(c2, ip, 81, want=set(BACKENDS))
    slices = [s for s in lab.objects.list("EndpointSlice", "default")[0]
              if s["metadata"]["labels"].get("kubernetes.io/service-name") == "sv-multi"]
    assert {(p["name"], p["port"]) for s in slices for p in s["ports"]} == {
        ("portname1", 8080), ("portname2", 9090)}
    rules = rules_of(lab, "worker-2", "sv-multi")
    assert any(sends_to(lab, lab.pod_ip("b1"), 9090) in r for r in rules)


def test_updated_after_adding_or_deleting_ports(lab, made):
    """Services should be updated after adding or deleting ports"""
    c1 = Client(lab, "c1")
    tcp = {"name": "tcp-port", "port": 80, "targetPort": "http"}
    udp = {"name": "udp-port", "port": 81, "targetPort": "udp", "protocol": "UDP"}
    made(service("sv-ports", ports=[tcp]))
    ip = cluster_ip(lab, "sv-ports")
    up(c1, ip, 80)
    made(service("sv-ports", ports=[tcp, udp]))
    up(c1, ip, 81, protocol="UDP")
    made(service("sv-ports", ports=[udp]))
    down(c1, ip, 80)
    assert ports_with_rules(lab, "worker-1", "sv-ports") == {"udp-port"}
    assert c1.udp(ip, 81) in BACKENDS


def test_preserve_source_pod_ip_through_cluster_ip(lab, made):
    """Services should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]"""
    made(service("sv-srcip", {"app": "b1"}))
    ip = cluster_ip(lab, "sv-srcip")
    for source in ("c1", "c2"):  # same node as b1, and across the VXLAN overlay
        client = Client(lab, source)
        up(client, ip)
        assert client.http(ip, path="clientip").split(":")[0] == lab.pod_ip(source)


def test_pods_hairpin_back_to_themselves_through_services(lab, made):
    """Services should allow pods to hairpin back to themselves through services"""
    made(service("sv-hairpin", {"app": "b1"}))
    ip = cluster_ip(lab, "sv-hairpin")
    b1 = Client(lab, "b1")
    assert up(b1, ip) == {"b1"}
    # The SEP chain's hairpin rule masquerades: b1 sees its node's cni0 address.
    cni0 = lab.objects.get("Node", None, "worker-1")["spec"]["podCIDR"].replace(".0/24", ".1")
    assert b1.http(ip, path="clientip").split(":")[0] == cni0


def test_up_and_down_services(lab, made):
    """Services should be able to up and down services"""
    c2 = Client(lab, "c2")
    made(service("sv-up1"), service("sv-up2"))
    ip1, ip2 = cluster_ip(lab, "sv-up1"), cluster_ip(lab, "sv-up2")
    up(c2, ip1, want=set(BACKENDS))
    up(c2, ip2, want=set(BACKENDS))
    lab.delete("Service", "sv-up1")
    down(c2, ip1)
    assert rules_of(lab, "worker-2", "sv-up1") == []
    assert up(c2, ip2, want=set(BACKENDS))
    made(service("sv-up3"))
    ip3 = cluster_ip(lab, "sv-up3")
    assert ip3 != ip2
    up(c2, ip3, want=set(BACKENDS))
    up(c2, ip2, want=set(BACKENDS))


def test_work_after_the_service_has_been_recreated(lab, made):
    """Services should work after the service has been recreated"""
    c1 = Client(lab, "c1")
    made(service("sv-again"))
    ip = cluster_ip(lab, "sv-again")
    up(c1, ip)
    lab.delete("Service", "sv-again")
    down(c1, ip)
    made(service("sv-again"))
    up(c1, cluster_ip(lab, "sv-again"), want=set(BACKENDS))


def test_work_after_restarting_kube_proxy(lab, made):
    """Services should work after restarting kube-proxy [Disruptive]

    kill -9 of worker-1's agent (its kube-proxy role) while c1, on worker-1, sends
    a request every 50 ms: the rules stay in the kernel, the supervisor restarts the
    agent, its first sync is full and must not break one connection.
    """
    made(service("sv-stable"))
    ip = cluster_ip(lab, "sv-stable")
    c1 = Client(lab, "c1")
    up(c1, ip)
    failures: list[str] = []
    answers = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                answers.append(c1.http(ip, timeout=2))
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.05)

    agent = next(p for p in lab.state.processes() if p.role == "agent-worker-1")
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.5)
        killed = time.time()
        os.kill(agent.pid, signal.SIGKILL)
        lab.wait_for(lambda: any(p.role == "agent-worker-1" and p.pid != agent.pid
                                 and p.alive() for p in lab.state.processes()),
                     30 * TIME_SCALE, what="the agent to be restarted")
        eventually(lambda: last_sync(lab, "worker-1") > killed, 30,
                   "the restarted proxy to sync")
        time.sleep(1)
    finally:
        stop.set()
        sender.join()
    assert failures == [] and len(answers) > 10
    made(service("sv-after"))  # and the restarted proxy follows changes
    up(c1, cluster_ip(lab, "sv-after"))


def last_sync(lab: RunningLab, node: str) -> float:
    metrics = lab.exec(node, "curl", "-s", "--max-time", "2",
                       f"http://{lab.node_ip(node)}:10249/metrics", check=False).stdout
    for line in metrics.splitlines():
        if line.startswith("kubeproxy_sync_proxy_rules_last_timestamp_seconds"):
            return float(line.split()[-1])
    return 0.0


def test_create_a_functioning_nodeport_service(lab, made):
    """Services should be able to create a functioning NodePort service [Conformance]"""
    made(service("sv-np", type="NodePort"))
    port = node_port(lab, "sv-np")
    assert 30000 <= port <= 32767
    ext = Client(lab, "ext")
    for node in ("control-plane", "worker-1", "worker-2"):
        up(ext, lab.node_ip(node), port)
    assert up(ext, lab.node_ip("control-plane"), port, want=set(BACKENDS))
    # externalTrafficPolicy Cluster: the backend sees a node's address, not the client's.
    seen = ext.http(lab.node_ip("worker-1"), port, "clientip").split(":")[0]
    assert seen != EXT_IP


def test_nodeport_on_the_same_port_number_with_tcp_and_udp(lab, made):
    """Services should be able to update service type to NodePort listening on same port
    number but different protocols"""
    ports = [{"name": "tcp", "port": 80, "targetPort": "http"},
             {"name": "udp", "port": 80, "targetPort": "udp", "protocol": "UDP"}]
    made(service("sv-both", ports=ports))
    ip = cluster_ip(lab, "sv-both")
    c1 = Client(lab, "c1")
    up(c1, ip, 80)
    up(c1, ip, 80, protocol="UDP")
    made(service("sv-both", ports=ports, type="NodePort"))
    tcp_port, udp_port = node_port(lab, "sv-both", 0), node_port(lab, "sv-both", 1)
    assert tcp_port == udp_port
    ext = Client(lab, "ext")
    up(ext, lab.node_ip("worker-2"), tcp_port)
    up(ext, lab.node_ip("worker-2"), udp_port, protocol="UDP")
    eventually(lambda: ext.udp(lab.node_ip("worker-1"), udp_port, "echo same") == "same",
               what="UDP echo through worker-1's nodePort")


def test_rejected_when_no_endpoints_exist(lab, made):
    """Services should be rejected when no endpoints exist"""
    made(service("sv-empty", {"test": "nothing-has-this"}))
    ip = cluster_ip(lab, "sv-empty")
    started = refused(lab, Client(lab, "c2"), "worker-2", "sv-empty", ip)
    assert time.monotonic() - started < 0.5  # refused at once, not a timeout


@pytest.mark.parametrize("label", IGNORED)
def test_implement_service_labels_that_opt_out_of_this_proxy(lab, made, label):
    """Services should implement service.kubernetes.io/headless
    Services should implement service.kubernetes.io/service-proxy-name

    A Service carrying either label is not programmed (no rules at all); without
    the label, the same Service works.
    """
    value = "" if label.endswith("headless") else "foo-bar"
    made(service("sv-opt-out", labels={label: value}), service("sv-opt-ref"))
    ip, reference = cluster_ip(lab, "sv-opt-out"), cluster_ip(lab, "sv-opt-ref")
    c1 = Client(lab, "c1")
    up(c1, reference)
    # The run for the other label ends with an unlabelled sv-opt-out on the same ClusterIP
    # (derived from the name), deleted a moment ago: wait for the proxy to take it away.
    eventually(lambda: c1.error(ip) is not None, what="nothing to answer on its ClusterIP")
    assert rules_of(lab, "worker-1", "sv-opt-out") == []
    made(service("sv-opt-out"))  # the label removed
    up(c1, ip, want=set(BACKENDS))


def test_session_affinity_for_a_cluster_ip_service(lab, made):
    """Services should have session affinity work for service with type clusterIP
    [LinuxOnly] [Conformance]"""
    made(service("sv-sticky", sessionAffinity="ClientIP"))
    ip = cluster_ip(lab, "sv-sticky")
    for source in ("c1", "c2"):
        client = Client(lab, source)
        up(client, ip)
        assert len(client.hostnames(ip, count=15)) == 1  # e2e AffinityConfirmCount


def test_switch_session_affinity_for_a_cluster_ip_service(lab, made):
    """Services should be able to switch session affinity for service with type clusterIP
    [LinuxOnly] [Conformance]"""
    c1 = Client(lab, "c1")
    made(service("sv-switch"))
    ip = cluster_ip(lab, "sv-switch")
    up(c1, ip, want=set(BACKENDS))
    made(service("sv-switch", sessionAffinity="ClientIP"))
    eventually(lambda: any(has_affinity(lab, r) for r in rules_of(lab, "worker-1", "sv-switch")),
               what="affinity rules")
    assert len(c1.hostnames(ip, count=15)) == 1
    made(service("sv-switch"))
    eventually(lambda: not any(has_affinity(lab, r)
                               for r in rules_of(lab, "worker-1", "sv-switch")),
               what="affinity rules to go")
    assert len(c1.hostnames(ip, count=30)) > 1


def test_respect_internal_traffic_policy_local_pod_to_pod(lab, made):
    """Services should respect internalTrafficPolicy=Local Pod to Pod"""
    made(service("sv-itp", internalTrafficPolicy="Local"),
         service("sv-itp-b1", {"app": "b1"}, internalTrafficPolicy="Local"))
    ip, only_b1 = cluster_ip(lab, "sv-itp"), cluster_ip(lab, "sv-itp-b1")
    c1, c2 = Client(lab, "c1"), Client(lab, "c2")
    assert up(c1, ip, want={"b1"})
    assert up(c2, ip, want={"b2", "b3"})
    up(c1, only_b1)
    # worker-2 has no local endpoint: DROP (a timeout), not REJECT (IPVS: see MODE_DIFFERENCES).
    knows_endpoints(lab, "worker-2", "sv-itp-b1")
    assert c2.error(only_b1) is TimeoutError


def test_external_traffic_policy_local_keeps_the_client_ip(lab, made):
    """Services should work with externalTrafficPolicy=Local: the client IP is kept and a
    node without a local endpoint drops the traffic (kube-proxy.md §1.8)"""
    made(service("sv-etp", type="NodePort", externalTrafficPolicy="Local"))
    port = node_port(lab, "sv-etp")
    ext = Client(lab, "ext")
    assert up(ext, lab.node_ip("worker-1"), port, want={"b1"})
    assert up(ext, lab.node_ip("worker-2"), port, want={"b2", "b3"})
    assert ext.http(lab.node_ip("worker-1"), port, "clientip").split(":")[0] == EXT_IP
    # No local endpoint: DROP (IPVS: see MODE_DIFFERENCES).
    knows_endpoints(lab, "control-plane", "sv-etp")
    assert ext.error(lab.node_ip("control-plane"), port) is TimeoutError


def test_create_endpoints_for_unready_pods(lab, made):
    """Services should create endpoints for unready pods (publishNotReadyAddresses)"""
    unready = backend("unready", "worker-2", {"test": "unready"})
    unready["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 9999},
                                                          "periodSeconds": 1}
    made(unready, service("sv-publish", {"test": "unready"}, publishNotReadyAddresses=True),
         service("sv-ready-only", {"test": "unready"}))
    c1 = Client(lab, "c1")
    assert up(c1, cluster_ip(lab, "sv-publish"), timeout=30) == {"unready"}
    assert c1.error(cluster_ip(lab, "sv-ready-only")) is ConnectionRefusedError
    conditions = {c["type"]: c["status"] for c in lab.pod("unready")["status"]["conditions"]}
    assert conditions["Ready"] == "False"


def test_function_for_pod_service_udp(lab, made):
    """Networking Granular Checks: Services should function for pod-Service: udp"""
    made(service("sv-udp", type="NodePort",
                 ports=[{"name": "udp", "port": 90, "targetPort": "udp", "protocol": "UDP"}]))
    c1 = Client(lab, "c1")
    up(c1, cluster_ip(lab, "sv-udp"), 90, want=set(BACKENDS), protocol="UDP")
    up(c1, lab.node_ip("worker-2"), node_port(lab, "sv-udp"), want=set(BACKENDS),
       protocol="UDP")


def test_function_for_node_service_http(lab, made):
    """Networking Granular Checks: Services should function for node-Service: http"""
    made(service("sv-node", type="NodePort"))
    node = Client(lab, "worker-1")
    up(node, cluster_ip(lab, "sv-node"), want=set(BACKENDS))
    up(node, lab.node_ip("worker-2"), node_port(lab, "sv-node"), want=set(BACKENDS))


def test_update_endpoints_http(lab, made):
    """Networking Granular Checks: Services should update endpoints: http (scaled Deployment)"""
    deployment = backend("sv-scale", "worker-1", {"app": "sv-scale"})
    template = {"metadata": {"labels": {"app": "sv-scale"}}, "spec": deployment["spec"]}
    del template["spec"]["nodeName"]

    def scaled(replicas: int) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "sv-scale"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "sv-scale"}},
                         "template": copy.deepcopy(template)}}

    made(scaled(1), service("sv-scale", {"app": "sv-scale"}))
    ip = cluster_ip(lab, "sv-scale")
    c2 = Client(lab, "c2")
    first = up(c2, ip, timeout=30)
    made(scaled(2))
    both = eventually(lambda: len(seen := set(c2.hostnames(ip))) == 2 and seen,
                      30, "the new replica to get traffic")
    assert first < both
    made(scaled(1))
    eventually(lambda: len(set(c2.hostnames(ip))) == 1, 30, "the removed replica to go")


def test_load_is_spread_fairly_over_endpoints(lab, made):
    """Load balancing (kube-proxy.md §1.6, §3): 300 new connections over 3 endpoints.

    Each endpoint must get between 20% and 47% (60..141 of 300). With a fair
    1/3 each, an endpoint's count is Binomial(300, 1/3): mean 100, sd 8.2, and
    P(count < 60) + P(count > 141) = 4.7e-7 (exact binomial sum), so a correct
    random proxy (iptables, nftables) fails this test with probability below
    1.5e-6 per run (union over the three endpoints); IPVS's round robin gives
    exactly 100 each. A proxy that sent half the traffic to one endpoint (150)
    fails it.
    """
    made(service("sv-spread"))
    ip = cluster_ip(lab, "sv-spread")
    c1 = Client(lab, "c1")
    up(c1, ip, want=set(BACKENDS))
    counts = c1.hostnames(ip, count=300)
    assert set(counts) == set(BACKENDS)
    assert all(60 <= n <= 141 for n in counts.values()), counts


# -- bad Services -----------------------------------------------------------------------

BAD_SERVICES = {
    "node port out of range": (
        {"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]},
        "spec.ports[0].nodePort", "provided port is not in the valid range"),
    "duplicate port": (
        {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
        "spec.ports[1]", "Duplicate value"),
    "node port on a ClusterIP service": (
        {"ports": [{"port": 80, "nodePort": 30555}]},
        "spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'"),
    "cluster IP outside the range": (
        {"clusterIP": "10.200.0.5", "ports": [{"port": 80}]},
        "spec.clusterIP", "provided IP is not in the valid range"),
    "affinity timeout too long": (
        {"sessionAffinity": "ClientIP", "ports": [{"port": 80}],
         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 100000}}},
        "timeoutSeconds", "must be greater than 0"),
}


@pytest.mark.parametrize("case", BAD_SERVICES)
def test_bad_service_is_refused_with_a_clear_message(lab, tmp_path, case):
    spec, field, reason = BAD_SERVICES[case]
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: sv-bad}\n"
        f"spec: {json.dumps(spec)}\n")
    result = subprocess.run([sys.executable, "-m", "netlab", "apply", "-f", str(manifest),
                             "--name", lab.name], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert field in result.stderr and reason in result.stderr, result.stderr
    assert lab.objects.get("Service", "default", "sv-bad") is None


MALFORMED = {  # written past validation, as a buggy controller or a hand edit might
    "sv-mal-status": {"spec": {"clusterIP": "10.96.77.1", "ports": [{"port": 80}],
                               "selector": {"tier": "be"}}, "status": {"loadBalancer": None}},
    "sv-mal-ports": {"spec": {"clusterIP": "10.96.77.2", "ports": "eighty",
                              "selector": {"tier": "be"}}},
    "sv-mal-selector": {"spec": {"clusterIP": "10.96.77.3", "ports": [{"port": 80}],
                                 "selector": ["tier"]}},
    "sv-mal-affinity": {"spec": {"clusterIP": "10.96.77.4", "ports": [{"port": 80}],
                                 "sessionAffinity": "ClientIP", "sessionAffinityConfig": [],
                                 "selector": {"tier": "be"}}},
    "sv-mal-spec": {"spec": "nothing"},
}


def test_malformed_service_in_the_store_never_stops_the_proxy(lab, made):
    """Bad objects written straight into the store are skipped; later Services still work.

    The control plane is restarted while they are there, so that its relist and its
    allocation repair (which runs at start) read them too.
    """
    stored = []
    try:
        for name, body in MALFORMED.items():
            key = keys.key_for("Service", "default", name)
            lab.objects.store.put(key, {"apiVersion": "v1", "kind": "Service",
                                        "metadata": {"name": name, "namespace": "default"},
                                        **body})
            stored.append(key)
        control = next(p for p in lab.state.processes() if p.role == "control-plane")
        os.kill(control.pid, signal.SIGKILL)
        lab.wait_for(lambda: any(p.role == "control-plane" and p.pid != control.pid
                                 and p.alive() for p in lab.state.processes()),
                     30 * TIME_SCALE, what="the control plane to be restarted")
        time.sleep(1.5)  # let every proxy and the restarted control plane read them
        made(service("sv-after-bad"))
        ip = cluster_ip(lab, "sv-after-bad")
        for source in ("c1", "c2"):
            up(Client(lab, source), ip, want=set(BACKENDS))
    finally:
        for key in stored:
            lab.objects.store.delete(key)


# -- the proxy's own endpoints ----------------------------------------------------------


def test_proxy_serves_metrics_and_healthz_on_the_node(lab):
    """kube-proxy's :10249/metrics (here on the node's address), /proxyMode and
    :10256/healthz."""
    address = lab.node_ip("worker-2")
    text = lab.exec("worker-2", "curl", "-s", "--max-time", "5",
                    f"http://{address}:10249/metrics").stdout
    samples = {(s.name, s.labels.get("table", "")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("kubeproxy_sync_proxy_rules_duration_seconds_count", "")] >= 1
    assert samples[("kubeproxy_sync_full_proxy_rules_duration_seconds_count", "")] >= 1
    assert samples[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "")] > time.time() - 60
    mode = lab.config.proxy_mode
    # Rule counts are an iptables-mode metric; kube-proxy's other modes export none.
    iptables_total = samples.get(("kubeproxy_sync_proxy_rules_iptables_total", "nat"))
    assert (iptables_total > 0) if mode == "iptables" else (iptables_total is None)
    assert ("kubeproxy_network_programming_duration_seconds_count", "") in samples
    assert samples[("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "")] == 0
    served = lab.exec("worker-2", "curl", "-s", f"http://{address}:10249/proxyMode").stdout
    assert served == mode
    health = lab.exec("worker-2", "curl", "-s", "-w", " %{http_code}",
                      "http://127.0.0.1:10256/healthz").stdout
    body, _, code = health.rpartition(" ")
    assert code == "200" and json.loads(body)["healthy"] is True
