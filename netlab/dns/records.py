"""The names cluster DNS publishes, kept as an index of Kubernetes objects.

Objects arrive as plain dicts (what `kubectl get -o json` shows) through `apply`,
one watch event at a time, so an update costs O(size of the changed object). The
index keeps only what DNS needs: Services, the published addresses of their
EndpointSlices, Pod IPs (for `pods verified`) and which namespaces exist.

`find`, `reverse` and `nameservers` answer the way the CoreDNS kubernetes plugin
does (kubernetes.go findServices/findPods, reverse.go, ns.go); the resolver turns
their results into resource records. Names are handled as lowercase labels
relative to the cluster zone, in query order (`("web", "prod", "svc")`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from netlab.dns.objects import (
    Address,
    Port,
    Service,
    Slice,
    namespaced_name,
    pod_ips_from,
    service_from,
    slice_from,
    undashed,
)

PodMode = Literal["disabled", "insecure", "verified"]
# Namespaces a cluster always has (they cannot be deleted), so `default.svc.<zone>`
# behaves as in a real cluster even when the store holds no Namespace objects.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Entry:
    """One thing a name resolves to, as CoreDNS's msg.Service.

    host: an IP address, or the target name of an ExternalName service.
    port: the port for SRV answers (-1 when the object declares none: no SRV).
    name: zone-relative labels of the name this entry is published under (SRV
          target, PTR/NS name).
    """

    host: str
    port: int
    name: tuple[str, ...]


class NameError_(LookupError):
    """The name does not exist (NXDOMAIN), as opposed to existing without data."""


@dataclass(frozen=True)
class RecordOptions:
    """The kubernetes-plugin options that change which names exist.

    pods: `insecure` is the kubeadm default; `disabled` the plugin's own default.
    namespaces: expose only these namespaces (empty: all), as the `namespaces` option.
    endpoint_pod_names: use the pod name as the endpoint label when there is no hostname.
    ignore_empty_service: ClusterIP services without ready endpoints are NXDOMAIN.
    """

    pods: PodMode = "insecure"
    namespaces: frozenset[str] = frozenset()
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False


@dataclass
class _Refs:
    """Per-namespace counts of objects, so a namespace exists while anything lives in it."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, ns: str) -> None:
        self.counts[ns] = self.counts.get(ns, 0) + 1

    def drop(self, ns: str) -> None:
        left = self.counts.get(ns, 0) - 1
        if left > 0:
            self.counts[ns] = left
        else:
            self.counts.pop(ns, None)


