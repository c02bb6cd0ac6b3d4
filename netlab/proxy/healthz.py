"""kube-proxy's health server (:10256 /healthz and /livez).

Health semantics follow pkg/proxy/healthcheck/proxy_health.go: the proxy is
unhealthy once an update has been queued for longer than `health_timeout`
(2 × syncPeriod) without a successful sync; /healthz is additionally 503
while this Node is being deleted or carries the ToBeDeletedByClusterAutoscaler
taint. The JSON body has kube-proxy's shape and key order.

One difference: kube-proxy always knows its Node object. The lab's agent may
not feed Node events, so an unknown Node counts as eligible here.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from netlab.proxy.httpserve import HttpServer, Response
from netlab.proxy.metrics import ProxyMetrics

TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


def go_time(t: float | None) -> str:
    """A timestamp as Go's time.Time marshals to JSON (RFC 3339, nanoseconds trimmed)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    stamp = datetime.fromtimestamp(t, UTC)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{stamp.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


class ProxyHealth:
    """Health of one proxier, as its health server reports it."""

    def __init__(self, health_timeout: float = 60.0, *, ip_family: str = "IPv4",
                 metrics: ProxyMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.health_timeout = health_timeout
        self.ip_family = ip_family
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._last_updated: float | None = None
        self._oldest_queued: float | None = None
        self._node: Mapping[str, Any] | None = None

    def updated(self) -> None:
        """A sync succeeded: nothing is pending any more."""
        with self._lock:
            self._oldest_queued = None
            self._last_updated = self._clock()

    def queued_update(self) -> None:
        """A change arrived that the rules do not reflect yet."""
        with self._lock:
            if self._oldest_queued is None:
                self._oldest_queued = self._clock()

    def set_node(self, node: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._node = node

    def node_eligible(self) -> bool:
        with self._lock:
            node = self._node
        if node is None:
            return True
        if node.get("metadata", {}).get("deletionTimestamp"):
            return False
        taints = node.get("spec", {}).get("taints") or []
        return not any(t.get("key") == TO_BE_DELETED_TAINT for t in taints)

    def health(self) -> dict[str, Any]:
        """kube-proxy's ProxyHealth struct, as a dict in its JSON key order."""
        with self._lock:
            last, queued = self._last_updated, self._oldest_queued
        now = self._clock()
        healthy = queued is None or now - queued < self.health_timeout
        body: dict[str, Any] = {"lastUpdated": go_time(last), "currentTime": go_time(now),
                                "healthy": healthy}
        if last is not None:
            body["status"] = {self.ip_family: {"lastUpdated": go_time(last),
                                               "healthy": healthy}}
        return body

    def _respond(self, body: dict[str, Any], healthy: bool, counter: Any) -> Response:
        code = 200 if healthy else 503
        if counter is not None:
            counter.labels(str(code)).inc()
        if healthy:
            # As kube-proxy: a healthy answer reports "now" as lastUpdated.
            body["lastUpdated"] = body["currentTime"]
        headers = {"X-Content-Type-Options": "nosniff"}
        return code, "application/json", json.dumps(body, separators=(",", ":")).encode(), \
            headers

    def healthz(self) -> Response:
        health = self.health()
        eligible = self.node_eligible()
        body = {"lastUpdated": health["lastUpdated"], "currentTime": health["currentTime"],
                "nodeEligible": eligible, **{k: v for k, v in health.items()
                                             if k in ("healthy", "status")}}
        counter = self.metrics.healthz_total if self.metrics else None
        return self._respond(body, health["healthy"] and eligible, counter)

    def livez(self) -> Response:
        health = self.health()
        counter = self.metrics.livez_total if self.metrics else None
        return self._respond(health, health["healthy"], counter)


def health_server(health: ProxyHealth, sock: socket.socket) -> HttpServer:
    """kube-proxy's healthz server (default 0.0.0.0:10256); call .start()."""
    return HttpServer({"/healthz": health.healthz, "/livez": health.livez}, sock)

