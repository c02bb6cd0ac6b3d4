"""The iptables mode as a proxier backend: read what is there, render, restore once.

Per sync, at most three processes: `iptables-save` (only when stale chains
must be found or hooks checked), `iptables-legacy-restore` with the whole
payload, and `iptables -C` only for a hook that looks missing in a table that
was not flushed (a guard against duplicate hooks should the saved spelling
ever differ from ours). The hooks (§1.1) and canary chains ride in the same
restore as the rules, so a full sync is one atomic apply per table.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from netlab.proxy.backend import BackendResult
from netlab.proxy.changes import Snapshot
from netlab.proxy.iptables.kernel import IptablesKernel, SavedTable, parse_save
from netlab.proxy.iptables.names import KUBE_PROXY_CANARY
from netlab.proxy.iptables.render import (
    CANARY_TABLES,
    JumpRule,
    NodeConfig,
    RenderResult,
    is_large_cluster,
    jump_rules,
    render,
)

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
        if cleanup:  # always on full syncs
            tables = parse_save(self.kernel.save() if full else self.kernel.save("nat"))
            existing = tables.get("nat", SavedTable()).chains
            if full:
                flushed = {t for t in CANARY_TABLES
                           if KUBE_PROXY_CANARY not in tables.get(t, SavedTable()).chains}
                canaries = bool(flushed)
                missing = [j for j in jump_rules(self.node)
                           if j.save_line() not in tables.get(j.table, SavedTable()).builtin_rules
                           and (j.table in flushed or not self.kernel.has_rule(j))]
            phases["read"] = self._clock() - now
        started = self._clock()
        result = render(snapshot, self.node, full=full, existing_nat_chains=existing,
                        insert_jumps=missing, canaries=canaries)
        rendered = self._clock()
        phases["render"] = rendered - started
        self.kernel.restore(result.payload)
        phases["apply"] = self._clock() - rendered
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