class RecordIndex:
    """Services, EndpointSlices, Pods and Namespaces, indexed for DNS lookups.

    Not thread-safe: call `apply` from the thread that serves queries (the server
    offers `apply_threadsafe` for watch loops running elsewhere).
    """

    def __init__(self, options: RecordOptions | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options or RecordOptions()
        self._clock = clock
        self._services: dict[tuple[str, str], Service] = {}
        self._slices: dict[tuple[str, str], Slice] = {}
        self._slices_of: dict[tuple[str, str], dict[str, Slice]] = {}
        self._svc_by_ip: dict[str, tuple[str, str]] = {}
        self._slices_by_ip: dict[str, set[tuple[str, str]]] = {}
        self._pods: dict[tuple[str, str], tuple[str, ...]] = {}
        self._pod_ips: dict[str, dict[str, int]] = {}
        self._namespace_objects: set[str] = set()
        self._refs = _Refs()
        self.synced = False
        self.serial = int(clock())
        # Bumped on every change that can alter an answer; answer caches compare it.
        self.version = 0

    # -- feeding --------------------------------------------------------------

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> bool:
        """Apply one watch event; True if DNS answers may have changed.

        kind: Service, EndpointSlice, Pod or Namespace (others are ignored).
        event_type: ADDED, MODIFIED or DELETED (BOOKMARK and others are ignored).
        """
        handler = {"Service": self._apply_service, "EndpointSlice": self._apply_slice,
                   "Pod": self._apply_pod, "Namespace": self._apply_namespace}.get(kind)
        if handler is None or event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return False
        changed = handler(obj, event_type == "DELETED")
        if changed:
            self._changed()
        return changed

    def mark_synced(self) -> None:
        """Declare the initial list complete: a missing name is now NXDOMAIN, not SERVFAIL."""
        if not self.synced:
            self.synced = True
            self.version += 1

    def _changed(self) -> None:
        self.serial = int(self._clock())
        self.version += 1

    def _apply_service(self, obj: dict[str, Any], deleted: bool) -> bool:
        ns, name = namespaced_name(obj)
        key = (ns, name)
        old = self._services.get(key)
        new = None if deleted else service_from(obj)
        if old == new:
            return False
        if old is not None:
            for ip in old.cluster_ips:
                if self._svc_by_ip.get(ip) == key:
                    del self._svc_by_ip[ip]
            self._refs.drop(ns)
            del self._services[key]
        if new is not None:
            for ip in new.cluster_ips:
                self._svc_by_ip[ip] = key
            self._refs.add(ns)
            self._services[key] = new
        return True

    def _apply_slice(self, obj: dict[str, Any], deleted: bool) -> bool:
        ns, name = namespaced_name(obj)
        key = (ns, name)
        old = self._slices.get(key)
        new = None if deleted else slice_from(obj)
        if old == new:
            return False
        if old is not None:
            for addr in old.addresses:
                holders = self._slices_by_ip.get(addr.ip)
                if holders is not None:
                    holders.discard(key)
                    if not holders:
                        del self._slices_by_ip[addr.ip]
            of = self._slices_of.get((ns, old.service))
            if of is not None:
                of.pop(name, None)
                if not of:
                    del self._slices_of[(ns, old.service)]
            self._refs.drop(ns)
            del self._slices[key]
        if new is not None:
            for addr in new.addresses:
                self._slices_by_ip.setdefault(addr.ip, set()).add(key)
            self._slices_of.setdefault((ns, new.service), {})[name] = new
            self._refs.add(ns)
            self._slices[key] = new
        return True

    def _apply_pod(self, obj: dict[str, Any], deleted: bool) -> bool:
        ns, name = namespaced_name(obj)
        key = (ns, name)
        old = self._pods.get(key)
        new = None if deleted else pod_ips_from(obj)
        if old == new:
            return False
        had_namespace = ns in self._refs.counts
        if old is not None:
            for ip in old:
                in_ns = self._pod_ips.get(ip, {})
                in_ns[ns] = in_ns.get(ns, 1) - 1
                if in_ns[ns] <= 0:
                    del in_ns[ns]
                if not in_ns:
                    self._pod_ips.pop(ip, None)
            self._refs.drop(ns)
            del self._pods[key]
        if new is not None:
            for ip in new:
                in_ns = self._pod_ips.setdefault(ip, {})
                in_ns[ns] = in_ns.get(ns, 0) + 1
            self._refs.add(ns)
            self._pods[key] = new
        # Pod IPs matter only to `pods verified`; otherwise a pod changes answers only by
        # being the first or last object in its namespace.
        return self.options.pods == "verified" or had_namespace != (ns in self._refs.counts)

    def _apply_namespace(self, obj: dict[str, Any], deleted: bool) -> bool:
        name = str(obj.get("metadata", {}).get("name", ""))
        if not name:
            return False
        if deleted == (name not in self._namespace_objects):
            return False
        if deleted:
            self._namespace_objects.discard(name)
        else:
            self._namespace_objects.add(name)
        return True

    # -- queries --------------------------------------------------------------

    def namespace_exposed(self, ns: str) -> bool:
        """The namespace exists and the `namespaces` option (if any) exposes it."""
        if self.options.namespaces and ns not in self.options.namespaces:
            return False
        return (ns in self._namespace_objects or ns in self._refs.counts
                or ns in BUILTIN_NAMESPACES)

    def service(self, namespace: str, name: str) -> Service | None:
        return self._services.get((namespace, name))

    def find(self, labels: Sequence[str]) -> list[Entry]:
        """Entries for a zone-relative name (lowercase labels); [] = exists without data.

        Raises NameError_ for names that do not exist (CoreDNS Records()).
        """
        if not labels or tuple(labels) in (("svc",), ("pod",)):
            return []
        kind = labels[-1]
        if kind not in ("svc", "pod"):
            raise NameError_("label under the zone is neither svc nor pod")
        if len(labels) == 1:
            return []
        namespace = labels[-2]
        extra = labels[:-3]
        if len(extra) > 2:
            raise NameError_("too many labels")
        if not self.namespace_exposed(namespace):
            raise NameError_("namespace not exposed")
        if len(labels) == 2:
            if kind == "pod" and self.options.pods == "disabled":
                raise NameError_("pod records disabled")
            return []
        if kind == "pod":
            return self._find_pod(namespace, labels[-3])
        endpoint = port = protocol = ""
        if len(extra) == 1:
            endpoint = extra[0]
        elif len(extra) == 2:
            port, protocol = _strip_underscore(extra[0]), _strip_underscore(extra[1])
        return self._find_service(namespace, labels[-3], endpoint, port, protocol)

    def _find_pod(self, namespace: str, label: str) -> list[Entry]:
        if self.options.pods == "disabled":
            raise NameError_("pod records disabled")
        ip = undashed(label)
        if ip is None:
            raise NameError_("pod label is not an IP")
        if self.options.pods == "verified" and namespace not in self._pod_ips.get(ip, {}):
            raise NameError_("no pod with that IP in the namespace")
        return [Entry(ip, 0, (label, namespace, "pod"))]

    def _find_service(self, namespace: str, name: str, endpoint: str, port: str,
                      protocol: str) -> list[Entry]:
        svc = self._services.get((namespace, name))
        if svc is None:
            raise NameError_("no such service")
        base = (name, namespace, "svc")
        if svc.kind == "ExternalName":
            if endpoint or port or protocol or not svc.external_name:
                raise NameError_("ExternalName services have no endpoints or ports")
            return [Entry(svc.external_name, -1, base)]
        if (self.options.ignore_empty_service and svc.kind == "ClusterIP"
                and not any(self.published(svc, s) for s in self.slices_of(svc))):
            raise NameError_("service has no ready endpoints (ignore empty_service)")
        entries: list[Entry] = []
        if svc.kind == "Headless" or endpoint:
            pod_names = self.options.endpoint_pod_names
            for sl in self.slices_of(svc):
                for addr in self.published(svc, sl):
                    label = addr.label(pod_names)
                    if endpoint and endpoint != label:
                        continue
                    for p in sl.ports:
                        if _port_matches(port, protocol, p):
                            entries.append(Entry(addr.ip, p.port, (label, *base)))
            if not entries:
                raise NameError_("no matching endpoint")
            return entries
        matched = False
        for p in svc.ports:
            if not _port_matches(port, protocol, p):
                continue
            matched = True
            entries.extend(Entry(ip, p.port, base) for ip in svc.cluster_ips)
        if not matched:
            raise NameError_("no matching port")
        return entries

    def slices_of(self, svc: Service) -> list[Slice]:
        """The service's EndpointSlices, by name so answers come out in a stable order."""
        of = self._slices_of.get((svc.namespace, svc.name), {})
        return [of[k] for k in sorted(of)]

    def published(self, svc: Service | None, sl: Slice) -> list[Address]:
        """Addresses DNS publishes: ready ones, or all when the Service tolerates unready."""
        if svc is not None and svc.publish_not_ready:
            return list(sl.addresses)
        return [a for a in sl.addresses if a.ready]

    def reverse(self, ip: str) -> list[tuple[str, ...]]:
        """Zone-relative names for a PTR answer: the ClusterIP's service, else each endpoint's."""
        key = self._svc_by_ip.get(ip)
        if key is not None and self.namespace_exposed(key[0]):
            return [(key[1], key[0], "svc")]
        names: list[tuple[str, ...]] = []
        pod_names = self.options.endpoint_pod_names
        for slice_key in sorted(self._slices_by_ip.get(ip, ())):
            sl = self._slices[slice_key]
            if not sl.service or not self.namespace_exposed(sl.namespace):
                continue
            svc = self._services.get((sl.namespace, sl.service))
            for addr in self.published(svc, sl):
                if addr.ip == ip:
                    name = (addr.label(pod_names), sl.service, sl.namespace, "svc")
                    if name not in names:
                        names.append(name)
        return names

    def nameservers(self, local_ips: Iterable[str]) -> list[tuple[tuple[str, ...], str]]:
        """(zone-relative name, IP) of the DNS service this server backs (CoreDNS ns.go).

        The server's own IPs are looked up among endpoint addresses; each Service they
        back yields its name and ClusterIPs (headless: every endpoint's name and IP).
        Empty when the server backs no Service; the resolver then uses `ns.dns`.
        """
        found: list[tuple[tuple[str, ...], str]] = []
        pod_names = self.options.endpoint_pod_names
        for local in local_ips:
            for slice_key in sorted(self._slices_by_ip.get(local, ())):
                sl = self._slices[slice_key]
                svc = self._services.get((sl.namespace, sl.service))
                if svc is None or svc.kind == "ExternalName":
                    continue
                addresses = self.published(svc, sl)
                if all(a.ip != local for a in addresses):
                    continue
                base = (svc.name, svc.namespace, "svc")
                if svc.kind == "Headless":
                    pairs = [((a.label(pod_names), *base), a.ip) for a in addresses]
                else:
                    pairs = [(base, ip) for ip in svc.cluster_ips]
                found.extend(p for p in pairs if p not in found)
        return found


def _strip_underscore(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def _port_matches(port: str, protocol: str, p: Port) -> bool:
    """CoreDNS matchPortAndProtocol: an empty query part matches anything."""
    return (not port or port == p.name) and (not protocol or protocol == p.protocol)
