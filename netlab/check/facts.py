"""Pure readings of a Service, its pods and its EndpointSlices, as the steps need them.

Nothing here touches the kernel or the store: the steps pass objects in, so each
reading is unit-testable. Where Kubernetes decides something (which pods a
selector picks, what a named targetPort means in a pod, which endpoints
kube-proxy programs on a node), the same functions the lab's controllers and
proxy use are called, so the check judges the kernel against Kubernetes'
semantics rather than a second copy of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netlab.api.selectors import matches_map
from netlab.control.endpointslices import resolve_port
from netlab.control.pods import is_ready, is_terminating, node_of
from netlab.dns.addon import is_dns_pod
from netlab.errors import NetlabError
from netlab.proxy.model import (
    LABEL_HEADLESS,
    LABEL_SERVICE_PROXY_NAME,
    Endpoint,
    ServicePort,
    ServicePortName,
    endpoint_slice,
    merge_slices,
    service_ports,
)
from netlab.proxy.topology import categorize_endpoints
from netlab.trace.labview import Listener, pod_listeners

Obj = dict[str, Any]
PROXY_IGNORED_LABELS = (LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME)
CLOSE_VALUE = 0.5  # difflib ratio above which a label value looks like a typo of the wanted one


def key(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def spec(svc: Mapping[str, Any]) -> Mapping[str, Any]:
    return svc.get("spec") or {}


def svc_type(svc: Mapping[str, Any]) -> str:
    return spec(svc).get("type") or "ClusterIP"


def port_label(port: Mapping[str, Any]) -> str:
    """A Service port as the evidence names it: `http 80/TCP`, or `80/TCP` when unnamed."""
    text = f"{port.get('port')}/{port.get('protocol', 'TCP')}"
    return f"{port['name']} {text}" if port.get("name") else text


def target_of(port: Mapping[str, Any]) -> int | str:
    """targetPort, defaulting to port as the API server defaults it."""
    return port.get("targetPort", port.get("port"))


def describe(svc: Mapping[str, Any]) -> list[str]:
    """One line about the Service and one per port, for the top of the report."""
    s = spec(svc)
    head = f"type {svc_type(svc)}"
    if svc_type(svc) == "ExternalName":
        return [f"{head}, externalName {s.get('externalName')}"]
    head += f", ClusterIP {s.get('clusterIP') or '<none>'}"
    selector = s.get("selector")
    head += ", selector " + (",".join(f"{k}={v}" for k, v in selector.items())
                             if selector else "<none>")
    lines = [head]
    for p in s.get("ports") or []:
        node = f", nodePort {p['nodePort']}" if p.get("nodePort") else ""
        lines.append(f"port {port_label(p)} -> targetPort {target_of(p)}{node}")
    return lines


def not_proxied(svc: Mapping[str, Any]) -> str | None:
    """Why kube-proxy writes no rules for this Service (None: it does)."""
    if svc_type(svc) == "ExternalName":
        return "an ExternalName Service is a DNS CNAME: no ClusterIP, no proxy rules"
    ip = spec(svc).get("clusterIP")
    if not ip or ip == "None":
        return "a headless Service (clusterIP: None) has no ClusterIP and no proxy rules"
    try:
        ports = service_ports(svc)
    except NetlabError as exc:
        return f"kube-proxy cannot read the Service: {exc}"
    if not ports:
        return "kube-proxy ignores this Service (service.kubernetes.io/headless or " \
               "service-proxy-name label)"
    return None


# selector and pods --------------------------------------------------------------------
def selected(svc: Mapping[str, Any], pods: Iterable[Obj]) -> list[Obj]:
    """Pods in the Service's namespace whose labels the selector matches (any phase)."""
    ns = svc["metadata"].get("namespace", "default")
    selector = spec(svc).get("selector")
    return sorted((p for p in pods if p["metadata"].get("namespace", "default") == ns
                   and matches_map(selector, p["metadata"].get("labels") or {})),
                  key=lambda p: p["metadata"]["name"])


def labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def near_misses(selector: Mapping[str, str], pods: Iterable[Obj], limit: int = 3) -> list[str]:
    """Pods whose labels come closest to the selector, with what differs.

    A pod is close when it carries some of the selector's pairs, a value the
    selector wants under another key (`name=web` against `app=web`), or one of
    its keys with a similar value (`app=web` against `app=webb`); the closest
    come first. Pods that only share a key with an unrelated value
    (`app=client`) are shown only when nothing closer exists.
    """
    scored = []
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        same = sum(1 for k, v in selector.items() if labels.get(k) == v)
        wrong_value = [k for k, v in selector.items() if k in labels and labels[k] != v]
        moved = [k for k, v in selector.items() if k not in labels and v in labels.values()]
        if not (same or wrong_value or moved):
            continue
        differs = [f"{k}={labels[k]} (selector wants {k}={selector[k]})" for k in wrong_value]
        for k in moved:
            other = next(lk for lk, lv in sorted(labels.items()) if lv == selector[k])
            differs.append(f"{other}={selector[k]} (selector wants {k}={selector[k]})")
        missing = [k for k in selector if k not in labels and k not in moved]
        differs += [f"no label {k} (selector wants {k}={selector[k]})" for k in missing]
        similarity = _similarity(selector, labels)
        close = bool(same or moved) or similarity >= CLOSE_VALUE
        scored.append((close, same * 2 + len(wrong_value) + len(moved), similarity,
                       pod["metadata"]["name"], "; ".join(differs)))
    if any(row[0] for row in scored):  # `app=client` is no near miss when `app=web` is there
        scored = [row for row in scored if row[0]]
    scored.sort(key=lambda t: (-t[1], -t[2], t[3]))
    return [f"{name}: {diff}" for *_, name, diff in scored[:limit]]


