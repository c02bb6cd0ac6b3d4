"""kubectl-style output: aligned columns, `-o wide|yaml|json`, ages like `5m`."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import yaml

from netlab.api.keys import as_list
from netlab.control.pods import is_ready

Obj = dict[str, Any]
Row = list[str]


def age(obj: Obj) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def columns(header: Row, rows: list[Row]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def pod_row(pod: Obj, wide: bool) -> Row:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or []) or len(containers)
    ready = sum(1 for c in containers if c.get("ready"))
    phase = "Terminating" if pod["metadata"].get("deletionTimestamp") else (
        status.get("phase") or "Pending")
    if phase == "Pending" and pod.get("spec", {}).get("nodeName"):
        # kubectl shows a waiting container's reason: ContainerCreating, RunContainerError
        waiting = [c["state"]["waiting"].get("reason") for c in containers
                   if "waiting" in c.get("state", {})]
        phase = next((r for r in waiting if r), "ContainerCreating")
    row = [pod["metadata"]["name"], f"{ready}/{total}", phase, "0", age(pod)]
    if wide:
        row += [status.get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>",
                "<none>", "<none>"]
    return row


POD_HEADER = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
POD_WIDE = ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]


def node_row(node: Obj, wide: bool) -> Row:
    labels = node["metadata"].get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels
                            if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    info = node.get("status", {}).get("nodeInfo") or {}
    row = [node["metadata"]["name"], "Ready" if is_ready(node) else "NotReady", roles, age(node),
           info.get("kubeletVersion", "")]
    if wide:
        addresses = {a["type"]: a["address"] for a in node.get("status", {}).get("addresses", [])}
        row += [addresses.get("InternalIP", "<none>"), "<none>", "netlab netns",
                "-", info.get("containerRuntimeVersion", "")]
    return row


NODE_HEADER = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
NODE_WIDE = ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]


def namespace_row(ns: Obj, wide: bool) -> Row:
    return [ns["metadata"]["name"], ns.get("status", {}).get("phase", "Active"), age(ns)]


def _service_external_ip(spec: Obj) -> str:
    """kubectl's getServiceExternalIP (no load balancer is ever provisioned here)."""
    external = ",".join(spec.get("externalIPs") or [])
    kind = spec.get("type", "ClusterIP")
    if kind in ("ClusterIP", "NodePort"):
        return external or "<none>"
    if kind == "LoadBalancer":
        return external or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def service_row(svc: Obj, wide: bool) -> Row:
    spec = svc.get("spec", {})
    ports = ",".join(
        f"{p['port']}" + (f":{p['nodePort']}" if p.get("nodePort") else "")
        + f"/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP")
                                             else [])
    row = [svc["metadata"]["name"], spec.get("type", "ClusterIP"),
           cluster_ips[0] if cluster_ips else "<none>", _service_external_ip(spec), ports,
           age(svc)]
    if wide:
        selector = spec.get("selector") or {}
        row.append(",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>")
    return row


def _with_more(shown: list[str], count: int, limit: int = 3) -> str:
    """kubectl's listWithMoreString: the first `limit` items, then how many were left out."""
    text = ",".join(shown[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or "<unset>"


def slice_row(es: Obj, wide: bool) -> Row:
    ports = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "<unset>")
             for p in es.get("ports") or []]
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses", [])]
    return [es["metadata"]["name"], es.get("addressType", "IPv4"),
            _with_more(ports, len(ports)),
            _with_more(addresses, len(addresses)) if es.get("endpoints") else "<unset>",
            age(es)]


def endpoints_row(ep: Obj, wide: bool) -> Row:
    """kubectl's formatEndpoints: per subset, per port, per ready address."""
    subsets = ep.get("subsets") or []
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a["ip"] for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        for port in ports or [None]:
            count += len(addresses)
            shown += [ip if port is None else f"{ip}:{port['port']}" for ip in addresses]
    text = ",".join(shown[:3]) + (f" + {count - 3} more..." if count > 3 else "")
    return [ep["metadata"]["name"], text if subsets else "<none>", age(ep)]


def deployment_row(d: Obj, wide: bool) -> Row:
    status = d.get("status") or {}
    want = d.get("spec", {}).get("replicas", 1)
    return [d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{want}",
            str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0)),
            age(d)]


TABLES: dict[str, tuple[Row, Row, Callable[[Obj, bool], Row]]] = {
    "Pod": (POD_HEADER, POD_WIDE, pod_row),
    "Node": (NODE_HEADER, NODE_WIDE, node_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], namespace_row),
    "Service": (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"],
                service_row),
    "EndpointSlice": (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], [], slice_row),
    "Endpoints": (["NAME", "ENDPOINTS", "AGE"], [], endpoints_row),
    "Deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], [], deployment_row),
}


def table(kind: str, items: list[Obj], wide: bool, all_namespaces: bool) -> str:
    header, wide_header, row = TABLES.get(kind, (["NAME", "AGE"], [],
                                                 lambda o, _w: [o["metadata"]["name"], age(o)]))
    head = header + (wide_header if wide else [])
    rows = [row(o, wide) for o in items]
    if all_namespaces:
        head = ["NAMESPACE", *head]
        rows = [[o["metadata"].get("namespace", ""), *r] for o, r in zip(items, rows,
                                                                       strict=True)]
    return columns(head, rows)


def structured(items: list[Obj], fmt: str, single: bool) -> str:
    data = items[0] if single and len(items) == 1 else as_list(items)
    if fmt == "json":
        return json.dumps(data, indent=4)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
