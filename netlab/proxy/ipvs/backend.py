"""The IPVS mode as a proxier backend: render, diff against the kernel, change what differs.

kube-proxy's IPVS proxier has no partial sync: every sync asks the kernel
about every virtual server. Here a full sync (the first, after a failure, and
every full-sync period) reads the kernel: virtual and real servers, the ipsets,
kube-ipvs0's addresses, and iptables-save for the hooks; a partial sync
compares with what the previous successful sync left, which is what the
kernel holds unless someone changed it by hand (the next full sync repairs
that). Either way only the differences are sent, in batches
(netlab.proxy.ipvs.netlink), and the constant iptables rules are restored in
one `iptables-restore --noflush`.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import re
import time
from collections.abc import Callable, Sequence

from netlab.errors import KernelError
from netlab.proxy.backend import BackendResult
from netlab.proxy.changes import Snapshot
from netlab.proxy.conntrack import ConntrackReconciler
from netlab.proxy.iptables.kernel import SavedTable, parse_save
from netlab.proxy.iptables.render import JumpRule
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.diff import KernelState, Plan, diff, draining
from netlab.proxy.ipvs.kernel import IpvsKernel
from netlab.proxy.ipvs.render import (
    JUMP_RULES,
    Desired,
    NodeConfig,
    Real,
    VSKey,
    render,
    with_jumps,
)
from netlab.proxy.proxier import Proxier

log = logging.getLogger(__name__)

BRIDGE_NF_CALL = "net.bridge.bridge-nf-call-iptables"


def sysctls(node: NodeConfig, kernel_release: str) -> dict[str, str]:
    """What kube-proxy's IPVS proxier sets (NewProxier), for this kernel version.

    conn_reuse_mode=0 avoided 1 s connect delays on kernels 4.1 to 5.8
    (kubernetes #70747, #93297); from 5.9 on it is left alone.
    """
    wanted = {"net.ipv4.vs.conntrack": "1"}  # so iptables' NAT and conntrack see IPVS flows
    match = re.match(r"(\d+)\.(\d+)", kernel_release)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if (4, 1) <= version < (5, 9):
        wanted["net.ipv4.vs.conn_reuse_mode"] = "0"
    wanted["net.ipv4.vs.expire_nodest_conn"] = "1"
    wanted["net.ipv4.vs.expire_quiescent_template"] = "1"
    wanted["net.ipv4.ip_forward"] = "1"
    if node.strict_arp:
        wanted["net.ipv4.conf.all.arp_ignore"] = "1"
        wanted["net.ipv4.conf.all.arp_announce"] = "2"
    return wanted


class IpvsBackend:
    """kube-proxy's IPVS proxier minus the parts every mode shares."""

    mode = "ipvs"

    def __init__(self, kernel: IpvsKernel, node: NodeConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kernel = kernel
        self.node = node
        self._clock = clock
        self.state: KernelState | None = None  # None: unknown, read it from the kernel
        self.dummy: int | None = None
        self.last_desired: Desired | None = None
        self.last_plan: Plan | None = None

    def setup(self) -> None:
        self.kernel.ipvs  # noqa: B018 - fails early, with a clear message, without ip_vs
        for name, value in sysctls(self.node, platform.release()).items():
            if self.kernel.read_sysctl(name) is None:
                raise KernelError(f"sysctl {name} does not exist: is ip_vs loaded?")
            if self.kernel.read_sysctl(name) != value:
                self.kernel.write_sysctl(name, value)
        if self.kernel.read_sysctl(BRIDGE_NF_CALL) != "1":
            log.warning("missing br_netfilter or %s=0: traffic between pods on one bridge "
                        "may not be proxied as intended", BRIDGE_NF_CALL)
        if self.node.random_fully and not self.kernel.iptables.supports_random_fully():
            self.node = dataclasses.replace(self.node, random_fully=False)

    def sync(self, snapshot: Snapshot, *, full: bool) -> BackendResult:
        phases: dict[str, float] = {}
        start = self._clock()
        missing: Sequence[JumpRule] = ()
        conns: dict[tuple[VSKey, Real], int] = {}
        try:
            if full or self.state is None or self.dummy is None:
                self.dummy = self.kernel.ensure_dummy()
                self.kernel.ensure_sets()
                current, conns = self.kernel.read(self.dummy)
                missing = self._missing_hooks()
            else:
                current = self.state
            _, local = self.kernel.read_addresses(self.dummy)
            read = self._clock()
            phases["read"] = read - start
            desired = render(snapshot, self.node, local)
            candidates = draining(current, desired)
            if full or self.state is None:
                drained = {c for c in candidates if conns.get(c, 0) == 0}
            else:
                drained = self.kernel.drained(candidates, dict(current.services))
            plan, after = diff(current, desired, drained)
            rendered = self._clock()
            phases["render"] = rendered - read
            self.kernel.apply(plan, self.dummy, with_jumps(desired.iptables, missing))
            phases["apply"] = self._clock() - rendered
        except KernelError:
            self.state = None
            raise
        self.state = after
        self.last_desired = desired
        self.last_plan = plan
        if missing:
            log.info("inserted %d jump rules into built-in chains", len(missing))
        # No rules_total: kube-proxy's IPVS mode does not export iptables rule counts.
        return BackendResult(no_local_internal=desired.no_local_internal,
                             no_local_external=desired.no_local_external, phases=phases)

    def _missing_hooks(self) -> list[JumpRule]:
        """Hooks absent from the built-in chains (`iptables -C` where the spelling differs)."""
        tables = parse_save(self.kernel.iptables.save())
        return [j for j in JUMP_RULES
                if j.save_line() not in tables.get(j.table, SavedTable()).builtin_rules
                and not self.kernel.iptables.has_rule(j)]

    def flushed(self) -> bool:
        """True if kube-ipvs0 or our nat KUBE-SERVICES chain vanished after a sync made them.

        kube-proxy's IPVS mode has no canary: every sync re-checks everything.
        Here a full sync does, and this check catches the common accident
        (tables flushed, the dummy deleted) at the next periodic sync.
        """
        if self.state is None:
            return False
        return self.kernel.dummy_index() is None or \
            not self.kernel.iptables.chain_exists("nat", n.KUBE_SERVICES)


def new_proxier(namespace: str | None, node_name: str, node_ips: Sequence[str], *,
                cluster_cidr: str | None = "10.244.0.0/16", min_sync_period: float = 1.0,
                sync_period: float = 30.0, full_sync_period: float | None = None,
                masquerade_bit: int = 14, localhost_nodeports: bool = True,
                lock_file: str | None = None, scheduler: str = n.DEFAULT_SCHEDULER,
                strict_arp: bool = False) -> Proxier:
    """A kube-proxy in IPVS mode for one node; the iptables `new_proxier`'s signature.

    `localhost_nodeports` is accepted for that symmetry and ignored: IPVS mode
    has no NodePorts on 127.0.0.1 (and does not set route_localnet, since
    kubernetes PR #92938). `lock_file` serialises the node's iptables writers.
    """
    del localhost_nodeports
    node = NodeConfig(node_name, tuple(node_ips), cluster_cidr=cluster_cidr,
                      masquerade_bit=masquerade_bit, scheduler=scheduler,
                      strict_arp=strict_arp)
    backend = IpvsBackend(IpvsKernel(namespace, lock_file=lock_file), node)
    return Proxier(backend, node_name, min_sync_period=min_sync_period,
                   sync_period=sync_period, full_sync_period=full_sync_period,
                   conntrack=ConntrackReconciler(namespace), namespace=namespace)
