"""Kubernetes objects reduced to what DNS needs, and the endpoint label rules.

Watch events carry whole objects as plain dicts (`kubectl get -o json` shape);
the index keeps only these frozen records, so comparing old and new tells
whether an update changed anything DNS answers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

ServiceKind = Literal["ClusterIP", "Headless", "ExternalName"]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Port:
    """A named port as DNS matches it: name and protocol lowercase; port -1 = none declared."""

    name: str
    port: int
    protocol: str


NO_PORT = Port("", -1, "")


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    kind: ServiceKind
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class Address:
    """One endpoint address of a slice; `ready` is conditions.ready (None counts as ready)."""

    ip: str
    hostname: str
    pod_name: str
    ready: bool

    def label(self, pod_names: bool) -> str:
        """The endpoint's DNS label: hostname, else (optionally) pod name, else dashed IP.

        Mirrors CoreDNS endpointHostname; an IPv6 address ending in `::` gets a `0`
        appended so the label does not end with a dash.
        """
        if self.hostname:
            return self.hostname
        if pod_names and self.pod_name and len(self.pod_name) < 64:
            return self.pod_name
        return dashed(self.ip)


@dataclass(frozen=True)
class Slice:
    namespace: str
    name: str
    service: str
    addresses: tuple[Address, ...]
    ports: tuple[Port, ...]


def dashed(ip: str) -> str:
    """`10.244.1.5` -> `10-244-1-5`; `fd00::` -> `fd00--0` (CoreDNS endpoint label)."""
    if "." in ip:
        return ip.replace(".", "-")
    label = ip.replace(":", "-")
    return label + "0" if label.endswith("-") else label


def undashed(label: str) -> str | None:
    """The IP a pod label spells (`10-244-1-5`, `fd00--1`), or None; CoreDNS findPods rules."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def namespaced_name(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; ValueError when it has no name."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    return str(meta.get("namespace") or "default"), str(name)


def _valid_ip(text: Any) -> str | None:
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        return None


def _ports(raw: Any) -> tuple[Port, ...]:
    ports = []
    for p in raw or ():
        number = p.get("port")
        ports.append(Port(str(p.get("name") or "").lower(),
                          int(number) if number is not None else -1,
                          str(p.get("protocol") or "TCP").lower()))
    return tuple(ports) or (NO_PORT,)


def service_from(obj: dict[str, Any]) -> Service:
    """Keep what DNS needs of a v1 Service."""
    ns, name = namespaced_name(obj)
    spec = obj.get("spec") or {}
    kind: ServiceKind
    raw_ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    if spec.get("type") == "ExternalName":
        kind, ips = "ExternalName", ()
    elif raw_ips and raw_ips[0] == "None":
        kind, ips = "Headless", ()
    else:
        kind = "ClusterIP"
        ips = tuple(ip for ip in map(_valid_ip, raw_ips) if ip)
    external = str(spec.get("externalName") or "").rstrip(".")
    if kind == "ExternalName" and _valid_ip(external):
        external = ""  # CoreDNS publishes ExternalName only when it is a name
    return Service(ns, name, kind, ips, external, _ports(spec.get("ports")),
                   bool(spec.get("publishNotReadyAddresses")))


def slice_from(obj: dict[str, Any]) -> Slice:
    """Keep what DNS needs of a discovery.k8s.io/v1 EndpointSlice."""
    ns, name = namespaced_name(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    addresses = []
    for ep in obj.get("endpoints") or ():
        ready = (ep.get("conditions") or {}).get("ready")
        ref = ep.get("targetRef") or {}
        pod_name = str(ref.get("name") or "") if ref.get("kind", "Pod") == "Pod" else ""
        for raw in ep.get("addresses") or ():
            ip = _valid_ip(raw)
            if ip:
                addresses.append(Address(ip, str(ep.get("hostname") or "").lower(), pod_name,
                                         ready is None or bool(ready)))
    return Slice(ns, name, str(labels.get(SERVICE_NAME_LABEL, "")), tuple(addresses),
                 _ports(obj.get("ports")))


def pod_ips_from(obj: dict[str, Any]) -> tuple[str, ...]:
    status = obj.get("status") or {}
    raw = [p.get("ip") for p in status.get("podIPs") or ()] or [status.get("podIP")]
    return tuple(ip for ip in map(_valid_ip, filter(None, raw)) if ip)
