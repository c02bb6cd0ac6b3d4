"""Machines joined by etcd: the commands a Vagrant VM's units run, on namespaces laid out
like Vagrant VMs (tests/integration/machines.py).

What issue 7 asks of the multi-machine setup: agents pick the private network, not
the NAT interface; pods and Services work across machines; the CLI talks to the
remote store; the data plane survives etcd being killed under traffic; a node cut
off from the store catches up on what changed meanwhile; an agent restart keeps pods;
a control plane restarted (with etcd) allocates nothing twice; a machine joins and
leaves a running cluster and the others' overlay follows.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from netlab.api import keys
from netlab.control.meta import labels_of
from netlab.control.pods import is_ready
from netlab.kernel import netns
from netlab.store.etcd_server import etcd_binary
from tests.hoststate import HostState
from tests.integration.machines import NAT_ADDRESS, Machines, knetlab_argv, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
]

LAB = "edge-mach"


def deployment(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{
                             "name": "netexec",
                             "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                             "args": ["netexec", "--http-port=8080"],
                             "ports": [{"name": "http", "containerPort": 8080}],
                             "readinessProbe": {"httpGet": {"path": "/healthz",
                                                            "port": 8080}}}]}}}}


def service(name: str, app: str = "web", node_port: int | None = None) -> dict:
    port: dict = {"name": "http", "port": 80, "targetPort": "http"}
    spec: dict = {"selector": {"app": app}, "ports": [port]}
    if node_port:
        spec["type"] = "NodePort"
        port["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def pod(name: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{
                "name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                "args": ["netexec", "--http-port=8080"], "ports": [{"containerPort": 8080}]}]}}


def knetlab(m: Machines, *args: str, manifests: list[dict] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """The CLI on the control-plane machine, as `vagrant ssh control-plane -c` runs it."""
    if manifests:
        path = m.tmp_dir / f"manifests-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump_all(manifests))
        args = (*args, "-f", str(path))
    return subprocess.run(["ip", "netns", "exec", m.netns("control-plane"), "env",
                           f"KNETLAB_STORE={m.store_url}", *knetlab_argv(), *args],
                          capture_output=True, text=True, timeout=60)


def http(pod_netns: str, ip: str, port: int = 80, timeout: float = 2.0) -> str:
    """GET /hostname from inside a pod; raises OSError on any failure."""
    with netns.socket_in(pod_netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET /hostname HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise OSError(f"bad answer from {ip}:{port}: {head[:60]!r}")
    return body.decode()


def answers(pod_netns: str, ip: str, port: int = 80) -> str | None:
    try:
        return http(pod_netns, ip, port)
    except OSError:
        return None


def all_ready(m: Machines, web: int | None = None) -> bool:
    """Every pod Ready (and, with `web`, that many web pods), seen in one list."""
    pods, _ = m.objects().list("Pod", None)
    return bool(pods) and all(is_ready(p) for p in pods) and (
        web is None or web == sum(labels_of(p).get("app") == "web" for p in pods))


def overlay_up(m: Machines) -> bool:
    """Every node annotated by its flannel, as `knetlab up` waits for (a node without
    pods, the control plane, may come up after every pod is Ready)."""
    nodes, _ = m.objects().list("Node")
    return set(m.names) <= {n["metadata"]["name"] for n in nodes if keys.overlay_annotated(n)}


def cluster_ip(m: Machines, name: str) -> str:
    return m.objects().get("Service", "default", name)["spec"]["clusterIP"]


def pod_ips(m: Machines, app: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"].get("podIP", "")
            for p in m.objects().list("Pod", "default")[0]
            if (p["metadata"].get("labels") or {}).get("app") == app}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Machines]:
    before = HostState.capture(LAB)
    m = Machines(LAB, workers=2, tmp_dir=tmp_path_factory.mktemp("edge-mach"))
    try:
        m.create()
        m.start()
        applied = knetlab(m, "apply", manifests=[
            deployment("web", 2), service("web", node_port=30080),
            pod("client-1", "worker-1"), pod("client-2", "worker-2")])
        assert applied.returncode == 0, applied.stderr
        wait_for(lambda: all_ready(m, web=2), 120,
                 "every pod Ready")
        wait_for(lambda: overlay_up(m), 60, "every node's overlay (flannel's annotations)")
        yield m
    finally:
        m.remove()
    assert footprint(HostState.capture(LAB)).differences(footprint(before)) == []


def footprint(state: HostState) -> HostState:
    """The host as this module can leave it: its own names, and the host's root namespace.

    Other people's test namespaces come and go on a shared machine meanwhile.
    """
    def ours(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if f"nl-{LAB}-" in n)

    return dataclasses.replace(state, netns=ours(state.netns), etc_netns=ours(state.etc_netns),
                               run_netns=ours(state.run_netns), mounts=ours(state.mounts),
                               processes=tuple(p for p in state.processes if LAB in p))


def test_each_node_uses_its_private_address_never_the_shared_nat_one(cluster):
    nodes, _ = cluster.objects().list("Node")
    for node in nodes:
        name = node["metadata"]["name"]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [cluster.addresses[name]]
        assert node["metadata"]["annotations"][keys.FLANNEL_PUBLIC_IP_ANNOTATION] == \
            cluster.addresses[name]
    vxlan = cluster.run(cluster.netns("worker-1"), "ip", "-d", "link", "show", "flannel.1").stdout
    assert f"local {cluster.addresses['worker-1']} dev eth1" in vxlan
    assert NAT_ADDRESS not in vxlan
    assert "node interface eth1, address 192.168.56.11" in cluster.log("agent-worker-1")


def test_pods_and_services_work_across_machines(cluster):
    web = pod_ips(cluster, "web")
    client = cluster.pod_netns("client-1")
    for name, ip in web.items():
        assert http(client, ip, 8080) == name
    ip = cluster_ip(cluster, "web")
    assert wait_for(lambda: {answers(client, ip) for _ in range(20)} >= set(web), 30,
                    "both web pods behind the ClusterIP")
    # From a machine itself (the README's `vagrant ssh worker-1 -c 'curl ...'`).
    assert wait_for(lambda: {answers(cluster.netns("worker-1"), ip) for _ in range(20)}
                    >= set(web), 30, "both web pods behind the ClusterIP, from worker-1")
    # NodePort on a worker's private address, from the control-plane machine.
    worker = cluster.addresses["worker-2"]
    assert wait_for(lambda: answers(cluster.netns("control-plane"), worker, 30080) in web, 30,
                    "worker-2's NodePort, from the control-plane machine")
    # Cluster DNS (the config in the store said enabled), served on whichever machine.
    dig = cluster.run(client, "dig", "+short", "+time=2", "web.default.svc.cluster.local")
    assert dig.stdout.strip() == ip


def test_remote_cli_on_the_control_plane_lists_pods_with_their_machines(cluster):
    result = knetlab(cluster, "get", "pods", "-o", "wide")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "worker-1" in lines["client-1"] and "worker-2" in lines["client-2"]
    nodes = knetlab(cluster, "get", "nodes", "-o", "wide").stdout
    assert all(address in nodes for address in cluster.addresses.values())


def test_agent_restart_keeps_pods_serving_and_adopts_them(cluster):
    before = {p["metadata"]["name"]: p["status"]["podIP"]
              for p in cluster.objects().list("Pod", "default")[0]}
    cluster.kill("agent-worker-1")  # as `systemctl kill -s KILL knetlab-agent` would
    assert http(cluster.pod_netns("client-2"), before["client-1"], 8080) == "client-1"
    cluster.start_agent("worker-1")  # systemd's Restart=always
    wait_for(lambda: "agent running" in cluster.log("agent-worker-1").split("node interface")[-1],
             60, "the agent to start again")
    knetlab(cluster, "apply", manifests=[pod("after-restart", "worker-1")])
    wait_for(lambda: all_ready(cluster), 60, "the new pod Ready")
    ips = {p["metadata"]["name"]: p["status"]["podIP"]
           for p in cluster.objects().list("Pod", "default")[0]}
    assert {k: ips[k] for k in before} == before
    assert ips["after-restart"] not in before.values()
    assert http(cluster.pod_netns("client-2"), ips["after-restart"], 8080) == "after-restart"


def test_etcd_killed_and_restarted_under_traffic_fails_no_request(cluster):
    """The data plane never depends on the store: while etcd is gone, and after."""
    ip = cluster_ip(cluster, "web")
    client = cluster.pod_netns("client-1")
    failures: list[str] = []
    answered: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                answered.append(http(client, ip))
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.05)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(1)
        cluster.kill("etcd")
        time.sleep(6)  # watches break, agents retry; nothing in the kernel changes
        cluster.start_etcd()
        time.sleep(3)
    finally:
        stop.set()
        sender.join()
    assert failures == [] and len(answered) > 100
    # And the agents follow the store again: a Service made after the outage works.
    assert knetlab(cluster, "apply", manifests=[service("after-outage")]).returncode == 0
    new_ip = cluster_ip(cluster, "after-outage")
    assert wait_for(lambda: answers(cluster.pod_netns("client-2"), new_ip), 30,
                    "the Service made after the outage to answer on worker-2")


def _iptables(cluster: Machines, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """In the node's namespace, under the node's own xtables lock (the agent's writers')."""
    lock = os.path.join(cluster.state.node_dir(node), "xtables.lock")
    return subprocess.run(["ip", "netns", "exec", cluster.netns(node), "env",
                           f"XTABLES_LOCKFILE={lock}", "iptables-legacy", "-w", *args],
                          capture_output=True, text=True, check=True)


def test_node_cut_off_from_the_store_catches_up_on_what_changed_meanwhile(cluster):
    """Objects applied while worker-2 cannot reach etcd take effect there when it can."""
    drop = ("OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP")
    web_ip = cluster_ip(cluster, "web")
    client = cluster.pod_netns("client-2")
    _iptables(cluster, "worker-2", "-I", *drop)
    try:
        time.sleep(12)  # long enough for its watches to notice (TCP keepalive ~10 s)
        assert knetlab(cluster, "apply", manifests=[service("during-cut")]).returncode == 0
        time.sleep(3)
        rules = _iptables(cluster, "worker-2", "-t", "nat", "-S").stdout
        assert "default/during-cut" not in rules  # the cut is real
        assert http(client, web_ip)  # and the rules it had still serve
    finally:
        _iptables(cluster, "worker-2", "-D", *drop)
    ip = cluster_ip(cluster, "during-cut")
    assert wait_for(lambda: answers(client, ip), 40, "worker-2 to program the Service")


def test_control_plane_and_etcd_restarted_allocate_nothing_twice(cluster):
    cluster.kill("control-plane")
    cluster.kill("etcd")
    cluster.start_etcd()
    cluster.start_control_plane()
    manifests = [deployment("web", 4)] + [service(f"more-{i}") for i in range(5)]
    assert knetlab(cluster, "apply", manifests=manifests).returncode == 0
    wait_for(lambda: all_ready(cluster, web=4), 90,
             "web scaled to 4")
    objects = cluster.objects()
    ips = [s["spec"]["clusterIP"] for s in objects.list("Service", None)[0]]
    assert len(ips) == len(set(ips))
    cidrs = [n["spec"]["podCIDR"] for n in objects.list("Node")[0]]
    assert len(cidrs) == len(set(cidrs))
    pods = objects.list("Pod", None)[0]
    pod_addresses = [p["status"]["podIP"] for p in pods]
    assert len(pod_addresses) == len(set(pod_addresses))
    for p in pods:  # every pod inside its node's podCIDR
        node = objects.get("Node", None, p["spec"]["nodeName"])
        assert ipaddress.ip_address(p["status"]["podIP"]) in \
            ipaddress.ip_network(node["spec"]["podCIDR"])
    assert cluster.log("control-plane").count("published the cluster config") == 1


def test_a_machine_joins_and_leaves_and_the_others_overlay_follows(cluster):
    cluster.add_machine("worker-3")
    cluster.start_node("worker-3")
    address = cluster.addresses["worker-3"]

    def cidr() -> str | None:
        node = cluster.objects().get("Node", None, "worker-3")
        return (node or {}).get("spec", {}).get("podCIDR")

    subnet = wait_for(cidr, 60, "worker-3 to get a podCIDR")
    for peer in ("worker-1", "control-plane"):
        wait_for(lambda p=peer: subnet in cluster.run(cluster.netns(p), "ip", "route").stdout,
                 30, f"{peer} to route worker-3's pods")
        fdb = cluster.run(cluster.netns(peer), "bridge", "fdb", "show", "dev", "flannel.1")
        assert address in fdb.stdout
    knetlab(cluster, "apply", manifests=[pod("on-3", "worker-3")])
    wait_for(lambda: all_ready(cluster), 60, "the pod on worker-3")
    on_3 = cluster.objects().get("Pod", "default", "on-3")["status"]["podIP"]
    assert http(cluster.pod_netns("client-1"), on_3, 8080) == "on-3"

    knetlab(cluster, "delete", "pod", "on-3")
    wait_for(lambda: cluster.objects().get("Pod", "default", "on-3") is None, 30,
             "on-3 to go")
    cluster.stop("agent-worker-3")
    cluster.stop("runtime-worker-3")
    assert knetlab(cluster, "delete", "node", "worker-3").returncode == 0
    for peer in ("worker-1", "control-plane"):
        wait_for(lambda p=peer: subnet not in cluster.run(cluster.netns(p), "ip",
                                                          "route").stdout,
                 30, f"worker-3's route to go from {peer}")
        fdb = cluster.run(cluster.netns(peer), "bridge", "fdb", "show", "dev", "flannel.1")
        assert address not in fdb.stdout
