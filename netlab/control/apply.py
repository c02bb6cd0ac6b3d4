"""`kubectl apply` and `delete` against the store: create-or-update with admission.

What the API server does on write, for the kinds the lab knows: Services get their
ClusterIP and NodePorts allocated (servicealloc), an update keeps what the user did
not set (allocated IPs, status), and deleting a pod that runs on a node is graceful
(the node's agent finishes it). Namespaces must exist before objects go in them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.api.objects import validate_object
from netlab.dns.addon import coredns_deployment, kube_dns_service
from netlab.errors import ManifestError
from netlab.store.objects import AlreadyExistsError, Obj, Objects

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class Applied:
    kind: str
    namespace: str | None
    name: str
    action: str  # created | configured | unchanged | deleted | not found

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name} {self.action}"


def namespace_object(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def bootstrap(objects: Objects, config: ClusterConfig) -> None:
    """What kubeadm init leaves: system namespaces, the `kubernetes` Service, the DNS addon."""
    from netlab.control.servicealloc import ensure_default_services

    for name in SYSTEM_NAMESPACES:
        if objects.get("Namespace", None, name) is None:
            with contextlib.suppress(AlreadyExistsError):
                objects.create(namespace_object(name))
    ensure_default_services(objects, config)
    if config.dns_enabled:
        apply_objects(objects, [kube_dns_service(config.dns_cluster_ip),
                                coredns_deployment(config.dns_replicas)], config)


def _merge_update(current: Obj, wanted: Obj) -> Obj:
    """The stored object after `apply`: the user's spec and labels, the system's fields kept."""
    merged = dict(current)
    meta = dict(current["metadata"])
    for field in ("labels", "annotations"):
        if field in wanted["metadata"]:
            meta[field] = wanted["metadata"][field]
    meta["generation"] = int(meta.get("generation", 1)) + (
        current.get("spec") != wanted.get("spec"))
    merged["metadata"] = meta
    for field, value in wanted.items():
        if field not in ("metadata", "status", "apiVersion", "kind"):
            merged[field] = value
    return merged


def _same(a: Obj, b: Obj) -> bool:
    def strip(o: Obj) -> Any:
        return ({k: v for k, v in o.items() if k not in ("metadata", "status")},
                o["metadata"].get("labels"), o["metadata"].get("annotations"))
    return strip(a) == strip(b)


def apply_object(objects: Objects, obj: Obj, config: ClusterConfig,
                 source: str = "<object>") -> Applied:
    """Validate (as the API server does on every write), admit, then create or update."""
    from netlab.control.servicealloc import admit_service

    obj, _notes = validate_object(obj, source)
    kind, meta = obj["kind"], obj["metadata"]
    namespace, name = meta.get("namespace"), meta["name"]
    if namespace and objects.get("Namespace", None, namespace) is None:
        raise ManifestError(f'namespaces "{namespace}" not found',
                            field="metadata.namespace")
    current = objects.get(kind, namespace, name)
    if current is None:
        if kind == "Service":
            obj = admit_service(objects, obj, config)
        objects.create(obj)
        return Applied(kind, namespace, name, "created")
    updated = _merge_update(current, obj)
    if kind == "Service":
        spec = dict(updated["spec"])
        for field in ("clusterIP", "clusterIPs"):
            spec.setdefault(field, current["spec"].get(field))
        updated["spec"] = spec
        updated = admit_service(objects, updated, config, previous=current)
    if _same(current, updated):
        return Applied(kind, namespace, name, "unchanged")
    objects.update(updated)
    return Applied(kind, namespace, name, "configured")


def apply_objects(objects: Objects, objs: Iterable[Obj], config: ClusterConfig) -> list[Applied]:
    """Apply in a safe order: namespaces first, then everything else as given."""
    ordered = sorted(objs, key=lambda o: o["kind"] != "Namespace")
    return [apply_object(objects, o, config) for o in ordered]


def delete_object(objects: Objects, kind: str, namespace: str | None, name: str) -> Applied:
    from netlab.control.pods import request_pod_deletion
    from netlab.control.servicealloc import release_service

    current = objects.get(kind, namespace, name)
    if current is None:
        return Applied(kind, namespace, name, "not found")
    if kind == "Pod":
        request_pod_deletion(objects, namespace or "default", name)
    else:
        objects.delete(kind, namespace, name)
        if kind == "Service":
            release_service(objects, current)
    return Applied(kind, namespace, name, "deleted")
