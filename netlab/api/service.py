"""Service: the object the proxy, the EndpointSlice controller and DNS all read.

Validation is where type-dependent rules live (nodePort only for NodePort and
LoadBalancer, headless only for ClusterIP, externalName only for ExternalName),
so those consumers can trust what they read. Allocation (ClusterIP, nodePort
within the lab's range) is the control plane's job, not the validator's: an
absent clusterIP or nodePort means "allocate one".
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netlab.api import names
from netlab.api.podspec import PROTOCOLS, check_port_ref
from netlab.api.selectors import check_labels
from netlab.api.validation import Checker, is_int
from netlab.api.yamlsrc import FieldPath

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
SESSION_AFFINITIES = ("None", "ClientIP")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IP_FAMILIES = ("IPv4", "IPv6")
CLIENT_IP_TIMEOUT_DEFAULT = 10800
CLIENT_IP_TIMEOUT_MAX = 86400

SERVICE_NAME = names.dns1035_label

_SPEC_KNOWN = ("ports", "selector", "clusterIP", "clusterIPs", "type", "externalIPs",
               "sessionAffinity", "sessionAffinityConfig", "externalName",
               "externalTrafficPolicy", "internalTrafficPolicy", "publishNotReadyAddresses",
               "ipFamilies", "ipFamilyPolicy")
_SPEC_IGNORED = ("loadBalancerIP", "loadBalancerSourceRanges", "healthCheckNodePort",
                 "allocateLoadBalancerNodePorts", "loadBalancerClass", "trafficDistribution")
_PORT_KNOWN = ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_IPV4_ONLY = "netlab labs are single-stack IPv4"


def check_service(ck: Checker, obj: dict) -> None:
    """Validate and default a Service in place (spec, and an empty status)."""
    if obj.get("status") is not None:
        ck.note(("status",), "ignored (status is written by netlab)")
    obj["status"] = {"loadBalancer": {}}
    path = ("spec",)
    spec = ck.mapping(obj, "spec", ())
    if spec is None:
        if obj.get("spec") is not None:
            return
        spec = obj["spec"] = {}
    ck.fields(spec, path, _SPEC_KNOWN, _SPEC_IGNORED)
    kind = ck.choice(spec, "type", path, SERVICE_TYPES, default="ClusterIP")
    if kind == "LoadBalancer":
        ck.note((*path, "type"), "no load balancer is provisioned; the Service works as NodePort")
    headless = _check_cluster_ip(ck, spec, kind)
    _check_ports(ck, spec, kind, headless)
    if check_labels(ck, spec, "selector", path) == {}:
        del spec["selector"]
    _check_external_name(ck, spec, kind)
    external_ips = ck.string_list(spec, "externalIPs", path) or []
    for i, address in enumerate(external_ips):
        if not _is_ip(address):
            ck.invalid((*path, "externalIPs", i), address,
                       "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    _check_affinity(ck, spec)
    _check_traffic_policies(ck, spec, kind, bool(external_ips))
    ck.boolean(spec, "publishNotReadyAddresses", path)
    _check_ip_families(ck, spec, kind)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return "%" not in value


def _check_cluster_ip(ck: Checker, spec: dict, kind: str | None) -> bool:
    """clusterIP: absent or "" (allocate), "None" (headless) or an address; True if headless."""
    path = ("spec",)
    cluster_ip = ck.string(spec, "clusterIP", path)
    cluster_ips = ck.string_list(spec, "clusterIPs", path)
    if cluster_ips:
        if len(cluster_ips) > 1:
            ck.invalid((*path, "clusterIPs"), cluster_ips, _IPV4_ONLY)
        elif cluster_ip and cluster_ips[0] != cluster_ip:
            ck.invalid((*path, "clusterIPs", 0), cluster_ips[0], "must match `clusterIP`")
        cluster_ip = cluster_ip or cluster_ips[0]
    if cluster_ip == "":
        spec.pop("clusterIP", None)
        cluster_ip = None
    if cluster_ip is None:
        return False
    if kind == "ExternalName":
        ck.forbidden((*path, "clusterIP"), "may not be set for ExternalName services")
        return False
    if cluster_ip == "None":
        if kind in _NODE_PORT_TYPES:
            ck.invalid((*path, "clusterIP"), cluster_ip,
                       f"may not be set to 'None' for {kind} services")
        spec["clusterIP"] = "None"
        return True
    if not _is_ip(cluster_ip):
        ck.invalid((*path, "clusterIP"), cluster_ip, "must be empty, 'None', or a valid IP address")
    else:
        spec["clusterIP"] = cluster_ip
    return False


def _check_ports(ck: Checker, spec: dict, kind: str | None, headless: bool) -> None:
    path = ("spec",)
    ports = ck.sequence(spec, "ports", path)
    if not ports:
        if kind != "ExternalName" and not headless and spec.get("ports") in (None, []):
            ck.required((*path, "ports"))
        return
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    seen_node_ports: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        here = (*path, "ports", i)
        if not isinstance(port, dict):
            ck.invalid(here, port, "must be a mapping with port (and name, targetPort, ...)")
            continue
        ck.fields(port, here, _PORT_KNOWN)
        _check_port_name(ck, port, here, len(ports) > 1, seen_names)
        protocol = ck.choice(port, "protocol", here, PROTOCOLS, default="TCP")
        ck.string(port, "appProtocol", here)
        number = port.get("port")
        if number is None:
            ck.required((*here, "port"))
        elif ck.port_number((*here, "port"), number) and protocol:
            if (number, protocol) in seen_ports:
                ck.duplicate(here, f"{number}/{protocol}")
            seen_ports.add((number, protocol))
            if port.get("targetPort") is None:
                port["targetPort"] = number
        check_port_ref(ck, port, "targetPort", here, required=False)
        _check_node_port(ck, port, here, kind, protocol, seen_node_ports)


def _check_port_name(ck: Checker, port: dict, path: FieldPath, several: bool,
                     seen: set[str]) -> None:
    name = ck.string(port, "name", path)
    if not name:
        if several and port.get("name") in (None, ""):
            ck.required((*path, "name"))
        return
    if ck.names((*path, "name"), name, names.port_name(name)):
        if name in seen:
            ck.duplicate((*path, "name"), name)
        seen.add(name)


def _check_node_port(ck: Checker, port: dict, path: FieldPath, kind: str | None,
                     protocol: str | None, seen: set[tuple[int, str]]) -> None:
    value: Any = port.get("nodePort")
    if value is None or value == 0 and is_int(value):
        port.pop("nodePort", None)
        return
    if kind not in _NODE_PORT_TYPES:
        ck.forbidden((*path, "nodePort"), f"may not be used when `type` is '{kind}'")
    elif ck.port_number((*path, "nodePort"), value) and protocol:
        if (value, protocol) in seen:
            ck.duplicate((*path, "nodePort"), value)
        seen.add((value, protocol))


def _check_external_name(ck: Checker, spec: dict, kind: str | None) -> None:
    path = ("spec",)
    if kind != "ExternalName":
        ck.string(spec, "externalName", path)
        return
    name = ck.string(spec, "externalName", path, required=True)
    if name:
        ck.names((*path, "externalName"), name, names.dns1123_subdomain(name.removesuffix(".")))


def _check_affinity(ck: Checker, spec: dict) -> None:
    path = ("spec",)
    affinity = ck.choice(spec, "sessionAffinity", path, SESSION_AFFINITIES, default="None")
    config = ck.mapping(spec, "sessionAffinityConfig", path)
    cpath = (*path, "sessionAffinityConfig")
    if affinity == "None":
        if config is not None:
            ck.invalid(cpath, config, "must not be set when session affinity is None")
        return
    if affinity is None:
        return
    if config is None:
        if spec.get("sessionAffinityConfig") is not None:
            return
        config = spec["sessionAffinityConfig"] = {}
    ck.fields(config, cpath, ("clientIP",))
    client_ip = ck.mapping(config, "clientIP", cpath)
    if client_ip is None:
        if config.get("clientIP") is not None:
            return
        client_ip = config["clientIP"] = {}
    ipath = (*cpath, "clientIP")
    ck.fields(client_ip, ipath, ("timeoutSeconds",))
    timeout = ck.integer(client_ip, "timeoutSeconds", ipath)
    if timeout is None:
        if client_ip.get("timeoutSeconds") is None:
            client_ip["timeoutSeconds"] = CLIENT_IP_TIMEOUT_DEFAULT
    elif not 0 < timeout <= CLIENT_IP_TIMEOUT_MAX:
        ck.invalid((*ipath, "timeoutSeconds"), timeout,
                   f"must be greater than 0 and less than {CLIENT_IP_TIMEOUT_MAX}")


def _check_traffic_policies(ck: Checker, spec: dict, kind: str | None,
                            has_external_ips: bool) -> None:
    """externalTrafficPolicy exists only where traffic comes from outside (NodePort, LB,
    external IPs); internalTrafficPolicy everywhere but ExternalName."""
    path = ("spec",)
    if kind in _NODE_PORT_TYPES or has_external_ips:
        ck.choice(spec, "externalTrafficPolicy", path, TRAFFIC_POLICIES, default="Cluster")
    elif spec.get("externalTrafficPolicy") is not None:
        ck.invalid((*path, "externalTrafficPolicy"), spec["externalTrafficPolicy"],
                   "may only be set for externally-accessible services")
    default = None if kind == "ExternalName" else "Cluster"
    ck.choice(spec, "internalTrafficPolicy", path, TRAFFIC_POLICIES, default=default)


def _check_ip_families(ck: Checker, spec: dict, kind: str | None) -> None:
    path = ("spec",)
    default_policy = None if kind == "ExternalName" else "SingleStack"
    policy = ck.choice(spec, "ipFamilyPolicy", path, IP_FAMILY_POLICIES, default=default_policy)
    if policy == "RequireDualStack":
        ck.invalid((*path, "ipFamilyPolicy"), policy, _IPV4_ONLY)
    families = ck.string_list(spec, "ipFamilies", path)
    if families is None:
        if spec.get("ipFamilies") is None and kind != "ExternalName":
            spec["ipFamilies"] = ["IPv4"]
        return
    for i, family in enumerate(families):
        if family not in IP_FAMILIES:
            ck.unsupported((*path, "ipFamilies", i), family, IP_FAMILIES)
        elif family != "IPv4":
            ck.invalid((*path, "ipFamilies", i), family, _IPV4_ONLY)
