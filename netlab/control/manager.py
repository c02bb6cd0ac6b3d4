"""The control-plane process: every controller on one informer, reconciling in passes.

One informer (list + watch) feeds a cache; a single loop takes a snapshot whenever
something changed and runs the controllers over it in a fixed order: node IPAM,
Deployments, garbage collection, ReplicaSets, the scheduler, EndpointSlices, the
kubernetes Service's endpoints. Events arriving during a pass are coalesced into
the next one, so a burst of 300 pod events costs one pass, not 300.

Each pass waits until the cache shows the writes of the pass before it (a
read-your-writes barrier), and every write is compare-and-swap guarded (see
view.py), so a controller never acts twice on the same thing. Nothing lives only in
memory: a restarted control plane relists, finds every pod, ReplicaSet, slice and
allocation where it left them, and changes nothing that is already right.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from netlab.api.cluster import ClusterConfig
from netlab.control import (
    apiserver,
    deployments,
    endpointslices,
    leases,
    nodeipam,
    replicasets,
    scheduler,
    servicealloc,
)
from netlab.control.gc import GarbageCollector
from netlab.control.meta import Obj, labels_of
from netlab.control.view import NsName, View, Writer
from netlab.errors import ManifestError, StoreError
from netlab.store import open_store
from netlab.store.informer import Informer
from netlab.store.objects import ObjectEvent, Objects

log = logging.getLogger(__name__)

# Dependents before owners: a relist then never shows a dependent without its owner.
WATCHED_KINDS = ("Pod", "EndpointSlice", "Endpoints", "ReplicaSet", "Deployment", "Service",
                 "Node")
RESYNC_SECONDS = 30.0
REPAIR_SECONDS = 60.0
BARRIER_SECONDS = 2.0
_TICK = 0.25
_CONFLICT_BACKOFF = 0.05


class Cache:
    """The informer's events folded into tables, plus what changed since the last snapshot.

    Written by the informer thread, read by the reconcile loop; one lock guards both.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tables: dict[str, dict] = {kind: {} for kind in View.KINDS}
        self.revision = 0
        self._changed = False
        self._services: set[NsName] | None = None  # None: every Service
        self._pod_labels: set[tuple[str, frozenset]] = set()

    def apply(self, events: list[ObjectEvent]) -> None:
        """Informer callback (also called, maybe empty, after each relist)."""
        with self._cond:
            for event in events:
                table = self._tables[event.kind]
                key = View.key(event.obj)
                old = table.get(key)
                new = None if event.type == "DELETED" else event.obj
                if new is None:
                    table.pop(key, None)
                else:
                    table[key] = new
                self.revision = max(self.revision, event.revision)
                self._note(event.kind, key, old, new)
            self._changed = True
            self._cond.notify_all()

    def _note(self, kind: str, key: str | NsName, old: Obj | None, new: Obj | None) -> None:
        """Remember which Services an event may affect (for the EndpointSlice controller)."""
        if self._services is None:
            return
        if kind in ("Service", "Endpoints"):
            self._services.add(key)  # type: ignore[arg-type]
        elif kind == "EndpointSlice":
            for obj in (old, new):
                if obj and (name := labels_of(obj).get(endpointslices.SERVICE_NAME_LABEL)):
                    self._services.add((key[0], name))
        elif kind == "Pod":
            for obj in (old, new):
                if obj:
                    self._pod_labels.add((key[0], frozenset(labels_of(obj).items())))
        elif kind == "Node" and (old is None or new is None or labels_of(old) != labels_of(new)):
            self._services = None

    def requeue(self, services: set[NsName]) -> None:
        """Have the next pass retry these Services' endpoints."""
        with self._cond:
            if services and self._services is not None:
                self._services |= services
                self._changed = True

    def invalidate(self) -> None:
        """Have the next pass redo everything (after a failed pass)."""
        with self._cond:
            self._services = None
            self._changed = True

    def take(self, barrier: int, timeout: float, force: bool = False
             ) -> tuple[View, set[NsName] | None] | None:
        """A snapshot once something changed and the cache shows revision `barrier`.

        None if that does not happen within timeout (force: a snapshot regardless).
        Returns the view and the Services to resync (None: all of them).
        """
        with self._cond:
            ready = force or self._cond.wait_for(
                lambda: self._changed and self.revision >= barrier, timeout)
            if not ready:
                return None
            view = View.from_tables(self._tables)
            services = None if self._services is None else {
                *self._services,
                *(key for ns, labels in self._pod_labels
                  for key in endpointslices.services_selecting(view, ns, [dict(labels)]))}
            self._changed = False
            self._services = set()
            self._pod_labels = set()
            return view, services


