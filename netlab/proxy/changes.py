"""Change tracking for Services and EndpointSlices (kube-proxy's change trackers).

Events arrive one object at a time; a sync wants the whole picture plus what
moved since the previous sync, so that a partial sync rewrites only the
changed services' chains. `ChangeTracker.update()` keeps, per Service, the
state last handed out and the state now pending; a change that is undone
before the next sync (or an update that alters nothing kube-proxy uses)
leaves nothing pending. `snapshot()` hands out the current maps and the set of
services that really changed, and makes that the new baseline.

Not thread-safe on its own: the proxier serialises calls under its lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from netlab.errors import ManifestError
from netlab.proxy.model import (
    Endpoint,
    NamespacedName,
    ServicePort,
    ServicePortName,
    SliceInfo,
    endpoint_slice,
    merge_slices,
    object_key,
    service_ports,
)

log = logging.getLogger(__name__)

DELETE_EVENTS = frozenset({"DELETED", "DELETE"})
UPSERT_EVENTS = frozenset({"ADDED", "MODIFIED", "PUT", "SYNC"})

# What converting an object may raise: ManifestError for an invalid value, the
# others for a wrong shape (a list where a map belongs, a null, a NUL in an address).
MALFORMED = (ManifestError, AttributeError, KeyError, TypeError, ValueError)

PortMap = dict[ServicePortName, ServicePort]
EndpointMap = dict[ServicePortName, tuple[Endpoint, ...]]


@dataclass(frozen=True)
class Snapshot:
    """The state one sync renders, and what changed since the sync before it."""

    services: Mapping[ServicePortName, ServicePort]
    endpoints: Mapping[ServicePortName, tuple[Endpoint, ...]]
    changed: frozenset[NamespacedName]  # Service or slices differ from the previous snapshot
    trigger_times: tuple[float, ...] = ()  # epoch seconds of the endpoint changes now applied
    conntrack_cleanup: bool = False  # a UDP port lost a serving endpoint or gained its first
    zone: str = ""  # this node's topology.kubernetes.io/zone, for topology hints


def _serving(eps: tuple[Endpoint, ...]) -> frozenset[str]:
    return frozenset(ep.key for ep in eps if ep.serving)


def _udp_needs_cleanup(before: EndpointMap, after: EndpointMap) -> bool:
    """kube-proxy's ConntrackCleanupRequired for one Service's ports."""
    for spn in before.keys() | after.keys():
        if spn.protocol != "UDP":
            continue
        old = _serving(before.get(spn, ()))
        new = _serving(after.get(spn, ()))
        if old - new or (new and not old):
            return True
    return False


def _reason(exc: Exception) -> str:
    if isinstance(exc, ManifestError):
        return str(exc)
    return f"malformed object ({type(exc).__name__}: {exc})"


class ChangeTracker:
    """Services and EndpointSlices in, snapshots out (see module docstring)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        # Services: state handed out by the last snapshot, and pending state.
        self._services: PortMap = {}
        self._synced_ports: dict[NamespacedName, PortMap] = {}
        self._pending_ports: dict[NamespacedName, PortMap] = {}
        # EndpointSlices: every slice by its own key, and slices per Service.
        self._slices: dict[NamespacedName, SliceInfo] = {}
        self._slices_of: dict[NamespacedName, set[NamespacedName]] = {}
        self._endpoints: EndpointMap = {}
        self._synced_eps: dict[NamespacedName, EndpointMap] = {}
        self._pending_eps: dict[NamespacedName, EndpointMap] = {}
        self._trigger_times: dict[NamespacedName, float] = {}
        self.zone = ""

    @property
    def services_pending(self) -> int:
        return len(self._pending_ports)

    @property
    def endpoints_pending(self) -> int:
        return len(self._pending_eps)

    def update(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> bool:
        """Record one watch event; True if some change is now pending for the next sync.

        `event_type` is a Kubernetes watch type (ADDED, MODIFIED, DELETED) or a
        store event type (PUT, DELETE). For deletes `obj` needs only metadata.
        A malformed object is logged and treated as absent: an invalid value
        (ManifestError), or a shape the API server would never store, such as
        `status.loadBalancer: null` written straight into the store. Letting the
        latter raise would kill the informer thread and stop the node's proxy.
        """
        if event_type not in DELETE_EVENTS and event_type not in UPSERT_EVENTS:
            log.warning("ignoring %s event of unknown type %r", kind, event_type)
            return self.pending
        try:
            key = object_key(obj)
        except MALFORMED as exc:
            log.warning("ignoring %s event: %s", kind, _reason(exc))
            return self.pending
        deleted = event_type in DELETE_EVENTS
        if kind == "Service":
            self._update_service(key, None if deleted else obj)
        elif kind == "EndpointSlice":
            self._update_slice(key, None if deleted else obj)
        else:
            log.warning("ignoring event for unsupported kind %r", kind)
        return self.pending

    @property
    def pending(self) -> bool:
        return bool(self._pending_ports or self._pending_eps)

    def _update_service(self, key: NamespacedName, obj: Mapping[str, Any] | None) -> None:
        ports: PortMap = {}
        if obj is not None:
            try:
                ports = service_ports(obj)
            except MALFORMED as exc:
                log.warning("Service %s ignored: %s", key, _reason(exc))
        if ports == self._synced_ports.get(key, {}):
            self._pending_ports.pop(key, None)
        else:
            self._pending_ports[key] = ports

    def _update_slice(self, key: NamespacedName, obj: Mapping[str, Any] | None) -> None:
        info: SliceInfo | None = None
        if obj is not None:
            try:
                info = endpoint_slice(obj)
            except MALFORMED as exc:
                log.warning("EndpointSlice %s ignored: %s", key, _reason(exc))
        old = self._slices.pop(key, None)
        affected: set[NamespacedName] = set()
        if old is not None:
            self._slices_of[old.service].discard(key)
            affected.add(old.service)
        if info is not None:
            self._slices[key] = info
            self._slices_of.setdefault(info.service, set()).add(key)
            affected.add(info.service)
            # Without the annotation, measure from when the proxy heard of the change.
            when = info.trigger_time if info.trigger_time is not None else time.time()
            first = self._trigger_times.get(info.service)
            self._trigger_times[info.service] = when if first is None else min(first, when)
        for service in affected:
            keys = self._slices_of.get(service)
            merged = merge_slices([self._slices[k] for k in sorted(keys)],
                                  self.node_name) if keys else {}
            if not keys:
                self._slices_of.pop(service, None)
            if merged == self._synced_eps.get(service, {}):
                self._pending_eps.pop(service, None)
                self._trigger_times.pop(service, None)
            else:
                self._pending_eps[service] = merged

    def snapshot(self) -> Snapshot:
        """Apply everything pending; return the full maps and what changed."""
        changed = set(self._pending_ports) | set(self._pending_eps)
        for service, ports in self._pending_ports.items():
            for spn in self._synced_ports.get(service, {}):
                self._services.pop(spn, None)
            self._services.update(ports)
            if ports:
                self._synced_ports[service] = ports
            else:
                self._synced_ports.pop(service, None)
        cleanup = False
        for service, eps in self._pending_eps.items():
            before = self._synced_eps.get(service, {})
            cleanup = cleanup or _udp_needs_cleanup(before, eps)
            for spn in before:
                self._endpoints.pop(spn, None)
            self._endpoints.update(eps)
            if eps:
                self._synced_eps[service] = eps
            else:
                self._synced_eps.pop(service, None)
        triggers = tuple(self._trigger_times[s] for s in self._pending_eps
                         if s in self._trigger_times)
        self._pending_ports.clear()
        self._pending_eps.clear()
        self._trigger_times.clear()
        return Snapshot(MappingProxyType(dict(self._services)),
                        MappingProxyType(dict(self._endpoints)),
                        frozenset(changed), triggers, cleanup, self.zone)
