"""What `knetlab trace SRC DST` accepts, resolved against the lab's view.

SRC: `[ns/]pod`, a node name or `ext`.
DST: `[ns/]pod`, `[ns/]service`, a ClusterIP (or any IP) with an optional
`:port`, `NODE:NODEPORT`, a node name or `ext`, or a cluster DNS name
(`web.default.svc.cluster.local`, `web.default`, `10-244-1-5.default.pod...`),
answered from the store as the cluster DNS server would answer it.
`pod:NAME` and `svc:NAME` say which one is meant when a pod and a Service share
a name (a Service wins otherwise).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from netlab.errors import NetlabError
from netlab.trace.labview import LabView, Machine, PodView

PROTOCOLS = ("tcp", "udp", "icmp")


class TargetError(NetlabError):
    """SRC or DST names nothing in the lab."""


@dataclass(frozen=True)
class Source:
    kind: str  # pod | node | ext
    name: str
    netns: str
    pod: PodView | None = None
    machine: Machine | None = None

    def describe(self, ip: str) -> str:
        return f"{self.kind} {self.name} ({ip})"


@dataclass(frozen=True)
class Destination:
    kind: str  # pod | service | nodeport | node | ip
    ip: str
    port: int
    proto: str
    description: str
    service: str | None = None  # ns/name when a Service is the target
    dns_name: str | None = None  # the name asked, when DST was a DNS name


def resolve_source(view: LabView, text: str, namespace: str = "default") -> Source:
    machine = view.machines.get(text)
    if machine is not None:
        return Source("node" if machine.is_node else "ext", text, machine.netns,
                      machine=machine)
    ns, _, name = text.rpartition("/")
    pod = view.pods.get(f"{ns or namespace}/{name}")
    if pod is None:
        raise TargetError(f"no pod {ns or namespace}/{name} and no node {text!r} (nodes: "
                          f"{', '.join(view.machines)}; pods: {_some(view.pods)})")
    return Source("pod", pod.key, pod.netns, pod=pod)


def resolve_destination(view: LabView, text: str, namespace: str = "default",
                        port: str | int | None = None,
                        proto: str | None = None) -> Destination:
    """Resolve DST; `port` and `proto` override what the target implies."""
    if proto is not None and proto not in PROTOCOLS:
        raise TargetError(f"protocol {proto!r}: choose from {', '.join(PROTOCOLS)}")
    forced = None
    if text.startswith(("pod:", "svc:")):
        forced, text = text.split(":", 1)
    host, sep, after = text.rpartition(":")
    if sep and after.isdigit() and host and forced is None:
        machine = view.machines.get(host)
        if machine is not None and machine.is_node:
            return _nodeport(view, machine, int(after), proto)
        if _is_ip(host):
            return _ip(view, host, int(after), proto, namespace)
    if _is_ip(text):
        return _ip(view, text, port, proto, namespace)
    machine = view.machines.get(text)
    if machine is not None and forced is None:
        return _plain(f"{'node' if machine.is_node else 'ext'} {text}", "node",
                      machine.address, port, proto)
    ns, _, name = text.rpartition("/")
    ns = ns or namespace
    svc = view.service(ns, name) if forced != "pod" else None
    if svc is not None:
        return _service(view, svc, port, proto)
    pod = view.pods.get(f"{ns}/{name}") if forced != "svc" else None
    if pod is not None:
        return _pod(pod, port, proto)
    if "." in text and "/" not in text:
        return _dns(view, text, namespace, port, proto)
    raise TargetError(f"no Service or pod {ns}/{name}, no node {text!r}, and not an IP "
                      f"(services: {_some({_key(s): s for s in view.services})})")


def _key(svc: dict[str, Any]) -> str:
    return f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"


def _some(items: dict[str, Any]) -> str:
    names = sorted(items)
    return ", ".join(names[:8]) + (" ..." if len(names) > 8 else "") if names else "none"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _default_proto(proto: str | None, fallback: str = "tcp") -> str:
    return proto or fallback


def _plain(description: str, kind: str, ip: str, port: str | int | None,
           proto: str | None) -> Destination:
    proto = _default_proto(proto, "icmp" if port is None else "tcp")
    if proto != "icmp" and port is None:
        raise TargetError(f"{description}: say which port (--port), or use --proto icmp")
    number = 0 if proto == "icmp" else _number(port)
    return Destination(kind, ip, number, proto, f"{description} ({ip})")


def _number(port: str | int | None) -> int:
    try:
        return int(port)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TargetError(f"port {port!r} is not a number here") from None


def _pod(pod: PodView, port: str | int | None, proto: str | None) -> Destination:
    if port is None and proto != "icmp":
        wanted = [li for li in sorted(pod.listeners, key=lambda x: (x.proto != "tcp", x.port))
                  if proto is None or li.proto == proto]
        if not wanted:
            raise TargetError(f"pod {pod.key} listens on nothing known: say --port")
        proto, port = wanted[0].proto, wanted[0].port
    proto = _default_proto(proto)
    number = 0 if proto == "icmp" else _number(port)
    where = "" if proto == "icmp" else f":{number}"
    return Destination("pod", pod.ip, number, proto,
                       f"pod {pod.key} ({pod.ip}{where}/{proto.upper()})")


def _service_port(svc: dict[str, Any], port: str | int | None,
                  proto: str | None) -> dict[str, Any]:
    ports = (svc.get("spec") or {}).get("ports") or []
    for p in ports:
        if port is None and (proto is None or p.get("protocol", "TCP").lower() == proto):
            return p
        if port is not None and str(port) in (str(p.get("port")), p.get("name")) and (
                proto is None or p.get("protocol", "TCP").lower() == proto):
            return p
    listed = ", ".join(f"{p.get('name') or '-'} {p.get('port')}/{p.get('protocol', 'TCP')}"
                       for p in ports) or "none"
    raise TargetError(f"Service {_key(svc)} has no port {port or ''}"
                      f"{'/' + proto if proto else ''} (ports: {listed})")


def _service(view: LabView, svc: dict[str, Any], port: str | int | None,
             proto: str | None) -> Destination:
    del view
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise TargetError(f"Service {_key(svc)} has no ClusterIP (headless): trace a pod")
    if proto == "icmp":
        return Destination("service", ip, 0, "icmp", f"svc {_key(svc)} ({ip})", _key(svc))
    p = _service_port(svc, port, proto)
    proto = p.get("protocol", "TCP").lower()
    name = f":{p['name']}" if p.get("name") else ""
    return Destination("service", ip, int(p["port"]), proto,
                       f"svc {_key(svc)}{name} {p['port']}/{proto.upper()} ({ip})", _key(svc))


def _ip(view: LabView, ip: str, port: str | int | None, proto: str | None,
        namespace: str) -> Destination:
    del namespace
    svc = view.service_by_ip(ip)
    if svc is not None:
        return _service(view, svc, port, proto)
    pod = view.pod_by_ip(ip)
    if pod is not None:
        return _pod(pod, port, proto)
    machine = view.machine_by_ip(ip)
    if machine is not None:
        return _plain(f"{'node' if machine.is_node else 'ext'} {machine.name}", "node", ip,
                      port, proto)
    return _plain(ip, "ip", ip, port, proto)


def _nodeport(view: LabView, node: Machine, number: int, proto: str | None) -> Destination:
    for svc in view.services:
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("nodePort") == number and (
                    proto is None or p.get("protocol", "TCP").lower() == proto):
                proto = p.get("protocol", "TCP").lower()
                return Destination("nodeport", node.address, number, proto,
                                   f"nodeport {node.name}:{number} -> svc {_key(svc)}:"
                                   f"{p.get('name') or p['port']} ({node.address})",
                                   _key(svc))
    proto = _default_proto(proto)
    return Destination("nodeport", node.address, number, proto,
                       f"{node.name}:{number} (no Service has this NodePort) "
                       f"({node.address})")


def _dns(view: LabView, name: str, namespace: str, port: str | int | None,
         proto: str | None) -> Destination:
    """What the cluster DNS would answer for a Service or pod name (search path applied)."""
    domain = view.config.cluster_domain
    fqdn = name.rstrip(".")
    labels = fqdn.split(".")
    if fqdn.endswith(f".pod.{domain}") and len(labels) >= 3:
        ip = labels[0].replace("-", ".")
        pod = view.pod_by_ip(ip)
        if pod is None or pod.namespace != labels[1]:
            raise TargetError(f"{name}: no pod {ip} in namespace {labels[1]} (NXDOMAIN)")
        return _named(_pod(pod, port, proto), name)
    trimmed = fqdn.removesuffix(f".{domain}").removesuffix(".svc")
    parts = trimmed.split(".")
    if len(parts) == 1:
        parts.append(namespace)
    if len(parts) != 2:
        raise TargetError(f"{name}: not a Service or pod name of {domain}; the trace "
                          "resolves cluster names only")
    svc = view.service(parts[1], parts[0])
    if svc is None:
        raise TargetError(f"{name}: no Service {parts[1]}/{parts[0]} (NXDOMAIN)")
    return _named(_service(view, svc, port, proto), name)


def _named(dst: Destination, name: str) -> Destination:
    return Destination(dst.kind, dst.ip, dst.port, dst.proto,
                       f"{name} -> {dst.description}", dst.service, name)