class ControlPlane:
    """The controllers and their loop (see module doc)."""

    def __init__(self, objects: Objects, config: ClusterConfig) -> None:
        self.objects = objects
        self.config = config
        self.cache = Cache()
        self.gc = GarbageCollector(objects)

    def reconcile(self, view: View, services: set[NsName] | None) -> Writer:
        """One pass of every controller over the view."""
        writer = Writer(self.objects)
        failed: set[NsName] = set()

        def endpoint_slices() -> None:
            failed.update(endpointslices.sync(writer, view, services))

        steps: Mapping[str, Callable[[], None]] = {
            "node IPAM": lambda: nodeipam.sync(writer, view, self.config),
            "deployments": lambda: deployments.sync(writer, view),
            "garbage collector": lambda: self.gc.sync(writer, view),
            "replicasets": lambda: replicasets.sync(writer, view),
            "scheduler": lambda: scheduler.sync(writer, view),
            "endpointslices": endpoint_slices,
            "kubernetes endpoints": lambda: apiserver.sync(writer, view),
            "subnet leases": lambda: leases.sync(self.objects, view),
        }
        for name, step in steps.items():
            try:
                step()
            except StoreError:
                raise
            except Exception:
                log.exception("%s controller failed; continuing with the others", name)
        self.cache.requeue(failed)
        return writer

    def _bootstrap(self, stop: threading.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                servicealloc.ensure_default_services(self.objects, self.config)
                return
            except StoreError as exc:
                log.warning("store unavailable (%s); retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except ManifestError as exc:  # e.g. its address was given away in an old store
                log.error("cannot create Service default/kubernetes: %s", exc)
                return

    def run(self, stop: threading.Event) -> None:
        self._bootstrap(stop)
        informer = Informer(self.objects, WATCHED_KINDS, self.cache.apply)
        thread = informer.start()
        barrier, barrier_until = 0, 0.0
        last_full, last_repair = time.monotonic(), 0.0
        try:
            while not stop.is_set():
                full = time.monotonic() - last_full >= RESYNC_SECONDS
                wait_for = barrier if time.monotonic() < barrier_until else 0
                snapshot = self.cache.take(wait_for, _TICK,
                                           force=full and informer.synced.is_set())
                if snapshot is not None:
                    view, services = snapshot
                    if full:
                        services, last_full = None, time.monotonic()
                    wrote = self._pass(view, services)
                    if wrote:
                        barrier, barrier_until = wrote, time.monotonic() + BARRIER_SECONDS
                if time.monotonic() - last_repair >= REPAIR_SECONDS and informer.synced.is_set():
                    last_repair = time.monotonic()
                    self._repair()
        finally:
            informer.stop()
            thread.join(timeout=5)

    def _pass(self, view: View, services: set[NsName] | None) -> int:
        """Run one pass; the store revision of its last write (0: wrote nothing)."""
        started = time.monotonic()
        try:
            writer = self.reconcile(view, services)
        except StoreError as exc:
            log.warning("store error during reconcile (%s); retrying", exc)
            self.cache.invalidate()
            time.sleep(0.5)
            return 0
        if writer.revision:
            log.debug("pass took %.0f ms (%d conflicts)", (time.monotonic() - started) * 1e3,
                      writer.conflicts)
        elif writer.conflicts:
            time.sleep(_CONFLICT_BACKOFF)  # lost every race: let the view catch up first
        return writer.revision

    def _repair(self) -> None:
        try:
            servicealloc.repair(self.objects, self.config)
        except StoreError as exc:
            log.warning("allocation repair failed (%s)", exc)
        except Exception:  # as reconcile(): never let one bad object end the process
            log.exception("allocation repair failed; retrying at the next repair")


def run(store_url: str, config: ClusterConfig, stop: threading.Event) -> None:
    """Run the control plane against the store until stop is set."""
    store = open_store(store_url)
    log.info("control plane up (store %s, pod network %s, services %s)", store_url,
             config.pod_cidr, config.service_cidr)
    try:
        ControlPlane(Objects(store), config).run(stop)
    finally:
        store.close()
        log.info("control plane stopped")
