"""The iptables mode as a proxier backend: read what is there, render, restore once.

Per sync, at most three processes: `iptables-save` (only when stale chains
must be found or hooks checked), `iptables-legacy-restore` with the whole
payload, and `iptables -C` only for a hook that looks missing in a table that
was not flushed (a guard against duplicate hooks should the saved spelling
ever differ from ours). The hooks (§1.1) and canary chains ride in the same
restore as the rules, so a full sync is one atomic apply per table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from netlab.errors import KernelError
from netlab.proxy.backend import BackendResult
from netlab.proxy.changes import Snapshot
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.iptables.kernel import IptablesKernel, SavedTable, parse_save
from netlab.proxy.iptables.names import KUBE_PROXY_CANARY
from netlab.proxy.iptables.render import (
    CANARY_TABLES,
    JumpRule,
    NodeConfig,
    RenderResult,
    draft,
    finish,
    is_large_cluster,
    jump_rules,
)
from netlab.proxy.proxier import Proxier

log = logging.getLogger(__name__)

ROUTE_LOCALNET = "net.ipv4.conf.all.route_localnet"
TCP_BE_LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"


class IptablesBackend:
    """kube-proxy's iptables proxier minus the parts every mode shares."""

    mode = "iptables"

    def __init__(self, kernel: IptablesKernel, node: NodeConfig, *, sync_period: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kernel = kernel
        self.node = node
        self.sync_period = sync_period
        self._clock = clock
        self._last_cleanup: float | None = None
        self.last_render: RenderResult | None = None

    def setup(self) -> None:
        if self.node.localhost_nodeports:
            # NodePorts on 127.0.0.1 need martian local routing (CVE-2020-8558 is
            # why KUBE-FIREWALL drops what should not use it).
            self.kernel.write_sysctl(ROUTE_LOCALNET, "1")
        liberal = self.kernel.read_sysctl(TCP_BE_LIBERAL) not in (None, "0")
        self.node = dataclasses.replace(self.node, conntrack_tcp_liberal=liberal,
                                        random_fully=self.node.random_fully
                                        and self.kernel.supports_random_fully())

    def sync(self, snapshot: Snapshot, *, full: bool) -> BackendResult:
        now = self._clock()
        # kube-proxy reads the nat table for stale chains on every sync, except in
        # large clusters, where iptables-save is slow: then once per syncPeriod.
        cleanup = full or not is_large_cluster(snapshot) or self._last_cleanup is None \
            or now - self._last_cleanup > self.sync_period
        existing: set[str] | None = None
        missing: list[JumpRule] = []
        canaries = False
        phases: dict[str, float] = {}
        # iptables-save runs in its own process while this one renders.
        pending = self.kernel.start_save(None if full else "nat") if cleanup else None
        try:
            body = draft(snapshot, self.node, full=full, track_chains=cleanup)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(KernelError):
                    pending()  # reap the child
            raise
        rendered = self._clock()
        phases["render"] = rendered - now
        if pending is not None:
            tables = parse_save(pending())
            existing = tables.get("nat", SavedTable()).chains
            if full:
                flushed = {t for t in CANARY_TABLES
                           if KUBE_PROXY_CANARY not in tables.get(t, SavedTable()).chains}
                canaries = bool(flushed)
                missing = [j for j in jump_rules(self.node)
                           if j.save_line() not in tables.get(j.table, SavedTable()).builtin_rules
                           and (j.table in flushed or not self.kernel.has_rule(j))]
            phases["read"] = self._clock() - rendered  # beyond what rendering hid
        read = self._clock()
        result = finish(body, existing_nat_chains=existing, insert_jumps=missing,
                        canaries=canaries)
        applying = self._clock()
        phases["render"] += applying - read
        self.kernel.restore(result.payload)
        phases["apply"] = self._clock() - applying
        if cleanup:
            self._last_cleanup = now
        self.last_render = result
        if missing:
            log.info("inserted %d jump rules into built-in chains", len(missing))
        return BackendResult(
            rules_written={"filter": result.filter_rules, "nat": result.nat_rules},
            rules_total={"filter": result.filter_rules, "nat": result.nat_rules_total},
            no_local_internal=result.no_local_internal,
            no_local_external=result.no_local_external,
            large_cluster=result.large_cluster,
            phases=phases,
        )

    def flushed(self) -> bool:
        return not self.kernel.canaries_present()


def new_proxier(namespace: str | None, node_name: str, node_ips: Sequence[str], *,
                cluster_cidr: str | None = "10.244.0.0/16", min_sync_period: float = 1.0,
                sync_period: float = 30.0, full_sync_period: float | None = None,
                masquerade_bit: int = 14, localhost_nodeports: bool = True,
                lock_file: str | None = None) -> Proxier:
    """A kube-proxy in iptables mode for one node, wired the way the node agent needs it.

    `namespace` is the node's network namespace (None: the process's own, for
    agents running inside a VM). Feed it with `on_event`/`on_synced`, then
    `start()`; `serve()` exposes :10249 and :10256 inside the namespace.
    """
    node = NodeConfig(node_name, tuple(node_ips), cluster_cidr=cluster_cidr,
                      masquerade_bit=masquerade_bit, localhost_nodeports=localhost_nodeports)
    kernel = IptablesKernel(namespace, lock_file=lock_file)
    backend = IptablesBackend(kernel, node, sync_period=sync_period)
    return Proxier(backend, node_name, min_sync_period=min_sync_period,
                   sync_period=sync_period, full_sync_period=full_sync_period,
                   conntrack=ConntrackReconciler(namespace), namespace=namespace)
