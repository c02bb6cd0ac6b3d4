"""A small lab as data for the trace unit tests: three nodes, five pods, eight Services.

The rules each node "has installed" are what the proxy's renderer and flannel's
overlay write for that node, so the simulator reads the same text a live node
would show in iptables-legacy-save. For nftables mode, what `nft -j list table`
and `nft -a list table` printed for the same Services on each node is recorded
in trace_data/ (regenerate_nft.py writes it, as root).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.node.overlay import FORWARD_HOOK, MASQ_HOOK, masquerade_payload
from netlab.proxy.changes import ChangeTracker, Snapshot
from netlab.proxy.iptables.render import NodeConfig, jump_rules, render
from netlab.trace import nft
from netlab.trace.labview import LabView, build_view
from netlab.trace.netfilter import Ruleset, parse_save

DATA = Path(__file__).parent / "trace_data"

NODES = [("control-plane", "192.168.10.2", "10.244.0.0/24", "control-plane"),
         ("worker-1", "192.168.10.3", "10.244.1.0/24", "worker"),
         ("worker-2", "192.168.10.4", "10.244.2.0/24", "worker")]
PODS = {  # name: (node, ip)
    "a": ("worker-1", "10.244.1.2"),
    "b": ("worker-1", "10.244.1.3"),
    "c": ("worker-2", "10.244.2.2"),
    "d": ("worker-2", "10.244.2.3"),
}
DNS_POD = ("coredns-1", "control-plane", "10.244.0.2")


def info(lab: str = "tr-u") -> dict[str, Any]:
    return {
        "name": lab, "source": "",
        "nodes": [{"name": n, "role": r, "address": a, "netns": f"nl-{lab}-{n}"}
                  for n, a, _, r in NODES],
        "ext": {"address": "192.168.10.100", "netns": f"nl-{lab}-ext"},
        "underlay": {"cidr": "192.168.10.0/24", "gateway": "192.168.10.1", "mtu": 1500},
    }


def node(name: str, cidr: str, index: int) -> dict[str, Any]:
    data = json.dumps({"VNI": 1, "VtepMAC": f"0a:00:00:00:00:0{index}"})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {"flannel.alpha.coreos.com/backend-data": data}},
            "spec": {"podCIDR": cidr}}


def pod(name: str, node_name: str, ip: str, namespace: str = "default",
        labels: dict[str, str] | None = None, image: str = "agnhost") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": f"registry.k8s.io/e2e-test-images/{image}"}
    if image == "agnhost":
        container["args"] = ["netexec", "--http-port=8080", "--udp-port=8081"]
    else:
        container["image"] = "registry.k8s.io/coredns/coredns:v1.11.3"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": labels or {"app": name}},
            "spec": {"nodeName": node_name, "containers": [container]},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def service(name: str, ip: str, ports: list[dict[str, Any]], namespace: str = "default",
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": ports,
                     "type": spec.pop("type", "ClusterIP"), **spec}}


def endpoint_slice(name: str, service_name: str, endpoints: list[tuple[str, str, str]],
                   ports: list[dict[str, Any]], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                                             "terminating": False},
                           "nodeName": node_name,
                           "targetRef": {"kind": "Pod", "namespace": namespace,
                                         "name": pod_name}}
                          for pod_name, node_name, ip in endpoints],
            "ports": ports}


HTTP = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
HTTP_EP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def objects() -> list[dict[str, Any]]:
    objs = [node(n, cidr, i) for i, (n, _, cidr, _) in enumerate(NODES)]
    objs += [pod(name, n, ip) for name, (n, ip) in PODS.items()]
    objs.append(pod(DNS_POD[0], DNS_POD[1], DNS_POD[2], "kube-system",
                    {"k8s-app": "kube-dns"}, image="coredns"))
    objs += [
        service("web", "10.96.0.20", HTTP),
        endpoint_slice("web-abcde", "web", [("c", "worker-2", "10.244.2.2")], HTTP_EP),
        service("two", "10.96.0.21", HTTP),
        endpoint_slice("two-abcde", "two", [("c", "worker-2", "10.244.2.2"),
                                            ("d", "worker-2", "10.244.2.3")], HTTP_EP),
        service("self", "10.96.0.22", HTTP),
        endpoint_slice("self-abcde", "self", [("a", "worker-1", "10.244.1.2")], HTTP_EP),
        service("empty", "10.96.0.23", HTTP),
        service("np", "10.96.0.24", [{**HTTP[0], "nodePort": 30080}], type="NodePort"),
        endpoint_slice("np-abcde", "np", [("c", "worker-2", "10.244.2.2")], HTTP_EP),
        service("local", "10.96.0.25", [{**HTTP[0], "nodePort": 30081}], type="NodePort",
                externalTrafficPolicy="Local"),
        endpoint_slice("local-abcde", "local", [("c", "worker-2", "10.244.2.2")], HTTP_EP),
        service("kube-dns", "10.96.0.10",
                [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                 {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}],
                namespace="kube-system"),
        endpoint_slice("kube-dns-xyz", "kube-dns",
                       [(DNS_POD[0], DNS_POD[1], DNS_POD[2])],
                       [{"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}], "kube-system"),
        service("sticky", "10.96.0.26", HTTP, sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}),
        endpoint_slice("sticky-abcde", "sticky", [("c", "worker-2", "10.244.2.2"),
                                                  ("d", "worker-2", "10.244.2.3")], HTTP_EP),
    ]
    return objs


def view(backend: str = "vxlan", proxy_mode: str = "iptables") -> LabView:
    return build_view(info(), ClusterConfig(lab="tr-u", backend=backend,
                                            proxy_mode=proxy_mode), objects())


def address_of(node_name: str) -> str:
    return next(a for n, a, _, _ in NODES if n == node_name)


def snapshot(node_name: str) -> Snapshot:
    """The proxy's view of the lab's Services and EndpointSlices from `node_name`."""
    tracker = ChangeTracker(node_name)
    for obj in objects():
        if obj["kind"] in ("Service", "EndpointSlice"):
            tracker.update(obj["kind"], "ADDED", obj)
    return tracker.snapshot()


def installed_rules(node_name: str, with_proxy: bool = True) -> str:
    """What iptables-legacy-save would show on the node: kube-proxy's rules and flannel's."""
    cidr = next(c for n, _, c, _ in NODES if n == node_name)
    text = [masquerade_payload("10.244.0.0/16", cidr, (MASQ_HOOK, FORWARD_HOOK))]
    if with_proxy:
        config = NodeConfig(node_name, node_ips=(address_of(node_name),))
        text.append(render(snapshot(node_name), config, insert_jumps=jump_rules(config)).payload)
    return "\n".join(text)


def rulesets(with_proxy: bool = True) -> dict[str, Ruleset]:
    return {n: parse_save(installed_rules(n, with_proxy)) for n, _, _, _ in NODES}


def nft_rulesets() -> dict[str, Ruleset]:
    """nftables mode: flannel's iptables rules and kube-proxy's recorded `ip kube-proxy` table."""
    out = {}
    for name, _, _, _ in NODES:
        rules = parse_save(installed_rules(name, with_proxy=False))
        recorded = json.loads((DATA / f"nft-{name}.json").read_text())
        rules.nft = nft.parse_table(recorded["items"], recorded["listing"])
        out[name] = rules
    return out
