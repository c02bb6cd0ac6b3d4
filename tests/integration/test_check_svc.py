"""`knetlab check svc` against a real lab that is broken on purpose, one way per test.

Each break is applied to real state, the way it happens on a cluster: a
selector or targetPort that names nothing, a readiness probe that never passes,
the node agent (kube-proxy's role) stopped, a kube-proxy rule deleted from a
node's tables, hairpin mode turned off on a cni0 port, a stale UDP conntrack
entry, a pod resolv.conf without the search path. Every test asserts that the
FIRST failing step is the one that names the break; the tests that break
shared state check first that the Service passes and put things back after.

One iptables lab serves the module (and a small nftables lab for the
nftables-mode reader). A long proxy syncPeriod keeps a deleted rule deleted
while the check looks at it: kube-proxy would restore it at its next full
sync, which is the behaviour under test in test_services.py, not here.
"""

from __future__ import annotations

import copy
import os
import shlex
import signal
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner

from netlab.check.render import render_text
from netlab.check.svc import check_service
from netlab.cli.main import main
from netlab.kernel.commands import run_in
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from netlab.lab.state import StateDir
from netlab.node.cni import host_veth_name
from netlab.node.podfiles import ETC_NETNS
from tests.hoststate import HostState
from tests.integration.labs import lab_data, pod

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

LAB = "chk-svc"
NFT_LAB = "chk-nft"
BACKENDS = {"b1": "worker-1", "b2": "worker-2"}
ALL_STEPS = ["service", "selector", "pods-ready", "target-port", "endpoints", "pods-answer",
             "kube-proxy", "proxy-rules", "dns", "cluster-ip", "node-port", "hairpin",
             "conntrack"]


def backend(name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    """A netexec pod with named ports http 8080/TCP and udp 8081/UDP, ready when /healthz is."""
    obj = pod(name, node)
    main_container = obj["spec"]["containers"][0]
    main_container["ports"] = [{"name": "http", "containerPort": 8080},
                               {"name": "udp", "containerPort": 8081, "protocol": "UDP"}]
    main_container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080},
                                        "periodSeconds": 1}
    obj["metadata"]["labels"] = labels
    return obj


