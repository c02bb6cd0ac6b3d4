"""kube-proxy's metrics, by their real names, in a registry per proxier.

Names, help texts, labels and buckets follow pkg/proxy/metrics (1.33), so
dashboards and PromQL written for a real node work against a lab node. Each
proxier gets its own CollectorRegistry: a host running three lab nodes runs
three proxiers in one process, and each node's :10249 must show only its own.
"""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from netlab.proxy.httpserve import HttpServer

SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))  # ExponentialBuckets(0.001, 2, 15)
PROGRAMMING_BUCKETS = (
    (0.25, 0.5)
    + tuple(float(s) for s in range(1, 60))
    + tuple(float(s) for s in range(60, 120, 5))
    + tuple(float(s) for s in range(120, 301, 30))
)


class ProxyMetrics:
    """The kubeproxy_* metrics of one proxier (one IP family)."""

    def __init__(self, ip_family: str = "IPv4",
                 registry: CollectorRegistry | None = None) -> None:
        self.ip_family = ip_family
        self.registry = registry or CollectorRegistry()
        r = self.registry
        fam = ["ip_family"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = SYNC_BUCKETS):
            return Histogram(f"kubeproxy_{name}", doc, fam, buckets=buckets,
                             registry=r).labels(ip_family)

        self.sync_duration = histogram("sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds")
        self.full_sync_duration = histogram("sync_full_proxy_rules_duration_seconds",
                                            "SyncProxyRules latency in seconds for full resyncs")
        self.partial_sync_duration = histogram(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs")
        self.network_programming = histogram("network_programming_duration_seconds",
                                             "In Cluster Network Programming Latency in seconds",
                                             PROGRAMMING_BUCKETS)
        self.conntrack_duration = histogram("conntrack_reconciler_sync_duration_seconds",
                                            "ReconcileConntrackFlowsLatency latency in seconds")
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced", fam,
                               registry=r).labels(ip_family)
        self.last_queued = Gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                                 "The last time a sync of proxy rules was queued", fam,
                                 registry=r).labels(ip_family)
        self.endpoint_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes", registry=r)
        self.endpoint_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes", registry=r)
        self.service_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes", registry=r)
        self.service_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes", registry=r)
        self.restore_failures = Counter(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures", fam, registry=r).labels(ip_family)
        self.partial_restore_failures = Counter(
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures", fam,
            registry=r).labels(ip_family)
        self._rules_total = Gauge("kubeproxy_sync_proxy_rules_iptables_total",
                                  "Total number of iptables rules owned by kube-proxy",
                                  ["table", "ip_family"], registry=r)
        self._rules_last = Gauge("kubeproxy_sync_proxy_rules_iptables_last",
                                 "Number of iptables rules written by kube-proxy in last sync",
                                 ["table", "ip_family"], registry=r)
        self._no_local = Gauge("kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                               "Number of services with a Local traffic policy and no endpoints",
                               ["traffic_policy", "ip_family"], registry=r)
        self.conntrack_deleted = Counter(
            "kubeproxy_conntrack_reconciler_deleted_entries_total",
            "Cumulative conntrack flows deleted by conntrack reconciler", fam,
            registry=r).labels(ip_family)
        self.healthz_total = Counter("kubeproxy_proxy_healthz_total",
                                     "Cumulative proxy healthz HTTP status", ["code"], registry=r)
        self.livez_total = Counter("kubeproxy_proxy_livez_total",
                                   "Cumulative proxy livez HTTP status", ["code"], registry=r)

    def set_rules(self, total: dict[str, int], written: dict[str, int]) -> None:
        for table, count in total.items():
            self._rules_total.labels(table, self.ip_family).set(count)
        for table, count in written.items():
            self._rules_last.labels(table, self.ip_family).set(count)

    def set_no_local_endpoints(self, internal: int, external: int) -> None:
        self._no_local.labels("internal", self.ip_family).set(internal)
        self._no_local.labels("external", self.ip_family).set(external)

    def exposition(self) -> bytes:
        """The Prometheus text format of this proxier's metrics.

        prometheus_client adds a `*_created` series per counter and histogram;
        kube-proxy (Go client) has none, so they are left out.
        """
        lines = generate_latest(self.registry).decode().splitlines(keepends=True)
        return "".join(line for line in lines if not _is_created(line)).encode()


def _is_created(line: str) -> bool:
    if line.startswith("#"):
        parts = line.split(" ", 3)
        return len(parts) > 2 and parts[2].endswith("_created")
    return line.split("{", 1)[0].split(" ", 1)[0].endswith("_created")


def metrics_server(metrics: ProxyMetrics, mode: str, sock: socket.socket) -> HttpServer:
    """kube-proxy's metrics server (default 127.0.0.1:10249): /metrics, /healthz, /proxyMode.

    Call .start() on the result.
    """
    return HttpServer({
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics.exposition(), {}),
        "/healthz": lambda: (200, "text/plain; charset=utf-8", b"ok", {}),
        "/proxyMode": lambda: (200, "text/plain; charset=utf-8", mode.encode(), {}),
    }, sock)
