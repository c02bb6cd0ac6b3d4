"""`knetlab get|describe|proxy rules` against the demo lab (topologies/default.yaml).

The demo's Services `web` (ClusterIP, 80 -> http, 8081/UDP) and `web-nodeport`
(30080) in front of three netexec replicas, looked at the way a learner would.
Commands run in-process through click (as `knetlab` would run them) to keep the
module fast; one runs as a real process to pin the entry point and exit status.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from netlab.cli.main import main
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from tests.hoststate import HostState
from tests.integration.labs import with_suite_store
from tests.integration.svc_traffic import Client, eventually, own_footprint

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

LAB = "sv-cli"
TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    data = with_suite_store(yaml.safe_load((TOPOLOGIES / "default.yaml").read_text()))
    data["dns"] = {"enabled": False}  # the demo minus DNS: not what these commands show
    before = HostState.capture(LAB)
    running = start_lab(data, LAB, base_dir=TOPOLOGIES)
    try:
        # `up` returns when the pods are Ready; the Endpoints controller follows them
        # within a pass of the control plane, as in Kubernetes.
        running.wait_for(lambda: endpoints_follow_ready_pods(running), 30,
                         "the Services' Endpoints to list every Ready web pod")
        yield running
    finally:
        lifecycle.down(LAB)
    assert own_footprint(HostState.capture(LAB)) == own_footprint(before)


def endpoints_follow_ready_pods(lab: RunningLab) -> bool:
    web = {p["status"]["podIP"] for p in lab.pods() if p["metadata"]["name"].startswith("web-")}
    for service in ("web", "web-nodeport"):
        endpoints = lab.objects.get("Endpoints", "default", service) or {}
        ready = {a["ip"] for subset in endpoints.get("subsets") or []
                 for a in subset.get("addresses") or []}
        if ready != web:
            return False
    return bool(web)


def knetlab(*args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--name", LAB])


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_get_services_has_kubectls_columns(lab):
    out = knetlab("get", "services", "-o", "wide").stdout.splitlines()
    assert columns(out[0]) == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE",
                               "SELECTOR"]
    rows = {columns(line)[0]: columns(line) for line in out[1:]}
    ip = lab.objects.get("Service", "default", "web")["spec"]["clusterIP"]
    assert rows["web"][1:5] == ["ClusterIP", ip, "<none>", "80/TCP,8081/UDP"]
    assert rows["web"][6] == "app=web"
    assert rows["web-nodeport"][1] == "NodePort" and rows["web-nodeport"][4] == "80:30080/TCP"


def test_get_endpointslices_and_endpoints_have_kubectls_columns(lab):
    pods = sorted(p["status"]["podIP"] for p in lab.pods() if p["metadata"]["name"] != "client")
    slices = knetlab("get", "endpointslices").stdout.splitlines()
    assert columns(slices[0]) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    web = next(columns(line) for line in slices if line.startswith("web-")
               and not line.startswith("web-nodeport"))
    assert web[1:3] == ["IPv4", "8080,8081"] and sorted(web[3].split(",")) == pods
    endpoints = knetlab("get", "endpoints").stdout.splitlines()
    assert columns(endpoints[0]) == ["NAME", "ENDPOINTS", "AGE"]
    row = next(columns(line) for line in endpoints if line.startswith("web "))
    # kubectl goes port by port: the three 8080 endpoints first, the 8081 ones left over.
    assert row[1] == ",".join(f"{ip}:8080" for ip in pods) + " + 3 more..."


def test_describe_service_shows_ports_endpoints_and_policies(lab):
    result = knetlab("describe", "svc", "web-nodeport")
    assert result.exit_code == 0, result.output
    fields = dict(columns(line)[:2] for line in result.stdout.splitlines()
                  if len(columns(line)) >= 2)
    assert fields["Name:"] == "web-nodeport" and fields["Namespace:"] == "default"
    assert fields["Selector:"] == "app=web" and fields["Type:"] == "NodePort"
    assert fields["IP:"] == lab.objects.get("Service", "default", "web-nodeport")["spec"][
        "clusterIP"]
    assert fields["TargetPort:"] == "8080/TCP"
    assert fields["Session Affinity:"] == "None"
    assert fields["External Traffic Policy:"] == "Cluster"
    assert fields["Events:"] == "<none>"
    assert re.search(r"^Port:\s+http  80/TCP$", result.stdout, re.M)
    assert re.search(r"^NodePort:\s+http  30080/TCP$", result.stdout, re.M)
    pods = {p["status"]["podIP"] for p in lab.pods() if p["metadata"]["name"] != "client"}
    assert {e.rsplit(":", 1)[0] for e in fields["Endpoints:"].split(",")} == pods


def test_describe_pod_node_and_endpointslice(lab):
    web = next(p for p in lab.pods() if p["metadata"]["name"].startswith("web-"))
    name, node = web["metadata"]["name"], web["spec"]["nodeName"]
    pod = knetlab("describe", "pod", name).stdout
    assert f"Node:             {node}/{lab.node_ip(node)}" in pod
    assert f"IP:               {web['status']['podIP']}" in pod
    assert re.search(r"^Controlled By:\s+ReplicaSet/web-", pod, re.M)
    assert re.search(r"^\s+Ports:\s+8080/TCP, 8081/UDP$", pod, re.M)
    assert "Readiness:      http-get http://:8080/healthz" in pod
    assert re.search(r"^\s+Ready\s+True $", pod, re.M)
    described = knetlab("describe", "node", node).stdout
    assert re.search(rf"^\s+InternalIP:\s+{re.escape(lab.node_ip(node))}$", described, re.M)
    assert re.search(rf"^\s+default\s+{name}\s+0 \(0%\)", described, re.M)
    eps = next(s for s in lab.objects.list("EndpointSlice", "default")[0]
               if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web")
    text = knetlab("describe", "endpointslice", eps["metadata"]["name"]).stdout
    assert "AddressType:  IPv4" in text and f"TargetRef:  Pod/{name}" in text


def test_proxy_rules_group_a_services_rules_with_their_counters(lab):
    node = lab.pod("client")["spec"]["nodeName"]
    ip = lab.objects.get("Service", "default", "web")["spec"]["clusterIP"]
    before = int(re.search(r"port http\s+(\d+) packet", knetlab(
        "proxy", "rules", node, "--service", "web").stdout).group(1))
    client = Client(lab, "client")
    eventually(lambda: client.hostnames(ip, count=10))
    result = knetlab("proxy", "rules", node, "--service", "default/web")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "default/web" in out and "default/web-nodeport" not in out
    assert int(re.search(r"port http\s+(\d+) packet", out).group(1)) >= before + 10
    assert re.search(r"nat KUBE-SERVICES\n.*\n.*-d " + re.escape(ip) + r"/32 -p tcp", out)
    for chain in ("KUBE-SVC-", "KUBE-SEP-"):
        assert f"nat {chain}" in out
    assert "--mode random --probability 0.33333333349" in out
    assert "port udp" in out  # the UDP port of the same Service


def test_proxy_rules_of_a_whole_node_include_the_shared_chains(lab):
    out = knetlab("proxy", "rules", "worker-2").stdout
    for text in ("default/kubernetes", "default/web-nodeport", "shared by every Service",
                 "nat KUBE-POSTROUTING", "filter KUBE-FORWARD", "--dport 30080"):
        assert text in out, text


def test_proxy_rules_say_so_for_a_service_the_proxy_does_not_program(lab):
    out = knetlab("proxy", "rules", "worker-1", "--service", "nothing-here").stdout
    assert out.startswith("no kube-proxy rules for default/nothing-here on worker-1")


def test_bad_names_are_one_line_errors_with_exit_status_1(lab):
    for args, message in ((("proxy", "rules", "worker-9"), "no node 'worker-9'"),
                          (("describe", "svc", "nope"), 'services "nope" not found'),
                          (("describe", "deployment", "web"), "describe knows")):
        result = knetlab(*args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
    process = subprocess.run([sys.executable, "-m", "netlab", "describe", "svc", "nope",
                              "--name", LAB], capture_output=True, text=True, timeout=60)
    assert process.returncode == 1
    assert process.stderr == 'error: services "nope" not found\n'


def test_iptables_save_in_a_node_shows_the_same_chains(lab):
    """What docs/services.md tells people to run: the raw view behind `proxy rules`."""
    saved = lab.exec("worker-1", "iptables-legacy-save", "-t", "nat").stdout
    assert '-A KUBE-SERVICES -d ' in saved and '"default/web:http cluster IP"' in saved
    assert ":KUBE-PROXY-CANARY - [0:0]" in saved
