"""The Service commands' text, without a lab: kubectl's describe and get layouts."""

from __future__ import annotations

from netlab.cli.describe import describe_endpointslice, describe_pod, describe_service
from netlab.cli.render import endpoints_row, service_row, slice_row
from netlab.cli.rules_render import human_bytes, short_spec
from netlab.cli.tabwriter import align
from netlab.proxy.rules_view import Rule

WEB = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.12.34",
             "clusterIPs": ["10.96.12.34"], "ipFamilies": ["IPv4"],
             "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
             "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                        "nodePort": 30080},
                       {"name": "udp", "port": 8081, "targetPort": 8081, "protocol": "UDP",
                        "nodePort": 30080}]},
}


def endpoint(ip: str, ready: bool = True) -> dict:
    return {"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "worker-1",
            "targetRef": {"kind": "Pod", "name": f"pod-{ip.rsplit('.', 1)[1]}"}}


SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
    "metadata": {"name": "web-abcde", "namespace": "default",
                 "labels": {"kubernetes.io/service-name": "web"}},
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
              {"name": "udp", "port": 8081, "protocol": "UDP"}],
    "endpoints": [endpoint(f"10.244.1.{i}") for i in range(2, 6)]
    + [endpoint("10.244.2.9", ready=False)],
}


def test_tabwriter_aligns_runs_of_lines_that_share_a_column():
    """As Go's tabwriter: a line without a tab ends the run; the last cell is free."""
    text = "Conditions:\n  Type\tStatus\n  Ready \tTrue \nVolumes:\t<none>\nQoS Class:\tBestEffort"
    assert align(text).split("\n") == [
        "Conditions:",
        "  Type      Status",
        "  Ready     True ",
        "Volumes:    <none>",
        "QoS Class:  BestEffort",
    ]


def test_describe_service_is_kubectls_layout():
    assert describe_service(WEB, [SLICE]) == """\
Name:                     web
Namespace:                default
Labels:                   app=web
Annotations:              <none>
Selector:                 app=web
Type:                     NodePort
IP Family Policy:         SingleStack
IP Families:              IPv4
IP:                       10.96.12.34
IPs:                      10.96.12.34
Port:                     http  80/TCP
TargetPort:               http/TCP
NodePort:                 http  30080/TCP
Endpoints:                10.244.1.2:8080,10.244.1.3:8080,10.244.1.4:8080 + 1 more...
Port:                     udp  8081/UDP
TargetPort:               8081/UDP
NodePort:                 udp  30080/UDP
Endpoints:                10.244.1.2:8081,10.244.1.3:8081,10.244.1.4:8081 + 1 more...
Session Affinity:         None
External Traffic Policy:  Cluster
Internal Traffic Policy:  Cluster
Events:                   <none>
"""


def test_describe_service_without_slices_says_none():
    text = describe_service({**WEB, "spec": {**WEB["spec"], "type": "ClusterIP",
                                             "externalTrafficPolicy": None}}, [])
    assert "Endpoints:                <none>" in text
    assert "External Traffic Policy" not in text


def test_describe_endpointslice_lists_each_endpoint():
    text = describe_endpointslice(SLICE)
    assert text.startswith("Name:         web-abcde\nNamespace:    default\n")
    assert "  Name  Port  Protocol\n  ----  ----  --------\n  http  8080  TCP\n" in text
    assert "  - Addresses:  10.244.2.9\n    Conditions:\n      Ready:    false\n" in text
    assert "    TargetRef:  Pod/pod-9\n    NodeName:   worker-1\n    Zone:       <unset>\n" \
        in text


def test_describe_pod_shows_node_ports_probe_and_conditions():
    pod = {
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7b6",
                                          "controller": True}]},
        "spec": {"nodeName": "worker-1", "containers": [{
            "name": "netexec", "image": "agnhost:2.47", "args": ["netexec"],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                               "periodSeconds": 1}}]},
        "status": {"phase": "Running", "hostIP": "192.168.10.3", "podIP": "10.244.1.2",
                   "podIPs": [{"ip": "10.244.1.2"}],
                   "startTime": "2026-01-02T03:04:05Z",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "netexec", "ready": True,
                                          "state": {"running": {
                                              "startedAt": "2026-01-02T03:04:06Z"}}}]},
    }
    lines = describe_pod(pod).split("\n")
    assert "Node:             worker-1/192.168.10.3" in lines
    assert "Start Time:       Fri, 02 Jan 2026 03:04:05 +0000" in lines
    assert "  IP:           10.244.1.2" in lines  # aligned with Controlled By
    assert "Controlled By:  ReplicaSet/web-7b6" in lines
    assert "    Port:          8080/TCP" in lines
    assert "    Readiness:      http-get http://:8080/healthz delay=0s timeout=1s period=1s " \
           "#success=1 #failure=3" in lines
    conditions = lines.index("Conditions:")
    assert lines[conditions + 1].split() == ["Type", "Status"]
    assert lines[conditions + 2].split() == ["Ready", "True"]
    # The conditions table and the lines after it are one tabwriter block.
    assert lines[conditions + 2].index("True") == lines[-2].index("<none>")
    assert lines[-2].startswith("Events:")


def test_get_endpoints_goes_port_by_port_as_kubectl_does():
    ep = {"metadata": {"name": "web"}, "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
        "ports": [{"port": 8080}, {"port": 8081}]}]}
    assert endpoints_row(ep, False)[1] == "10.0.0.1:8080,10.0.0.2:8080,10.0.0.1:8081 + 1 more..."
    assert endpoints_row({"metadata": {"name": "none"}}, False)[1] == "<none>"


def test_get_endpointslices_shows_three_of_each():
    row = slice_row({**SLICE, "ports": [{"port": p} for p in (1, 2, 3, 4)]}, False)
    assert row[2] == "1,2,3 + 1 more..."
    assert row[3] == "10.244.1.2,10.244.1.3,10.244.1.4 + 2 more..."
    assert slice_row({"metadata": {"name": "x"}}, False)[2:4] == ["<unset>", "<unset>"]


def test_get_services_columns_for_each_type():
    assert service_row(WEB, True)[1:5] == ["NodePort", "10.96.12.34", "<none>",
                                           "80:30080/TCP,8081:30080/UDP"]
    external = {"metadata": {"name": "db"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert service_row(external, False)[1:5] == ["ExternalName", "<none>", "db.example.com",
                                                 "<none>"]
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
                                                    "clusterIPs": ["None"]}}
    assert service_row(headless, False)[2] == "None"


def test_rules_are_shown_without_their_comment_and_with_short_byte_counts():
    rule = Rule("nat", "KUBE-SERVICES", 2, '-d 10.96.0.5/32 -p tcp -m comment --comment '
                '"default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-X', "KUBE-SVC-X",
                "default/web:http cluster IP", 3, 180)
    assert short_spec(rule) == "-d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X"
    assert [human_bytes(n) for n in (0, 999, 1900, 25_000, 3_400_000)] == [
        "0", "999", "1.9K", "25K", "3.4M"]
