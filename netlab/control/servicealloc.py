"""ClusterIPs and NodePorts: what kube-apiserver allocates when a Service is written.

State lives in the store beside the objects, as kube-apiserver keeps it in etcd:
`/registry/ranges/serviceips` and `/registry/ranges/servicenodeports`, each a map
from value to holder (`{"owner": "ns/name", "at": epoch seconds}`) written with
compare-and-swap, so two concurrent `apply`s never get the same address.

Choice of values (stable, so a lab and its docs show the same numbers every run):
- 10.96.0.1 (the range's first address) belongs to default/kubernetes and the
  configured DNS address (10.96.0.10) to kube-system/kube-dns; nobody else gets them.
- A requested clusterIP or nodePort is honoured if it lies in the range and is free;
  otherwise the API server's error is raised (ManifestError naming the field).
- Otherwise the value is derived from a hash of the Service's name (and port) and
  placed in the upper part of the range, probing upward past taken values; the
  lower part is left for requested values. kube-apiserver also splits the range
  this way (same band sizes), but picks at random within the upper part.
- Ports of one Service with the same port number share a nodePort (TCP and UDP 53).
- Updates keep what was allocated (`apply` of a manifest without clusterIP keeps
  it); changing an allocated clusterIP is refused as immutable; deletion releases.
`repair` reconciles the maps with the Services that exist, like the API server's
repair loops: it restores missing entries and frees leaked ones after a grace time.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.control.meta import Obj, ns_name
from netlab.errors import ConflictError, ManifestError
from netlab.store.base import Put, Store
from netlab.store.objects import AlreadyExistsError, Objects

log = logging.getLogger(__name__)

IPS_KEY = "/registry/ranges/serviceips"
NODE_PORTS_KEY = "/registry/ranges/servicenodeports"
KUBERNETES_OWNER = "default/kubernetes"
DNS_OWNER = "kube-system/kube-dns"
APISERVER_PORT = 6443
LEAK_GRACE_SECONDS = 60.0
_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_ATTEMPTS = 20

Table = dict[str, dict[str, Any]]  # value -> {"owner": "ns/name", "at": epoch seconds}


@dataclass
class Tables:
    ips: Table
    ports: Table


def owner_of(service: Obj) -> str:
    return "/".join(ns_name(service))


def _static_band(size: int, step: int, low: int, high: int) -> int:
    """How many values at the bottom kube-apiserver keeps for requested ones."""
    if size <= low:
        return 0
    return min(max(size // step, low), high)


def _probe(seed: str, first: int, last: int, band: int, free: Any) -> int | None:
    """A stable pseudo-random free value in [first, last], upper band first."""
    upper = first + band
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    for lo, hi in ((upper, last), (first, upper - 1)):
        if hi < lo:
            continue
        span = hi - lo + 1
        start = digest % span
        for step in range(span):
            value = lo + (start + step) % span
            if free(value):
                return value
    return None


def reserved_ips(config: ClusterConfig) -> dict[str, str]:
    network = ipaddress.ip_network(config.service_cidr)
    return {str(network[1]): KUBERNETES_OWNER, config.dns_cluster_ip: DNS_OWNER}


def _in_range(ip: str, config: ClusterConfig) -> bool:
    network = ipaddress.ip_network(config.service_cidr)
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address in network and address not in (network.network_address,
                                                  network.broadcast_address)


def _invalid_ip(ip: str, why: str) -> ManifestError:
    return ManifestError(f'Invalid value: "{ip}": {why}', field="spec.clusterIP")


def _cluster_ip(spec: Obj, old_spec: Obj, owner: str, table: Table,
                config: ClusterConfig) -> str | None:
    """The clusterIP the Service ends up with (None: headless or ExternalName)."""
    if (spec.get("type") or "ClusterIP") == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        return None
    requested = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    old = old_spec.get("clusterIP") if old_spec.get("type") != "ExternalName" else None
    if old and requested and requested != old:
        raise _invalid_ip(requested, "field is immutable")
    wanted = requested or old
    if wanted == "None":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return None
    reserved = reserved_ips(config)
    if wanted:
        if not _in_range(wanted, config):
            raise _invalid_ip(wanted, "provided IP is not in the valid range. The range of "
                              f"valid IPs is {config.service_cidr}")
        holder = table.get(wanted, {}).get("owner") or reserved.get(wanted, owner)
        if holder != owner:
            raise _invalid_ip(wanted, "provided IP is already allocated")
        ip = wanted
    else:
        ip = _dynamic_ip(owner, table, config, reserved)
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    return ip


def _dynamic_ip(owner: str, table: Table, config: ClusterConfig,
                reserved: dict[str, str]) -> str:
    for ip, holder in reserved.items():
        if holder == owner and table.get(ip, {}).get("owner", owner) == owner \
                and _in_range(ip, config):
            return ip
    network = ipaddress.ip_network(config.service_cidr)
    base = int(network.network_address)
    usable = network.num_addresses - 2
    band = _static_band(network.num_addresses, 16, 16, 256)

    def free(offset: int) -> bool:
        ip = str(ipaddress.ip_address(base + offset))
        return ip not in table and ip not in reserved

    offset = _probe(owner, 1, usable, band, free)
    if offset is None:
        raise ManifestError("Internal error occurred: failed to allocate a serviceIP: "
                            "range is full", field="spec.clusterIP")
    return str(ipaddress.ip_address(base + offset))


def _node_ports(spec: Obj, old_spec: Obj, owner: str, table: Table,
                config: ClusterConfig) -> set[int]:
    """Fill spec.ports[*].nodePort for NodePort/LoadBalancer Services; the values used."""
    ports = spec.get("ports") or []
    if (spec.get("type") or "ClusterIP") not in _NODE_PORT_TYPES:
        for port in ports:
            port.pop("nodePort", None)
        return set()
    low, high = config.node_port_range
    by_number: dict[int, int] = {}  # service port -> nodePort (shared across protocols)
    for i, port in enumerate(ports):
        value = port.get("nodePort")
        if not value:
            continue
        field = f"spec.ports[{i}].nodePort"
        if not low <= value <= high:
            raise ManifestError(f"Invalid value: {value}: provided port is not in the valid "
                                f"range. The range of valid ports is {low}-{high}", field=field)
        if table.get(str(value), {}).get("owner", owner) != owner:
            raise ManifestError(f"Invalid value: {value}: provided port is already allocated",
                                field=field)
        by_number.setdefault(port["port"], value)
    old_ports = old_spec.get("ports") or [] if old_spec.get("type") in _NODE_PORT_TYPES else []
    band = _static_band(high - low + 1, 32, 16, 128)
    for i, port in enumerate(ports):
        if port.get("nodePort"):
            continue
        used = set(by_number.values())
        value = by_number.get(port["port"]) or _previous(port, old_ports, owner, table, used)
        if value is None:
            seed = f"{owner}:{port['port']}/{port.get('protocol', 'TCP')}"
            value = _probe(seed, low, high, band,
                           lambda v, used=used: str(v) not in table and v not in used)
        if value is None:
            raise ManifestError("Internal error occurred: failed to allocate a nodePort: "
                                "range is full", field=f"spec.ports[{i}].nodePort")
        port["nodePort"] = value
        by_number.setdefault(port["port"], value)
    return set(by_number.values())


def _previous(port: Obj, old_ports: list[Obj], owner: str, table: Table,
              used: set[int]) -> int | None:
    """The nodePort this port had before the update, if it is still ours to keep."""
    for old in old_ports:
        same_name = port.get("name") and old.get("name") == port.get("name")
        same_port = (old.get("port"), old.get("protocol", "TCP")) == (
            port["port"], port.get("protocol", "TCP"))
        value = old.get("nodePort")
        if (same_name or same_port) and value and value not in used \
                and table.get(str(value), {}).get("owner", owner) == owner:
            return value
    return None


def _hold(table: Table, owner: str, values: Iterable[str], now: float) -> None:
    """Make owner hold exactly these values (keeping the time of ones already held)."""
    keep = set(values)
    for value in [v for v, h in table.items() if h.get("owner") == owner and v not in keep]:
        del table[value]
    for value in keep:
        table[value] = {"owner": owner, "at": table.get(value, {}).get("at", now)}


def allocate(service: Obj, previous: Obj | None, tables: Tables, config: ClusterConfig,
             now: float) -> Obj:
    """The Service with its clusterIP and nodePorts; updates tables to match (pure)."""
    service = copy.deepcopy(service)
    owner = owner_of(service)
    spec = service.setdefault("spec", {})
    old_spec = (previous or {}).get("spec") or {}
    ip = _cluster_ip(spec, old_spec, owner, tables.ips, config)
    node_ports = _node_ports(spec, old_spec, owner, tables.ports, config)
    _hold(tables.ips, owner, [ip] if ip else [], now)
    _hold(tables.ports, owner, map(str, node_ports), now)
    return service


def allocated_values(service: Obj) -> tuple[set[str], set[str]]:
    """(clusterIPs, nodePorts as strings) a stored Service holds.

    Tolerates shapes validation would refuse (an object written straight into the
    store): what cannot be read holds nothing, rather than failing the repair of
    every other Service.
    """
    spec = service.get("spec")
    if not isinstance(spec, dict):
        return set(), set()
    ip = spec.get("clusterIP")
    ips = {ip} if isinstance(ip, str) and ip and ip != "None" else set()
    ports = spec["ports"] if isinstance(spec.get("ports"), list) else []
    node_ports = {str(p["nodePort"]) for p in ports if isinstance(p, dict) and p.get("nodePort")}
    return ips, node_ports


# -- the store side -------------------------------------------------------------------


@dataclass
class _Stored:
    """The two maps as read, with what is needed to write them back (CAS)."""

    tables: Tables
    revisions: tuple[int, int]
    ranges: tuple[str, str]


def _read(store: Store, config: ClusterConfig | None) -> _Stored:
    ips, ports = store.get(IPS_KEY), store.get(NODE_PORTS_KEY)
    ips_doc, ports_doc = (ips.value if ips else {}), (ports.value if ports else {})
    if config is not None:
        low, high = config.node_port_range
        ranges = (config.service_cidr, f"{low}-{high}")
    else:
        ranges = (ips_doc.get("range", ""), ports_doc.get("range", ""))
    return _Stored(Tables(dict(ips_doc.get("allocated") or {}),
                          dict(ports_doc.get("allocated") or {})),
                   (ips.mod_revision if ips else 0, ports.mod_revision if ports else 0), ranges)


def _range_doc(value_range: str, table: Table) -> Obj:
    return {"apiVersion": "v1", "kind": "RangeAllocation", "range": value_range,
            "allocated": dict(sorted(table.items()))}


def _update_tables(store: Store, config: ClusterConfig | None, change: Any) -> Any:
    """Read the maps, let change(tables) edit them, write back the changed ones with CAS;
    retry when another writer got there first."""
    for _ in range(_ATTEMPTS):
        stored = _read(store, config)
        after = copy.deepcopy(stored.tables)
        result = change(after)
        ops = [Put(key, _range_doc(value_range, new), revision)
               for key, old, new, revision, value_range in (
                   (IPS_KEY, stored.tables.ips, after.ips, stored.revisions[0],
                    stored.ranges[0]),
                   (NODE_PORTS_KEY, stored.tables.ports, after.ports, stored.revisions[1],
                    stored.ranges[1]))
               if new != old]
        try:
            if ops:
                store.commit(ops)
        except ConflictError:
            continue
        return result
    raise ConflictError("service allocations: too many concurrent writers")


def admit_service(objects: Objects, service: Obj, config: ClusterConfig, *,
                  previous: Obj | None = None) -> Obj:
    """Allocate (or keep) the Service's clusterIP and nodePorts; returns the Service to store.

    previous: the stored Service this one replaces (looked up when not given). Raises
    ManifestError (with the field) for a requested value that is out of range or taken,
    or a changed clusterIP. The allocation is persisted before returning; if the caller
    then fails to store the Service, `release_service` (or, later, `repair`) frees it.
    """
    if previous is None:
        previous = objects.get("Service", *ns_name(service))
    return _update_tables(objects.store, config,
                          lambda tables: allocate(service, previous, tables, config, time.time()))


def release_service(objects: Objects, service: Obj) -> None:
    """Free what a deleted Service held (only values still held in its name)."""
    owner = owner_of(service)
    ips, ports = allocated_values(service)

    def change(tables: Tables) -> None:
        for table, values in ((tables.ips, ips), (tables.ports, ports)):
            for value in values:
                if table.get(value, {}).get("owner") == owner:
                    del table[value]

    _update_tables(objects.store, None, change)


def repair(objects: Objects, config: ClusterConfig, now: float | None = None) -> None:
    """Make the maps agree with the Services that exist (kube-apiserver's repair loops).

    Values a Service uses but the map lacks are added back; values held for a Service
    that does not use them are freed once older than LEAK_GRACE_SECONDS, which covers
    an `apply` between its allocation and its write.
    """
    services, _ = objects.list("Service")
    now = time.time() if now is None else now
    in_use: dict[str, dict[str, str]] = {"ips": {}, "ports": {}}
    for service in services:
        ips, ports = allocated_values(service)
        in_use["ips"].update(dict.fromkeys(ips, owner_of(service)))
        in_use["ports"].update(dict.fromkeys(ports, owner_of(service)))

    def change(tables: Tables) -> None:
        for table, used in ((tables.ips, in_use["ips"]), (tables.ports, in_use["ports"])):
            for value, owner in used.items():
                holder = table.get(value)
                if holder is None:
                    log.warning("allocation %s for %s was missing; restored", value, owner)
                    table[value] = {"owner": owner, "at": now}
                elif holder.get("owner") != owner:
                    log.error("%s is used by %s but allocated to %s", value, owner,
                              holder.get("owner"))
            for value, holder in list(table.items()):
                if used.get(value) != holder.get("owner") and \
                        now - holder.get("at", 0) > LEAK_GRACE_SECONDS:
                    log.info("released leaked allocation %s (%s)", value, holder.get("owner"))
                    del table[value]

    _update_tables(objects.store, config, change)


def kubernetes_service() -> Obj:
    """default/kubernetes as kube-apiserver creates it: 443 -> the API server's 6443."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": APISERVER_PORT}],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {}}}


def ensure_default_services(objects: Objects, config: ClusterConfig) -> None:
    """Create default/kubernetes (10.96.0.1) if missing; its endpoints follow the nodes."""
    if objects.get("Service", "default", "kubernetes") is not None:
        return
    try:
        objects.create(admit_service(objects, kubernetes_service(), config))
        log.info("created Service default/kubernetes")
    except AlreadyExistsError:
        pass
