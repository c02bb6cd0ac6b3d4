"""Builders for the objects the control plane reads, shaped like `kubectl get -o json`."""

from __future__ import annotations

from typing import Any

from netlab.control.view import View
from netlab.store import open_store
from netlab.store.objects import Objects

Obj = dict[str, Any]
CREATED = "2024-01-01T00:00:00Z"


def node(name: str, ip: str = "192.168.10.3", *, control_plane: bool = False,
         ready: bool = True, pod_cidr: str | None = "auto", labels: dict | None = None,
         created: str = CREATED, **spec: Any) -> Obj:
    meta_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    node_spec: Obj = dict(spec)
    if control_plane:
        meta_labels["node-role.kubernetes.io/control-plane"] = ""
        node_spec.setdefault("taints", []).append(
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    if pod_cidr == "auto":
        pod_cidr = f"10.244.{int(ip.rsplit('.', 1)[1]) - 2}.0/24"
    if pod_cidr:
        node_spec.update(podCIDR=pod_cidr, podCIDRs=[pod_cidr])
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-node-{name}", "labels": meta_labels,
                         "creationTimestamp": created},
            "spec": node_spec,
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name: str, ns: str = "default", *, labels: dict | None = None, node: str = "",
        ip: str | None = None, ready: bool = False, phase: str | None = None,
        owner: Obj | None = None, created: str = CREATED, ports: list | None = None,
        deleting: bool = False, **spec: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": ns, "uid": f"uid-pod-{name}",
                 "labels": labels or {}, "creationTimestamp": created}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:01:00Z"
    status: Obj = {"phase": phase or ("Running" if ip else "Pending")}
    if ip:
        status["podIP"] = ip
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": created}]
    container = {"name": "app", "image": "netexec", "ports": ports or []}
    pod_spec = {"containers": [container], **spec}
    if node:
        pod_spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec,
            "status": status}


def deployment(name: str, replicas: int = 3, ns: str = "default", *, image: str = "netexec",
               generation: int = 1, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-deploy-{name}",
                         "generation": generation, "creationTimestamp": CREATED},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image}]}},
                     **spec}}


def service(name: str, ns: str = "default", *, selector: dict | None = None,
            ports: list | None = None, labels: dict | None = None, **spec: Any) -> Obj:
    svc_spec: Obj = {"type": "ClusterIP",
                     "ports": ports if ports is not None else [
                         {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                     **spec}
    if selector is not None:
        svc_spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-svc-{name}",
                         "labels": labels or {}},
            "spec": svc_spec}


def view(*objs: Obj) -> View:
    return View.of(objs)


def open_objects(path: str) -> Objects:
    return Objects(open_store(f"sqlite://{path}/store.db"))


def stored_view(objects: Objects) -> View:
    """Everything in the store, as a pass would see it."""
    return View.of(obj for kind in View.KINDS for obj in objects.list(kind)[0])
