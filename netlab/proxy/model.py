"""Services and EndpointSlices as kube-proxy sees them.

kube-proxy never works on whole API objects: it flattens a Service into one
`ServicePort` per port (keyed by `ServicePortName`) and merges a Service's
EndpointSlices into one sorted endpoint list per port. Every mode (iptables,
IPVS, nftables) renders from these two maps, so the conversion and the rules
about which objects to ignore live here, once.

Input objects are plain dicts shaped like `kubectl get -o json`. A malformed
object raises `ManifestError` naming the field; the change trackers log it and
treat the object as absent, so one bad object never stops a sync. Only IPv4 is
handled: the lab is single-stack, as the default kubeadm cluster is.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from netlab.errors import ManifestError

log = logging.getLogger(__name__)

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone"
ANNOTATION_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"

DEFAULT_AFFINITY_TIMEOUT = 10800  # API default for sessionAffinityConfig.clientIP
PROTOCOLS = ("TCP", "UDP", "SCTP")


class NamespacedName(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ServicePortName(NamedTuple):
    """One port of one Service: the key of every per-port map.

    `str()` gives kube-proxy's spelling (`ns/name:port`, or `ns/name` for an
    unnamed port), which is what rule comments and chain hashes are made of.
    A NamedTuple: hashed and compared in C, which a sync of 10,000 services
    does hundreds of thousands of times; it sorts by namespace, name, port.
    """

    namespace: str
    name: str
    port: str
    protocol: str  # TCP, UDP or SCTP

    @property
    def service(self) -> NamespacedName:
        return NamespacedName(self.namespace, self.name)

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base


@dataclass(frozen=True, slots=True)
class ServicePort:
    """Everything the rules of one service port depend on (kube-proxy's BaseServicePortInfo).

    Equality is what the change tracker uses to decide whether a Service update
    matters: an update that leaves every ServicePort equal causes no sync.
    """

    name: ServicePortName
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    health_check_node_port: int = 0
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0 means no affinity
    external_policy_local: bool = False
    internal_policy_local: bool = False

    @property
    def protocol(self) -> str:
        return self.name.protocol

    @property
    def externally_accessible(self) -> bool:
        """Reachable other than by ClusterIP (NodePort, externalIP or LB IP)."""
        return bool(self.node_port or self.load_balancer_ips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # External traffic needs cluster endpoints even with eTP=Local, for the
        # short-circuit of pod and node originated traffic.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (
            self.external_policy_local and self.externally_accessible)


class Endpoint(NamedTuple):
    """One backend of one service port (kube-proxy's BaseEndpointInfo).

    `key` is the `IP:port` string kube-proxy sorts by, hashes into SEP chain
    names and writes into DNAT targets; it is stored because every mode needs it
    for every endpoint on every sync. A NamedTuple rather than a dataclass:
    a relist of 10,000 services builds 100,000 of these, four times faster.
    """

    ip: str
    port: int
    key: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    is_local: bool = False
    node_name: str = ""
    zone: str = ""
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()


class SliceEndpoint(NamedTuple):
    """An endpoint of a slice before it is paired with the slice's ports."""

    ip: str
    ready: bool
    serving: bool
    terminating: bool
    node_name: str
    zone: str
    zone_hints: frozenset[str]
    node_hints: frozenset[str]


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """What kube-proxy keeps of one EndpointSlice."""

    service: NamespacedName
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)
    endpoints: tuple[SliceEndpoint, ...]
    trigger_time: float | None  # the slice's last-change-trigger-time, epoch seconds


def object_key(obj: Mapping[str, Any]) -> NamespacedName:
    """namespace/name of any object; enough to process a delete."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ManifestError("missing metadata.name", field="metadata.name")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise ManifestError("must be a string", field="metadata.namespace")
    return NamespacedName(namespace, meta["name"])


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = obj.get("metadata", {}).get("labels") or {}
    if not isinstance(labels, dict):
        raise ManifestError("must be a map", field="metadata.labels")
    return labels


def ignored_by_labels(obj: Mapping[str, Any]) -> bool:
    """kube-proxy's informers select only objects without these two labels."""
    labels = _labels(obj)
    return LABEL_SERVICE_PROXY_NAME in labels or LABEL_HEADLESS in labels


def _ipv4(value: Any, where: str) -> str:
    """Canonical dotted quad; inet_pton is ~25x faster than ipaddress for 100k endpoints."""
    if not isinstance(value, str):
        raise ManifestError("must be an IP address string", field=where)
    text = value.strip()
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise ManifestError(f"{value!r} is not an IP address", field=where) from None
    raise ManifestError(f"{value} is not IPv4", field=where)


def _valid_entries(values: Any, where: str,
                   parse: Callable[[Any, str], str | None]) -> tuple[str, ...]:
    """Entries of a list that parse; bad ones are logged and skipped, as kube-proxy does.

    parse returns None to leave an entry out quietly, or raises ManifestError.
    """
    if values is None:
        return ()
    if not isinstance(values, list):
        raise ManifestError("must be a list", field=where)
    out: list[str] = []
    for i, value in enumerate(values):
        try:
            parsed = parse(value, f"{where}[{i}]")
        except ManifestError as exc:
            log.warning("ignoring %s", exc)
            continue
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def _ipv4_list(values: Any, where: str) -> tuple[str, ...]:
    return _valid_entries(values, where, _ipv4)


def _ipv4_cidr(value: Any, where: str) -> str | None:
    """An IPv4 CIDR; IPv6 ones are left out (this proxier is IPv4-only)."""
    try:
        net = ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ManifestError(f"{value!r} is not a CIDR", field=where) from None
    return str(net) if net.version == 4 else None


def _cidrs(values: Any, where: str) -> tuple[str, ...]:
    return _valid_entries(values, where, _ipv4_cidr)


def _port_number(value: Any, where: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError("must be an integer", field=where)
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ManifestError(f"{value} is out of range", field=where)
    return value


def _protocol(value: Any, where: str) -> str:
    protocol = "TCP" if value is None else value
    if protocol not in PROTOCOLS:
        raise ManifestError(f"unsupported protocol {protocol!r}", field=where)
    return protocol


def _cluster_ip(spec: Mapping[str, Any]) -> str | None:
    """The IPv4 ClusterIP, or None when the Service has none (headless, unallocated, v6)."""
    ips = spec.get("clusterIPs")
    candidates = ips if isinstance(ips, list) and ips else [spec.get("clusterIP")]
    for i, value in enumerate(candidates):
        if value in (None, "", "None"):
            return None
        try:
            return _ipv4(value, f"spec.clusterIPs[{i}]")
        except ManifestError as exc:
            if "is not IPv4" not in exc.reason:
                raise
    return None


def _load_balancer_ips(obj: Mapping[str, Any]) -> tuple[str, ...]:
    ingress = (obj.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    if not isinstance(ingress, list):
        raise ManifestError("must be a list", field="status.loadBalancer.ingress")
    ips = []
    for i, item in enumerate(ingress):
        if not isinstance(item, dict) or not item.get("ip"):
            continue  # hostname-only ingress: nothing to program
        if item.get("ipMode", "VIP") != "VIP":
            continue  # ipMode: Proxy means the LB itself proxies; kube-proxy leaves it alone
        try:
            ips.append(_ipv4(item["ip"], f"status.loadBalancer.ingress[{i}].ip"))
        except ManifestError as exc:
            log.warning("ignoring %s", exc)
    return tuple(ips)


def service_ports(obj: Mapping[str, Any]) -> dict[ServicePortName, ServicePort]:
    """kube-proxy's view of one Service: its ports, or {} when kube-proxy ignores it.

    Ignored exactly as kube-proxy does: the service-proxy-name and headless
    labels (informer selector), no ClusterIP (headless `None` or unallocated),
    and type ExternalName.
    """
    key = object_key(obj)
    if ignored_by_labels(obj):
        return {}
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError("missing spec", field="spec")
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type == "ExternalName":
        return {}
    cluster_ip = _cluster_ip(spec)
    if cluster_ip is None:
        return {}
    externally_accessible = svc_type in ("NodePort", "LoadBalancer") or (
        svc_type == "ClusterIP" and bool(spec.get("externalIPs")))
    external_local = externally_accessible and spec.get("externalTrafficPolicy") == "Local"
    internal_local = spec.get("internalTrafficPolicy") == "Local"
    health_check_port = 0
    if svc_type == "LoadBalancer" and external_local:
        health_check_port = _port_number(spec.get("healthCheckNodePort") or 0,
                                         "spec.healthCheckNodePort", allow_zero=True)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT
        if isinstance(affinity, bool) or not isinstance(affinity, int) or affinity < 1:
            raise ManifestError("must be a positive integer",
                                field="spec.sessionAffinityConfig.clientIP.timeoutSeconds")
    external_ips = _ipv4_list(spec.get("externalIPs"), "spec.externalIPs")
    lb_ips = _load_balancer_ips(obj)
    source_ranges = _cidrs(spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges")

    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        raise ManifestError("must be a list", field="spec.ports")
    result: dict[ServicePortName, ServicePort] = {}
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        try:
            if not isinstance(port, dict):
                raise ManifestError("must be a map", field=where)
            port_name = port.get("name") or ""
            if not isinstance(port_name, str):
                raise ManifestError("must be a string", field=f"{where}.name")
            spn = ServicePortName(key.namespace, key.name, port_name,
                                  _protocol(port.get("protocol"), f"{where}.protocol"))
            result[spn] = ServicePort(
                name=spn,
                cluster_ip=cluster_ip,
                port=_port_number(port.get("port"), f"{where}.port"),
                node_port=_port_number(port.get("nodePort") or 0, f"{where}.nodePort",
                                       allow_zero=True),
                external_ips=external_ips,
                load_balancer_ips=lb_ips,
                load_balancer_source_ranges=source_ranges,
                health_check_node_port=health_check_port,
                affinity_timeout=affinity,
                external_policy_local=external_local,
                internal_policy_local=internal_local,
            )
        except ManifestError as exc:
            log.warning("Service %s: ignoring port: %s", key, exc)
    return result


def _trigger_time(obj: Mapping[str, Any]) -> float | None:
    value = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_TRIGGER_TIME)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_NO_HINTS: frozenset[str] = frozenset()


def _hint_names(hints: Any, kind: str) -> frozenset[str]:
    items = hints.get(kind) if isinstance(hints, dict) else None
    if not isinstance(items, list):
        return _NO_HINTS
    return frozenset(h["name"] for h in items if isinstance(h, dict) and "name" in h)


def endpoint_slice(obj: Mapping[str, Any]) -> SliceInfo | None:
    """kube-proxy's view of one EndpointSlice, or None when kube-proxy ignores it.

    Ignored: slices without the service-name label, non-IPv4 address types, and
    the two informer-excluded labels. As in kube-proxy only the first address
    of an endpoint counts; ready/serving default to true, terminating to false.
    """
    key = object_key(obj)
    if ignored_by_labels(obj):
        return None
    service_name = _labels(obj).get(LABEL_SERVICE_NAME)
    if not service_name:
        log.warning("EndpointSlice %s: no %s label, ignored", key, LABEL_SERVICE_NAME)
        return None
    if obj.get("addressType") != "IPv4":
        return None
    ports: list[tuple[str, int, str]] = []
    raw_ports = obj.get("ports") or []
    if not isinstance(raw_ports, list):
        raise ManifestError("must be a list", field="ports")
    for i, port in enumerate(raw_ports):
        if not isinstance(port, dict) or not port.get("port"):
            log.warning("EndpointSlice %s: ignoring invalid ports[%d]", key, i)
            continue
        try:
            ports.append((str(port.get("name") or ""), _port_number(port["port"], f"ports[{i}]"),
                          _protocol(port.get("protocol"), f"ports[{i}].protocol")))
        except ManifestError as exc:
            log.warning("EndpointSlice %s: ignoring port: %s", key, exc)
    endpoints: list[SliceEndpoint] = []
    raw_endpoints = obj.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        raise ManifestError("must be a list", field="endpoints")
    for i, ep in enumerate(raw_endpoints):
        where = f"endpoints[{i}]"
        if not isinstance(ep, dict) or not ep.get("addresses"):
            log.warning("EndpointSlice %s: ignoring %s without addresses", key, where)
            continue
        try:
            ip = _ipv4(ep["addresses"][0], f"{where}.addresses[0]")
        except (ManifestError, TypeError, KeyError) as exc:
            log.warning("EndpointSlice %s: ignoring endpoint: %s", key, exc)
            continue
        conditions = ep.get("conditions") or {}
        hints = ep.get("hints")
        endpoints.append(SliceEndpoint(
            ip,
            conditions.get("ready") is not False,
            conditions.get("serving") is not False,
            conditions.get("terminating") is True,
            ep.get("nodeName") or "",
            ep.get("zone") or "",
            _hint_names(hints, "forZones") if hints else _NO_HINTS,
            _hint_names(hints, "forNodes") if hints else _NO_HINTS,
        ))
    return SliceInfo(NamespacedName(key.namespace, str(service_name)), tuple(sorted(ports)),
                     tuple(endpoints), _trigger_time(obj))


def merge_slices(slices: list[SliceInfo],
                 node_name: str) -> dict[ServicePortName, tuple[Endpoint, ...]]:
    """One Service's endpoints per port, merged over its slices and sorted by `IP:port`.

    Duplicates across slices collapse to one endpoint, preferring a local copy,
    as kube-proxy's EndpointSliceCache does.
    """
    by_port: dict[ServicePortName, dict[str, Endpoint]] = {}
    for info in slices:
        for port_name, port, protocol in info.ports:
            spn = ServicePortName(info.service.namespace, info.service.name, port_name, protocol)
            merged = by_port.setdefault(spn, {})
            for ep in info.endpoints:
                key = f"{ep.ip}:{port}"
                is_local = bool(ep.node_name) and ep.node_name == node_name
                if key in merged and not is_local:
                    continue
                merged[key] = Endpoint(ep.ip, port, key, ep.ready, ep.serving, ep.terminating,
                                       is_local, ep.node_name, ep.zone, ep.zone_hints,
                                       ep.node_hints)
    return {spn: tuple(merged[k] for k in sorted(merged))
            for spn, merged in by_port.items() if merged}
