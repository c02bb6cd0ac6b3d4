"""The nftables mode as a proxier backend: render the transaction, apply it with one `nft -f`.

Per sync: on a full sync one `nft -j -t list` of our chains and sets (to find
what an earlier run left behind and whether the base chains are right), then
the transaction. A partial sync lists nothing: the table is kube-proxy's alone,
so what the last successful sync wrote is what it holds. Chains that went stale
are deleted a second after they were flushed, by a small transaction of their
own before the sync's, as kube-proxy does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from netlab.errors import KernelError
from netlab.proxy.backend import BackendResult
from netlab.proxy.changes import Snapshot
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.nftables import names
from netlab.proxy.nftables.kernel import Listed, NftKernel
from netlab.proxy.nftables.render import (
    BASE_CHAINS,
    NodeConfig,
    RenderResult,
    TableState,
    cleanup,
    render,
)
from netlab.proxy.proxier import Proxier

log = logging.getLogger(__name__)

MIN_NFT = (1, 0, 1)  # older nft parse the whole ruleset, other tables' rules included


class NftablesBackend:
    """kube-proxy's nftables proxier minus the parts every mode shares."""

    mode = "nftables"

    def __init__(self, kernel: NftKernel, node: NodeConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kernel = kernel
        self.node = node
        self._clock = clock
        self.state = TableState()
        self.last_render: RenderResult | None = None
        self.cleanup_failures = 0  # kube-proxy's nftables_cleanup_failures_total

    def setup(self) -> None:
        version = self.kernel.version()
        if version < MIN_NFT:
            raise KernelError(f"nftables mode needs nft >= {'.'.join(map(str, MIN_NFT))}, "
                              f"found {'.'.join(map(str, version))}")

    def sync(self, snapshot: Snapshot, *, full: bool) -> BackendResult:
        phases: dict[str, float] = {}
        start = self._clock()
        self._delete_stale_chains(start)
        previous = self.state
        if full:
            previous = _with_listing(previous, self.kernel.list_objects())
        listed = self._clock()
        phases["read"] = listed - start
        result = render(snapshot, self.node, previous, full=full, now=start)
        rendered = self._clock()
        phases["render"] = rendered - listed
        if result.text:
            self.kernel.apply(result.text)
        phases["apply"] = self._clock() - rendered
        self.state = result.state
        self.last_render = result
        return BackendResult(
            no_local_internal=result.no_local_internal,
            no_local_external=result.no_local_external,
            phases=phases,
        )

    def _delete_stale_chains(self, now: float) -> None:
        text, after = cleanup(self.state, now)
        if not text:
            return
        try:
            self.kernel.apply(text)
        except KernelError as exc:
            # Not fatal: the chains are empty and unreferenced; try again next sync.
            self.cleanup_failures += 1
            log.warning("could not delete stale chains; will retry: %s", exc)
            return
        self.state = after

    def flushed(self) -> bool:
        """True if our table vanished (e.g. `nft flush ruleset`) after we had written it.

        kube-proxy's nftables mode has no canary: the table is private. A chain
        flushed by hand inside it goes unnoticed until the next full sync.
        """
        return self.state.base_chains_ok and not self.kernel.table_exists()


def _with_listing(state: TableState, listed: Listed | None) -> TableState:
    """The state a full sync starts from: per-service objects as the kernel has them."""
    if listed is None:
        return dataclasses.replace(state, chains=frozenset(), affinity_sets=frozenset(),
                                   stale_since={}, base_chains_ok=False)
    chains = frozenset(c for c in listed.chains if names.is_service_chain(c))
    # Re-create the base chains only if one is missing or hooked in differently:
    # kube-proxy re-creates them once per start, which also moves them to the end
    # of `nft list`, so a restarted proxy would not list the table it found.
    base_ok = all(listed.chains.get(name) == (kind, hook, priority)
                  for name, kind, hook, priority in BASE_CHAINS)
    return dataclasses.replace(
        state, chains=chains,
        affinity_sets=frozenset(s for s in listed.sets if names.is_affinity_set(s)),
        stale_since={c: t for c, t in state.stale_since.items() if c in chains},
        base_chains_ok=base_ok)


def new_proxier(namespace: str | None, node_name: str, node_ips: Sequence[str], *,
                cluster_cidr: str | None = "10.244.0.0/16", min_sync_period: float = 1.0,
                sync_period: float = 30.0, full_sync_period: float | None = None,
                masquerade_bit: int = 14, localhost_nodeports: bool = True,
                lock_file: str | None = None,
                service_cidrs: Sequence[str] = ("10.96.0.0/12",),
                counters: bool = True) -> Proxier:
    """A kube-proxy in nftables mode for one node; the iptables `new_proxier`'s signature.

    `localhost_nodeports` and `lock_file` are accepted for that symmetry and
    ignored: nftables mode has no localhost NodePorts (KEP-3866) and no xtables
    lock (the table is private). `service_cidrs` feeds the drop rule for
    unallocated ClusterIPs. `counters` adds a `counter` to every rule so
    `knetlab proxy rules` and traces can show which rules packets took;
    kube-proxy itself writes none.
    """
    del localhost_nodeports, lock_file
    node = NodeConfig(node_name, tuple(node_ips), cluster_cidr=cluster_cidr,
                      service_cidrs=tuple(service_cidrs), masquerade_bit=masquerade_bit,
                      counters=counters)
    backend = NftablesBackend(NftKernel(namespace), node)
    return Proxier(backend, node_name, min_sync_period=min_sync_period,
                   sync_period=sync_period, full_sync_period=full_sync_period,
                   conntrack=ConntrackReconciler(namespace), namespace=namespace)
