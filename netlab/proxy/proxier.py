"""The sync loop every mode shares (kube-proxy's Proxier minus the rule writing).

Watch events go in through `on_event`; a background thread turns them into
syncs the way kube-proxy's BoundedFrequencyRunner does: a change is applied
as soon as `min_sync_period` has passed since the previous sync started, and
a sync runs at least every `sync_period` even when nothing changed. Syncs
between full syncs are partial (only changed services' chains are
rewritten). A sync is full on start, after any failure (the change set was
consumed, so a partial retry would miss it), when this Node's zone changes,
when the backend's canary shows the tables were flushed, and every
`full_sync_period`.

Nothing syncs until both the Service and EndpointSlice lists have been
delivered (`on_synced`), so a restart never programs a half-read state; then
the first sync is full and converges on what the previous run left behind.
`sync()` runs one sync immediately, for tests, benchmarks and scripts.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netlab.errors import NetlabError
from netlab.proxy.backend import Backend, BackendResult
from netlab.proxy.changes import DELETE_EVENTS, ChangeTracker, Snapshot
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.healthz import ProxyHealth, health_server
from netlab.proxy.httpserve import HttpServer, listen_in
from netlab.proxy.metrics import ProxyMetrics, metrics_server
from netlab.proxy.model import LABEL_TOPOLOGY_ZONE

log = logging.getLogger(__name__)

INITIAL_KINDS = frozenset({"Service", "EndpointSlice"})


@dataclass(frozen=True)
class SyncReport:
    """One sync, for logs, benchmarks and the CLI."""

    full: bool
    started: float  # wall clock, epoch seconds
    duration: float  # seconds, snapshot to rules applied (and conntrack cleaned)
    service_ports: int
    changed_services: int
    result: BackendResult
    conntrack_deleted: int = 0


class Proxier:
    """Feeds a backend from watch events; see the module docstring for when it syncs."""

    def __init__(self, backend: Backend, node_name: str, *, min_sync_period: float = 1.0,
                 sync_period: float = 30.0, full_sync_period: float | None = None,
                 metrics: ProxyMetrics | None = None, health: ProxyHealth | None = None,
                 conntrack: ConntrackReconciler | None = None, namespace: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.namespace = namespace  # where serve() listens
        self.node_name = node_name
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.full_sync_period = sync_period if full_sync_period is None else full_sync_period
        self.metrics = metrics or ProxyMetrics()
        self.health = health or ProxyHealth(2 * sync_period, metrics=self.metrics)
        self.conntrack = conntrack
        self._clock = clock
        self._tracker = ChangeTracker(node_name)
        self._lock = threading.Lock()  # tracker and flags
        self._wake = threading.Condition(self._lock)
        self._sync_lock = threading.Lock()  # one sync at a time
        self._synced_kinds: set[str] = set()
        self._need_full = True
        self._requested = False
        self._set_up = False
        self._last_start: float | None = None
        self._last_full: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._servers: list[HttpServer] = []
        self.reports: collections.deque[SyncReport] = collections.deque(maxlen=100)

    # -- events ---------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return self._synced_kinds >= INITIAL_KINDS

    def on_event(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event: kind Service, EndpointSlice, or Node (this node's zone and taints).

        `event_type` is ADDED/MODIFIED/DELETED or the store's PUT/DELETE; for a
        delete, `obj` is the last known object (metadata is enough).
        """
        if kind == "Node":
            self._on_node(event_type, obj)
            return
        with self._lock:
            pending = self._tracker.update(kind, event_type, obj)
            if kind == "Service":
                self.metrics.service_changes_total.inc()
            elif kind == "EndpointSlice":
                self.metrics.endpoint_changes_total.inc()
            self._set_pending_gauges()
            if pending and self.initialized:
                self._request()

    def _on_node(self, event_type: str, obj: Mapping[str, Any]) -> None:
        if obj.get("metadata", {}).get("name") != self.node_name:
            return
        deleted = event_type in DELETE_EVENTS
        self.health.set_node(None if deleted else obj)
        labels = obj.get("metadata", {}).get("labels") or {}
        zone = "" if deleted else str(labels.get(LABEL_TOPOLOGY_ZONE, ""))
        with self._lock:
            if zone != self._tracker.zone:
                self._tracker.zone = zone
                self._need_full = True  # topology hints may now pick other endpoints
                if self.initialized:
                    self._request()

    def on_synced(self, kind: str) -> None:
        """The initial list of `kind` (Service or EndpointSlice) has been delivered."""
        with self._lock:
            self._synced_kinds.add(kind)
            if self.initialized:
                self._request()

    def _request(self) -> None:
        """Queue a sync (caller holds the lock)."""
        self._requested = True
        self.health.queued_update()
        self.metrics.last_queued.set(time.time())
        self._wake.notify()

    def _set_pending_gauges(self) -> None:
        self.metrics.service_changes_pending.set(self._tracker.services_pending)
        self.metrics.endpoint_changes_pending.set(self._tracker.endpoints_pending)

    # -- syncing --------------------------------------------------------------

    def sync(self, full: bool = False) -> SyncReport:
        """Sync now (a full sync if asked or due); raises NetlabError if the kernel refused."""
        with self._sync_lock:
            start = self._clock()
            wall = time.time()
            with self._lock:
                full = full or self._need_full or self._last_full is None or \
                    start - self._last_full >= self.full_sync_period
                snapshot = self._tracker.snapshot()
                self._requested = False
                self._last_start = start
                self._set_pending_gauges()
            try:
                if not self._set_up:
                    self.backend.setup()
                    self._set_up = True
                result = self.backend.sync(snapshot, full=full)
            except NetlabError:
                with self._lock:
                    self._need_full = True
                self.metrics.restore_failures.inc()
                if not full:
                    self.metrics.partial_restore_failures.inc()
                self._observe(full, self._clock() - start)
                log.exception("%s sync failed; the next sync will be full", self.backend.mode)
                raise
            with self._lock:
                self._need_full = False
                if full:
                    self._last_full = start
            done = time.time()
            for trigger in snapshot.trigger_times:
                self.metrics.network_programming.observe(max(0.0, done - trigger))
            self.metrics.set_rules(result.rules_total, result.rules_written)
            self.metrics.set_no_local_endpoints(result.no_local_internal,
                                                result.no_local_external)
            self.metrics.last_sync.set(done)
            self.health.updated()
            deleted = self._clean_conntrack(snapshot) if snapshot.conntrack_cleanup else 0
            duration = self._clock() - start
            self._observe(full, duration)
            report = SyncReport(full, wall, duration, len(snapshot.services),
                                len(snapshot.changed), result, deleted)
            self.reports.append(report)
            log.debug("%s %s sync of %d service ports took %.3fs", self.backend.mode,
                      "full" if full else "partial", report.service_ports, duration)
            return report

    def _observe(self, full: bool, seconds: float) -> None:
        self.metrics.sync_duration.observe(seconds)
        (self.metrics.full_sync_duration if full else
         self.metrics.partial_sync_duration).observe(seconds)

    def _clean_conntrack(self, snapshot: Snapshot) -> int:
        if self.conntrack is None:
            return 0
        start = self._clock()
        try:
            deleted = self.conntrack.reconcile(snapshot.services, snapshot.endpoints)
        except NetlabError as exc:
            log.warning("conntrack cleanup failed: %s", exc)
            return 0
        self.metrics.conntrack_duration.observe(self._clock() - start)
        self.metrics.conntrack_deleted.inc(deleted)
        return deleted

    def check_flushed(self) -> bool:
        """Ask the backend whether its tables were flushed; if so the next sync is full."""
        flushed = self.backend.flushed()
        if flushed:
            log.warning("%s state was flushed behind our back; forcing a full sync",
                        self.backend.mode)
            with self._lock:
                self._need_full = True
                self._request()
        return flushed

    # -- background loop ------------------------------------------------------

    def start(self) -> Proxier:
        """Run the sync loop in a daemon thread until `stop()`."""
        if self._thread is None:
            self._stop.clear()
            # As kube-proxy: healthy while starting up, and a queue time to compare with.
            self.health.updated()
            self.metrics.last_queued.set(time.time())
            self._thread = threading.Thread(target=self._loop, name=f"proxy-{self.node_name}",
                                            daemon=True)
            self._thread.start()
        return self

    def serve(self, metrics_address: tuple[str, int] | None = ("127.0.0.1", 10249),
              healthz_address: tuple[str, int] | None = ("0.0.0.0", 10256)) -> None:
        """Serve /metrics (kube-proxy's 127.0.0.1:10249) and /healthz, /livez (0.0.0.0:10256).

        The sockets are made inside the proxier's namespace; None skips a server.
        """
        if metrics_address is not None:
            sock = listen_in(self.namespace, *metrics_address)
            self._servers.append(metrics_server(self.metrics, self.backend.mode, sock).start())
        if healthz_address is not None:
            sock = listen_in(self.namespace, *healthz_address)
            self._servers.append(health_server(self.health, sock).start())

    def stop(self) -> None:
        """Stop the loop and the servers; the rules stay, as when kube-proxy exits."""
        for server in self._servers:
            server.stop()
        self._servers.clear()
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _next_due(self) -> tuple[float, bool]:
        """When the next sync is due, and whether it is the periodic one (caller holds lock)."""
        last = self._last_start
        if last is None:
            return (self._clock(), False) if self._requested else (float("inf"), False)
        periodic = last + self.sync_period
        if self._requested:
            soon = last + self.min_sync_period
            if soon < periodic:
                return soon, False
        return periodic, True

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self.initialized:
                    self._wake.wait(1.0)
                    continue
                due, periodic = self._next_due()
                delay = due - self._clock()
                if delay > 0:
                    self._wake.wait(min(delay, 3600.0))
                    continue
            if self._stop.is_set():
                break
            try:
                if periodic:
                    self.check_flushed()
                self.sync()
            except NetlabError:
                pass  # logged in sync(); retried at the next periodic sync or change
            except Exception:
                log.exception("unexpected error in the proxy sync loop")
                with self._lock:
                    self._need_full = True
                    self._last_start = self._clock()
