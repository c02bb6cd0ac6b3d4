"""Builders for Service and EndpointSlice dicts shaped like `kubectl get -o json`."""

from __future__ import annotations

from typing import Any

from netlab.proxy.changes import ChangeTracker, Snapshot


def service(ns: str, name: str, cluster_ip: str, ports: list[dict[str, Any]],
            svc_type: str = "ClusterIP", labels: dict[str, str] | None = None,
            status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
        "spec": {"type": svc_type, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": ports, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def port(name: str, port: int, target: int | None = None, protocol: str = "TCP",
         node_port: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "protocol": protocol, "port": port,
                           "targetPort": target or port}
    if node_port is not None:
        out["nodePort"] = node_port
    return out


def endpoint(ip: str, node: str = "other-node", ready: bool = True, serving: bool | None = None,
             terminating: bool = False, zone: str | None = None,
             hints: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                       "terminating": terminating},
        "nodeName": node,
    }
    if zone:
        out["zone"] = zone
    if hints:
        out["hints"] = hints
    return out


def endpoint_slice(ns: str, service_name: str, endpoints: list[dict[str, Any]],
                   ports: list[tuple[str, int, str]], name: str | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name or f"{service_name}-abcde",
                     "labels": {"kubernetes.io/service-name": service_name, **(labels or {})}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def snapshot_of(node: str, *objects: dict[str, Any]) -> Snapshot:
    tracker = ChangeTracker(node)
    for obj in objects:
        tracker.update(obj["kind"], "ADDED", obj)
    return tracker.snapshot()