def _similarity(selector: Mapping[str, str], labels: Mapping[str, str]) -> float:
    return max((difflib.SequenceMatcher(None, v, labels[k]).ratio()
                for k, v in selector.items() if k in labels), default=0.0)


def label_keys(pods: Iterable[Obj]) -> list[str]:
    return sorted({k for p in pods for k in (p["metadata"].get("labels") or {})})


@dataclass(frozen=True)
class PodState:
    name: str
    node: str
    ip: str
    phase: str
    ready: bool
    terminating: bool
    reason: str  # why not Ready, when it is not

    @property
    def serving(self) -> bool:
        return self.phase == "Running" and self.ready and not self.terminating

    def line(self) -> str:
        where = f" on {self.node}" if self.node else ""
        ip = f" ({self.ip})" if self.ip else ""
        state = "Terminating" if self.terminating else self.phase
        ready = "Ready" if self.ready else f"not Ready{': ' + self.reason if self.reason else ''}"
        return f"{self.name}{where}{ip}: {state}, {ready}"


def pod_state(pod: Obj) -> PodState:
    status = pod.get("status") or {}
    reason = ""
    if not is_ready(pod):
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"),
                    None)
        reason = (cond or {}).get("reason") or ""
        probe = _readiness_probe(pod)
        if probe:
            reason = f"{reason + ', ' if reason else ''}readiness probe {probe}"
    return PodState(pod["metadata"]["name"], node_of(pod), status.get("podIP") or "",
                    status.get("phase") or "Pending", is_ready(pod), is_terminating(pod), reason)


def _readiness_probe(pod: Obj) -> str:
    for container in (pod.get("spec") or {}).get("containers") or []:
        probe = container.get("readinessProbe")
        if not probe:
            continue
        if "httpGet" in probe:
            get = probe["httpGet"]
            return f"httpGet :{get.get('port')}{get.get('path', '/')}"
        if "tcpSocket" in probe:
            return f"tcpSocket :{probe['tcpSocket'].get('port')}"
        if "exec" in probe:
            return "exec " + " ".join(probe["exec"].get("command") or [])
    return ""


# ports --------------------------------------------------------------------------------
def container_ports(pod: Obj) -> list[tuple[str, int, str]]:
    """(name, containerPort, protocol) of every container of the pod."""
    return [(p.get("name") or "", int(p["containerPort"]), p.get("protocol", "TCP"))
            for c in (pod.get("spec") or {}).get("containers") or []
            for p in c.get("ports") or [] if p.get("containerPort")]


def container_ports_text(pod: Obj) -> str:
    return ", ".join(f"{name + ' ' if name else ''}{number}/{proto}"
                     for name, number, proto in container_ports(pod)) or "none declared"


def target_port_problem(port: Mapping[str, Any], pod: Obj) -> str | None:
    """Why this Service port's targetPort does not name a port of the pod (None: it does).

    A named targetPort must be a containerPort name with the same protocol
    (the EndpointSlice controller leaves the pod out otherwise). A number must
    be a declared containerPort of that protocol when the pod declares any; a
    pod that declares none gets the benefit of the doubt (containerPort is
    informational), and the traffic steps decide.
    """
    target = target_of(port)
    protocol = port.get("protocol", "TCP")
    declared = container_ports(pod)
    if isinstance(target, str) and not target.isdigit():
        if resolve_port(pod, {**port, "targetPort": target}) is None:
            same_name = [f"{n} {num}/{proto}" for n, num, proto in declared if n == target]
            why = (f"its port {target} is {same_name[0]}, not {protocol}" if same_name
                   else f"no containerPort is named {target}")
            return why
        return None
    number = int(target)
    if not declared or (number, protocol) in {(num, proto) for _, num, proto in declared}:
        return None
    return f"no containerPort {number}/{protocol}"


def resolved_target(port: Mapping[str, Any], pod: Obj) -> int | None:
    target = target_of(port)
    if isinstance(target, str) and not target.isdigit():
        return resolve_port(pod, {**port, "targetPort": target})
    return int(target)


