"""Objects and a context for the `check svc` unit tests: a Service, its pods and slices."""

from __future__ import annotations

import copy
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.check.context import NodeRef, SvcContext
from netlab.lab.state import StateDir


def pod(name: str, ip: str, node: str = "worker-1", labels: dict[str, str] | None = None,
        ready: bool = True, ports: list[dict[str, Any]] | None = None,
        namespace: str = "default", phase: str = "Running") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "netexec", "image": "agnhost",
                                 "args": ["netexec", "--http-port=8080", "--udp-port=8081"]}
    container["ports"] = [{"name": "http", "containerPort": 8080},
                          {"name": "udp", "containerPort": 8081, "protocol": "UDP"}] \
        if ports is None else ports
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": {"app": "web"} if labels is None else labels},
            "spec": {"nodeName": node, "containers": [container]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def service(selector: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"app": "web"} if selector is None else selector,
        "clusterIP": "10.96.0.50", "type": "ClusterIP",
        "ports": ports or [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP"}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}, "spec": body}


def endpoint_slice(pods: list[dict[str, Any]], ports: list[tuple[str, int, str]],
                   name: str = "web-abcde") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            "endpoints": [{"addresses": [p["status"]["podIP"]],
                           "conditions": {"ready": p["status"]["conditions"][0]["status"]
                                          == "True"},
                           "nodeName": p["spec"]["nodeName"],
                           "targetRef": {"kind": "Pod", "name": p["metadata"]["name"]}}
                          for p in pods]}


BACKENDS = [pod("web-a", "10.244.1.3"), pod("web-b", "10.244.2.2", node="worker-2")]
CLIENT = pod("client", "10.244.1.2", labels={"app": "client"})


DEFAULT: dict[str, Any] = {}


def context(svc: dict[str, Any] | None = DEFAULT, pods: list[dict[str, Any]] | None = None,
            slices: list[dict[str, Any]] | None = None) -> SvcContext:
    """A context as load_context would build it, with no lab behind it (svc=None: no Service)."""
    svc = service() if svc is DEFAULT else svc
    pods = copy.deepcopy(BACKENDS + [CLIENT]) if pods is None else pods
    if slices is None:
        slices = [endpoint_slice([p for p in pods if p["metadata"]["labels"].get("app") == "web"],
                                 [("http", 8080, "TCP")])]
    nodes = [NodeRef("worker-1", "192.168.10.3", "nl-t-worker-1"),
             NodeRef("worker-2", "192.168.10.4", "nl-t-worker-2")]
    return SvcContext("default", "web", svc, pods, slices, nodes, "nl-t-ext",
                      ClusterConfig(lab="t"), "t", StateDir("t", root="/nonexistent"),
                      source=pods[-1] if pods else None)
