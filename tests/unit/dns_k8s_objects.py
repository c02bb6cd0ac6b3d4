"""Kubernetes objects as plain dicts, shaped like `kubectl get -o json`, for the DNS tests."""

from __future__ import annotations

from typing import Any

Ports = tuple[tuple[str, int, str], ...]
HTTP: Ports = (("http", 80, "TCP"),)


def _ports(ports: Ports) -> list[dict[str, Any]]:
    return [{"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
            for n, p, proto in ports]


def service(name: str, ns: str = "default", ip: str | None = "10.96.0.20", *,
            ips: list[str] | None = None, ports: Ports = HTTP, headless: bool = False,
            external: str | None = None, publish_not_ready: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "ports": _ports(ports)}
    if external is not None:
        spec = {"type": "ExternalName", "externalName": external, "ports": _ports(ports)}
    elif headless:
        spec.update(clusterIP="None", clusterIPs=["None"])
    else:
        cluster_ips = ips or ([ip] if ip else [])
        spec.update(clusterIP=cluster_ips[0] if cluster_ips else "", clusterIPs=cluster_ips)
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "spec": spec}


def endpoint(ip: str, *, ready: bool | None = True, hostname: str | None = None,
             pod: str | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {}, "nodeName": "node-1"}
    if ready is not None:
        ep["conditions"] = {"ready": ready, "serving": ready, "terminating": False}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default"}
    return ep


def endpoint_slice(service_name: str, ns: str = "default", endpoints: list[dict[str, Any]] = (),
                   *, ports: Ports = HTTP, name: str | None = None,
                   family: str = "IPv4") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{service_name}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": family, "endpoints": list(endpoints), "ports": _ports(ports)}


def pod(name: str, ns: str = "default", ip: str = "10.244.1.5") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