# endpoints ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One endpoint of one service port, with the pod it belongs to."""

    ip: str
    port: int
    protocol: str
    pod: str  # ns/name, "" when no pod has the address
    node: str
    ready: bool

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def line(self) -> str:
        who = f" ({self.pod.split('/', 1)[-1]}{', ' + self.node if self.node else ''})" \
            if self.pod else ""
        return f"{self.address}{who} {'ready' if self.ready else 'not ready'}"


def service_port_map(svc: Mapping[str, Any]) -> dict[ServicePortName, ServicePort]:
    try:
        return service_ports(svc)
    except NetlabError:
        return {}


def spec_port(svc: Mapping[str, Any], spn: ServicePortName) -> Mapping[str, Any]:
    return next(p for p in spec(svc).get("ports") or []
                if (p.get("name") or "") == spn.port and p.get("protocol", "TCP") == spn.protocol)


def slice_endpoints(slices: Iterable[Obj], node: str = "",
                    as_proxy: bool = True) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """Endpoints per service port, merged over the slices as kube-proxy on `node` merges them.

    `as_proxy=False` also reads the slices kube-proxy ignores by label (a headless
    Service's, or another proxy's): they still list the Service's endpoints.
    """
    if not as_proxy:
        slices = [{**s, "metadata": {**s["metadata"], "labels": {
            k: v for k, v in (s["metadata"].get("labels") or {}).items()
            if k not in PROXY_IGNORED_LABELS}}} for s in slices]
    infos = [info for s in slices if (info := endpoint_slice(s)) is not None]
    return merge_slices(infos, node)


def backends(svc: Mapping[str, Any], slices: Iterable[Obj],
             pods: Iterable[Obj]) -> dict[str, list[Backend]]:
    """Every endpoint per Service port (keyed by port_label), ready or not."""
    by_ip = {(p.get("status") or {}).get("podIP"): p for p in pods
             if (p.get("status") or {}).get("podIP")}
    merged = slice_endpoints(slices, as_proxy=False)
    out: dict[str, list[Backend]] = {}
    for p in spec(svc).get("ports") or []:
        spn = (p.get("name") or "", p.get("protocol", "TCP"))
        eps = next((e for k, e in merged.items() if (k.port, k.protocol) == spn), ())
        out[port_label(p)] = [
            Backend(ep.ip, ep.port, spn[1], key(by_ip[ep.ip]) if ep.ip in by_ip else "",
                    ep.node_name, ep.ready) for ep in eps]
    return out


def expected_on_node(svc: Mapping[str, Any], slices: Iterable[Obj],
                     node: str) -> dict[ServicePortName, tuple[set[str], set[str]]]:
    """Per service port: (endpoints every rule set must reach, endpoints it may reach) on node.

    The first set is what kube-proxy's CategorizeEndpoints gives on this node
    (local only for Local traffic policies); the second adds every ready or
    serving endpoint, so the comparison tolerates a rule for an endpoint that
    another policy on the same port uses.
    """
    merged = slice_endpoints(slices, node)
    out = {}
    for spn, port in service_port_map(svc).items():
        eps = merged.get(spn, ())
        reachable = {ep.key for ep in categorize_endpoints(eps, port, node).reachable}
        allowed = {ep.key for ep in eps if ep.ready or ep.serving}
        out[spn] = (reachable, allowed | reachable)
    return out


# the source of traffic ----------------------------------------------------------------
def usable(pod: Obj) -> bool:
    """A pod traffic can be sent from: it has an IP and runs."""
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") == "Running" \
        and not is_terminating(pod)


def choose_source(svc: Mapping[str, Any], pods: Iterable[Obj]) -> Obj | None:
    """The vantage point, as the Debug Services page's throwaway pod.

    A pod the Service does not select comes first (its traffic needs no
    hairpin), in the Service's namespace before others, DNS pods last; a
    backend is used only when nothing else runs.
    """
    pods = [p for p in pods if usable(p)]
    chosen = {key(p) for p in selected(svc, pods)}
    ns = svc["metadata"].get("namespace", "default")

    def rank(pod: Obj) -> tuple[int, int, int, str]:
        return (key(pod) in chosen, is_dns_pod(pod),
                pod["metadata"].get("namespace", "default") != ns, key(pod))

    return min(pods, key=rank, default=None)


def speaks(pod: Obj | None, protocol: str, port: int) -> str:
    """How to talk to a pod's port: `http` (netexec's /hostname), `dns`, `udp` or `tcp`.

    netexec answers `GET /hostname` on its HTTP ports and the datagram
    `hostname` on its UDP port; a CoreDNS pod answers DNS queries; anything
    else gets a bare TCP connect (a UDP port gets netexec's datagram).
    """
    proto = protocol.lower()
    if pod is not None and is_dns_pod(pod):
        return "dns" if proto == "udp" else "tcp"
    if pod is not None and proto == "tcp" and Listener("tcp", port) in pod_listeners(pod):
        return "http"
    return "udp" if proto == "udp" else "tcp"
