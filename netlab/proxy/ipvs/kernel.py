"""IPVS mode's kernel adapter: the only place this mode touches the kernel.

Everything happens in one network namespace (None: the process's own, for
agents in a VM): IPVS and ipsets over netlink (netlab.proxy.ipvs.netlink),
the kube-ipvs0 dummy (created with pyroute2) and its addresses, the few
iptables rules through the iptables mode's adapter (iptables-legacy, one
lock file per node), and the sysctls kube-proxy sets. The netlink sockets
are opened inside the namespace on first use and kept: a socket stays in
the namespace it was made in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from netlab.errors import KernelError
from netlab.kernel import commands
from netlab.kernel.rtnl import Rtnl
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.diff import KernelState, Plan
from netlab.proxy.ipvs.netlink import Addresses, Dest, IPSet, Ipvs, NetlinkError, Request, Stats
from netlab.proxy.ipvs.render import Real, VirtualServer, VSKey

LOOPBACK_PREFIX = "127."


def _raise(failures: list[NetlinkError], what: str) -> None:
    if failures:
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise KernelError(f"{what}: " + "; ".join(str(f) for f in failures[:3]) + more)


class IpvsKernel:
    """IPVS, ipsets, kube-ipvs0 and the IPVS mode's iptables rules in one namespace."""

    def __init__(self, netns: str | None, *, lock_file: str | None = None) -> None:
        if netns is not None and not netns:
            raise KernelError("empty network namespace name")
        self.netns = netns
        self.iptables = IptablesKernel(netns, lock_file=lock_file)
        self._ipvs: Ipvs | None = None
        self._ipset: IPSet | None = None
        self._addresses: Addresses | None = None

    def _inside(self) -> contextlib.AbstractContextManager[None]:
        return commands.inside(self.netns)

    @property
    def ipvs(self) -> Ipvs:
        if self._ipvs is None:
            with self._inside():
                self._ipvs = Ipvs.open()
        return self._ipvs

    @property
    def ipset(self) -> IPSet:
        if self._ipset is None:
            with self._inside():
                self._ipset = IPSet.open()
        return self._ipset

    @property
    def addresses(self) -> Addresses:
        if self._addresses is None:
            with self._inside():
                self._addresses = Addresses.open()
        return self._addresses

    def close(self) -> None:
        for sock in (self._ipvs, self._ipset, self._addresses):
            if sock is not None:
                sock.close()
        self._ipvs = self._ipset = self._addresses = None

    # -- kube-ipvs0 -------------------------------------------------------------------------
    def dummy_index(self) -> int | None:
        with self._inside(), Rtnl() as rtnl:
            link = rtnl.link(n.DUMMY_DEVICE)
        return None if link is None else link.index

    def ensure_dummy(self) -> int:
        """kube-ipvs0's link index, creating it (type dummy, left down) if missing.

        Down is enough: an address on any link gets its `local` route, so the
        kernel delivers the service addresses to INPUT, where IPVS waits.
        """
        index = self.dummy_index()
        if index is not None:
            return index
        from pyroute2 import IPRoute

        with self._inside(), IPRoute() as ipr:
            try:
                ipr.link("add", ifname=n.DUMMY_DEVICE, kind="dummy")
            except Exception as exc:  # pyroute2's NetlinkError and friends
                raise KernelError(f"create {n.DUMMY_DEVICE} (type dummy): {exc}") from exc
        index = self.dummy_index()
        if index is None:
            raise KernelError(f"{n.DUMMY_DEVICE} vanished after it was created")
        return index

    def read_addresses(self, dummy: int | None) -> tuple[frozenset[str], tuple[str, ...]]:
        """(addresses on kube-ipvs0, the node's other non-loopback IPv4 addresses)."""
        bound: set[str] = set()
        local: list[str] = []
        for index, address in self.addresses.list():
            if index == dummy:
                bound.add(address)
            elif not address.startswith(LOOPBACK_PREFIX) and address not in local:
                local.append(address)
        return frozenset(bound), tuple(local)

    # -- ipsets -----------------------------------------------------------------------------
    def ensure_sets(self) -> None:
        """Create kube-proxy's ipsets where missing (`ipset create ... -exist`)."""
        ipset = self.ipset
        _raise(ipset.apply([ipset.create(info.name, info.kind) for info in n.IPSETS]),
               "create ipsets")

    def read_sets(self) -> dict[str, frozenset[str]]:
        listed = self.ipset.list()
        return {info.name: listed.get(info.name, ("", frozenset()))[1] for info in n.IPSETS}

    # -- IPVS -------------------------------------------------------------------------------
    def read_ipvs(self) -> tuple[dict[VSKey, VirtualServer], dict[VSKey, list[Dest]]]:
        """Every IPv4 virtual server with its real servers (one dump each)."""
        ipvs = self.ipvs
        services = {vs.key: vs for vs, _ in ipvs.services()}
        return services, {key: ipvs.dests(vs) for key, vs in services.items()}

    def service_stats(self) -> list[tuple[VirtualServer, Stats]]:
        return self.ipvs.services(stats=True)

    def dests(self, vs: VirtualServer) -> list[Dest]:
        """Real servers with their counters (for looking; syncs read without them)."""
        return self.ipvs.dests(vs, stats=True)

    def drained(self, candidates: Collection[tuple[VSKey, Real]],
                services: dict[VSKey, VirtualServer]) -> set[tuple[VSKey, Real]]:
        """Which draining real servers have no active or inactive connection left."""
        out = set()
        for key in {key for key, _ in candidates}:
            idle = {d.real for d in self.ipvs.dests(services[key]) if d.active + d.inactive == 0}
            out.update((k, real) for k, real in candidates if k == key and real in idle)
        return out

    def read(self, dummy: int) -> tuple[KernelState, dict[tuple[VSKey, Real], int]]:
        """What the kernel holds (for a full sync), and connections per real server."""
        services, dests = self.read_ipvs()
        bound, _ = self.read_addresses(dummy)
        reals = {key: {d.real: d.weight for d in found} for key, found in dests.items()}
        conns = {(key, d.real): d.active + d.inactive for key, found in dests.items()
                 for d in found}
        return KernelState(services, reals, bound, self.read_sets()), conns

    # -- applying a plan --------------------------------------------------------------------
    def apply(self, plan: Plan, dummy: int, iptables_payload: str) -> None:
        """Additions first, then the iptables rules, then removals (kube-proxy's order).

        Every step is attempted; failures are collected and raised together at
        the end, naming what failed, so the next (full) sync starts from the
        kernel's real state.
        """
        kinds = {info.name: info.kind for info in n.IPSETS}
        failures: list[NetlinkError] = []
        failures += self._ipvs_apply(self._ipvs_additions(plan))
        addresses = self.addresses
        failures += addresses.apply([addresses.add(dummy, ip) for ip in plan.bind])
        ipset = self.ipset
        sets: list[Request] = [ipset.add(s, kinds[s], m) for s, m in plan.ipset_add]
        sets += [ipset.delete(s, kinds[s], m) for s, m in plan.ipset_del]
        failures += ipset.apply(sets)
        restore_error: KernelError | None = None
        try:
            self.iptables.restore(iptables_payload)
        except KernelError as exc:
            restore_error = exc
        failures += addresses.apply([addresses.delete(dummy, ip) for ip in plan.unbind])
        failures += self._ipvs_apply(self._ipvs_removals(plan))
        if restore_error is not None:
            raise restore_error
        _raise(failures, f"{len(failures)} of {len(plan)} IPVS-mode kernel changes failed")

    def _ipvs_additions(self, plan: Plan) -> list[Request]:
        if not (plan.add_services or plan.update_services or plan.add_reals
                or plan.set_weights):
            return []
        ipvs = self.ipvs
        return ([ipvs.add_service(vs) for vs in plan.add_services]
                + [ipvs.update_service(vs) for vs in plan.update_services]
                + [ipvs.add_real(vs, real, 1) for vs, real in plan.add_reals]
                + [ipvs.set_weight(vs, real, w) for vs, real, w in plan.set_weights])

    def _ipvs_removals(self, plan: Plan) -> list[Request]:
        if not (plan.delete_reals or plan.delete_services):
            return []
        ipvs = self.ipvs
        return ([ipvs.delete_real(vs, real) for vs, real in plan.delete_reals]
                + [ipvs.delete_service(vs) for vs in plan.delete_services])

    def _ipvs_apply(self, requests: list[Request]) -> list[NetlinkError]:
        """A plan without IPVS changes never opens the IPVS socket (ipsets alone need none)."""
        return self.ipvs.apply(requests) if requests else []

    # -- sysctls ----------------------------------------------------------------------------
    def read_sysctl(self, name: str) -> str | None:
        return self.iptables.read_sysctl(name)

    def write_sysctl(self, name: str, value: str) -> None:
        self.iptables.write_sysctl(name, value)


@contextlib.contextmanager
def opened(netns: str | None) -> Iterator[IpvsKernel]:
    """An IpvsKernel whose sockets are closed afterwards (for reads from the CLI, tests)."""
    kernel = IpvsKernel(netns)
    try:
        yield kernel
    finally:
        kernel.close()