def service(name: str, selector: dict[str, str] | None = None,
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"selector": selector or {"tier": "be"},
            "ports": ports or [{"name": "http", "port": 80, "targetPort": "http"},
                               {"name": "udp", "port": 8081, "targetPort": "udp",
                                "protocol": "UDP"}], **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


WEB = service("web", type="NodePort")


def up(name: str, data: dict[str, Any], objs: list[dict[str, Any]]) -> Iterator[RunningLab]:
    before = HostState.capture(name)
    running = start_lab(data, name)
    try:
        running.apply(copy.deepcopy(objs))
        running.wait_for(lambda: _served(running) and all(
            (p.get("status") or {}).get("phase") == "Running" for p in running.pods()),
            timeout=60, what="the pods to run and web's endpoints to be ready")
        yield running
    finally:
        lifecycle.down(name)
    assert footprint(HostState.capture(name), name, before).differences(
        footprint(before, name, before)) == []


def footprint(state: HostState, lab: str, before: HostState) -> HostState:
    """What the lab could have left behind: its namespaces, mounts, /etc/netns dirs and
    processes, and the root namespace's links, routes and rules it may have added.

    On a shared machine other people's namespaces, labs (on any store) and host
    links (VM taps) come and go while the module runs: everything this lab makes
    carries its prefix or its state dir, and a lab never removes anything from
    the root namespace, so only additions there count.
    """
    prefix = f"nl-{lab}-"

    def mine(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if n.startswith(prefix))

    def added(now: str, then: str) -> str:
        return "\n".join(sorted(set(now.splitlines()) - set(then.splitlines())))

    return replace(state, netns=mine(state.netns), etc_netns=mine(state.etc_netns),
                   run_netns=mine(state.run_netns),
                   mounts=tuple(m for m in state.mounts if f"/{prefix}" in m),
                   processes=tuple(p for p in state.processes
                                   if f"{StateDir(lab).path} " in f"{p} "),
                   links=added(state.links, before.links),
                   routes=added(state.routes, before.routes),
                   iptables=added(state.iptables, before.iptables),
                   nft=added(state.nft, before.nft))


def _served(lab: RunningLab) -> bool:
    slices = lab.objects.list("EndpointSlice", "default")[0]
    return any(len([e for e in s.get("endpoints") or [] if e["conditions"].get("ready")])
               == len(BACKENDS) for s in slices
               if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web")


def never_ready() -> dict[str, Any]:
    """A backend whose readiness probe asks a port nothing listens on."""
    obj = backend("r1", "worker-1", {"tier": "unready"})
    obj["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 9999},
                                                      "periodSeconds": 1}
    return obj


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    """Pods are made here only, never mid-module: see test_a_readiness_probe_..."""
    data = lab_data(LAB)
    data["dns"] = {"replicas": 1}
    data["proxy"] = {"syncPeriod": "10m"}  # see the module docstring
    yield from up(LAB, data, [backend(n, node, {"tier": "be"}) for n, node in BACKENDS.items()]
                  + [pod("c1", "worker-1"), never_ready(), WEB,
                     service("unready", {"tier": "unready"})])


@pytest.fixture
def made(lab: RunningLab) -> Iterator[list[dict[str, Any]]]:
    """Services a test applies; deleted when it ends."""
    objs: list[dict[str, Any]] = []
    yield objs
    for obj in reversed(objs):
        lab.delete(obj["kind"], obj["metadata"]["name"])


def first_failure(lab: RunningLab, name: str, **kwargs: Any) -> tuple[str | None, list[str]]:
    """The first failing step's name and its evidence."""
    report = check_service(lab, name, **kwargs)
    first = report.first_failure
    return (first.name, list(first.evidence)) if first else (None, [])


def healthy(lab: RunningLab, name: str = "web") -> None:
    report = check_service(lab, name)
    assert report.ok, render_text(report)


# -- a Service that works ---------------------------------------------------------------------

def test_a_healthy_service_passes_every_step(lab: RunningLab) -> None:
    report = check_service(lab, "web")
    assert [s.name for s in report.steps] == ALL_STEPS
    assert [s.name for s in report.steps if s.status != "passed"] == []
    assert report.source == "default/c1"
    by_name = {s.name: s for s in report.steps}
    assert any("reached itself" in line for line in by_name["hairpin"].evidence)
    assert any("worker-2 192.168.10.4:" in line for line in by_name["node-port"].evidence)


def test_the_command_exits_0_when_all_pass_and_1_with_json_when_one_fails(
        lab: RunningLab, made: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["check", "svc", "default/web", "--name", LAB])
    assert ok.exit_code == 0, ok.output
    assert "13 passed, 0 failed, 0 skipped" in ok.output
    made.append(service("typo", {"tier": "bee"}))
    lab.apply(copy.deepcopy(made))
    bad = runner.invoke(main, ["check", "svc", "typo", "--name", LAB, "-o", "json"])
    assert bad.exit_code == 1
    assert '"first_failure": "selector"' in bad.output


# -- objects ----------------------------------------------------------------------------------

def test_a_selector_that_matches_nothing_fails_at_selector_with_the_near_miss(
        lab: RunningLab, made: list[dict[str, Any]]) -> None:
    made.append(service("typo", {"tier": "bee"}))
    lab.apply(copy.deepcopy(made))
    step, evidence = first_failure(lab, "typo")
    assert step == "selector"
    assert "near miss: b1: tier=be (selector wants tier=bee)" in evidence


@pytest.mark.parametrize("target, why", [
    (9376, "no containerPort 9376/TCP"),
    ("htpp", "no containerPort is named htpp"),
], ids=["number", "name"])
def test_a_target_port_the_pods_lack_fails_at_target_port(
        lab: RunningLab, made: list[dict[str, Any]], target: int | str, why: str) -> None:
    made.append(service("badport", ports=[{"name": "http", "port": 80, "targetPort": target}]))
    lab.apply(copy.deepcopy(made))
    step, evidence = first_failure(lab, "badport")
    assert step == "target-port"
    assert any(why in line for line in evidence), evidence


def test_a_readiness_probe_that_never_passes_fails_at_pods_ready(lab: RunningLab) -> None:
    """r1 and its Service come with the lab rather than with this test: deleting a pod
    mid-module can change cni0's MAC address (a bridge takes its ports' lowest unless
    one is set), which black-holes the node's cross-node pod traffic for seconds and
    would fail the next test's healthy check for a reason that is not under test."""
    step, evidence = first_failure(lab, "unready")
    assert step == "pods-ready"
    assert any("not Ready" in line and "tcpSocket :9999" in line for line in evidence)


# -- kube-proxy -------------------------------------------------------------------------------

def test_a_stopped_agent_fails_at_kube_proxy(lab: RunningLab) -> None:
    healthy(lab)
    agent = next(p for p in lab.state.processes() if p.role == "agent-worker-2")
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        step, evidence = first_failure(lab, "web")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    assert step == "kube-proxy"
    assert f"worker-2: agent-worker-2 pid {agent.pid} stopped; healthz no HTTP answer " \
           "within 2s" in evidence


def _iptables(lab: RunningLab, node: str, *argv: str) -> str:
    lock = os.path.join(lab.state.node_dir(node), "xtables.lock")  # the proxy's lock
    return run_in(lab.netns(node), ["iptables-legacy", "-w", *argv],
                  env={**os.environ, "XTABLES_LOCKFILE": lock}).stdout


def test_a_deleted_proxy_rule_fails_at_proxy_rules(lab: RunningLab) -> None:
    healthy(lab)
    saved = run_in(lab.netns("worker-2"), ["iptables-legacy-save", "-t", "nat"]).stdout
    line = next(x for x in saved.splitlines() if x.startswith("-A KUBE-SERVICES ")
                and '"default/web:http cluster IP"' in x)
    spec = shlex.split(line)[2:]
    _iptables(lab, "worker-2", "-t", "nat", "-D", "KUBE-SERVICES", *spec)
    try:
        step, evidence = first_failure(lab, "web")
    finally:
        _iptables(lab, "worker-2", "-t", "nat", "-I", "KUBE-SERVICES", "1", *spec)
    assert step == "proxy-rules"
    ip = lab.objects.get("Service", "default", "web")["spec"]["clusterIP"]
    assert any(x.startswith(f"worker-2 http/TCP: no rule catches {ip}:80/TCP")
               for x in evidence), evidence
    healthy(lab)


# -- traffic ----------------------------------------------------------------------------------

def test_hairpin_off_on_a_backends_port_fails_at_hairpin(lab: RunningLab) -> None:
    healthy(lab)
    port = host_veth_name(lab.pod("b1")["metadata"]["uid"])

    def hairpin(state: str) -> None:
        run_in(lab.netns("worker-1"),
               ["ip", "link", "set", "dev", port, "type", "bridge_slave", "hairpin", state])

    hairpin("off")
    try:
        step, evidence = first_failure(lab, "web")
    finally:
        hairpin("on")
    assert step == "hairpin"
    assert any(x.startswith(f"b1 (worker-1, cni0 port {port} hairpin off)") for x in evidence)
    healthy(lab)


def test_a_stale_udp_conntrack_entry_fails_at_conntrack(lab: RunningLab) -> None:
    healthy(lab)
    ip = lab.objects.get("Service", "default", "web")["spec"]["clusterIP"]
    client = lab.pod_ip("c1")
    gone = "10.244.2.250"  # no pod: the backend that "moved away"
    entry = ["-p", "udp", "-s", client, "-d", ip, "--sport", "40123", "--dport", "8081"]
    netns = lab.netns("worker-1")
    run_in(netns, ["conntrack", "-I", *entry, "-r", gone, "-q", client, "--reply-port-src",
                   "8081", "--reply-port-dst", "40123", "-t", "120", "-u", "SEEN_REPLY"])
    try:
        step, evidence = first_failure(lab, "web")
    finally:
        run_in(netns, ["conntrack", "-D", *entry])
    assert step == "conntrack"
    assert f"worker-1: stale: to {ip}:8081 answered by {gone}:8081, no serving endpoint" \
        in evidence


def test_a_resolv_conf_without_search_path_fails_at_dns(lab: RunningLab) -> None:
    healthy(lab)
    path = os.path.join(ETC_NETNS, lab.netns("c1"), "resolv.conf")
    with open(path) as f:
        original = f.read()
    with open(path, "w") as f:
        f.write("".join(x for x in original.splitlines(keepends=True)
                        if not x.startswith("search")))
    try:
        report = check_service(lab, "web")
    finally:
        with open(path, "w") as f:
            f.write(original)
    first = report.first_failure
    assert first is not None and first.name == "dns"
    assert "search path" in first.hint
    short = next(x for x in first.evidence if x.startswith("web: "))
    assert short.startswith("web: web. ") and " A " not in short  # asked as is: no answer


# -- nftables mode ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nft_lab() -> Iterator[RunningLab]:
    data = lab_data(NFT_LAB)
    data["nodes"] = data["nodes"][:2]
    data["dns"] = {"enabled": False}
    data["proxy"] = {"mode": "nftables", "syncPeriod": "10m"}
    yield from up(NFT_LAB, data, [backend(n, "worker-1", {"tier": "be"}) for n in BACKENDS]
                  + [pod("c1", "worker-1"), WEB])


def test_nftables_mode_rules_are_read_and_a_deleted_element_fails_at_proxy_rules(
        nft_lab: RunningLab) -> None:
    report = check_service(nft_lab, "web")
    assert [s.name for s in report.steps if s.status != "passed"] == ["dns"]  # no DNS here
    ip = nft_lab.objects.get("Service", "default", "web")["spec"]["clusterIP"]
    netns = nft_lab.netns("worker-1")
    listing = run_in(netns, ["nft", "list", "map", "ip", "kube-proxy", "service-ips"]).stdout
    verdict = listing.split(f"{ip} . tcp . 80 : ", 1)[1].split(",")[0].split("}")[0].strip()
    element = f"{{ {ip} . tcp . 80 }}"
    run_in(netns, ["nft", "delete", "element", "ip", "kube-proxy", "service-ips", element])
    try:
        step, evidence = first_failure(nft_lab, "web")
    finally:
        run_in(netns, ["nft", "add", "element", "ip", "kube-proxy", "service-ips",
                       f"{{ {ip} . tcp . 80 : {verdict} }}"])
    assert step == "proxy-rules"
    assert any(x.startswith(f"worker-1 http/TCP: no rule catches {ip}:80/TCP")
               for x in evidence), evidence
    healthy(nft_lab)
