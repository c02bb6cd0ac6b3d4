"""Current IPVS state vs desired: the changes one sync makes, and nothing else.

Pure. kube-proxy's IPVS proxier asks the kernel for each virtual server and
its real servers and changes only what differs (syncService, syncEndpoint,
syncIPSetEntries, the dummy's addresses, cleanLegacyService); `diff` is that
comparison done once over the whole state, so the kernel adapter can send the
changes in a few batches.

Graceful termination, as kube-proxy's graceful_termination.go: a TCP real
server that is no longer wanted first gets weight 0 (no new connections) and
is deleted once its active and inactive connections are gone; UDP and SCTP
real servers are deleted at once (`expire_nodest_conn` ends their flows).
kube-proxy re-checks the draining ones every minute; here every sync does
(at least every syncPeriod), asking the kernel only about those.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from netlab.proxy.ipvs.render import Desired, Real, VirtualServer, VSKey

DELETE_AT_ONCE = frozenset({"UDP", "SCTP"})
WEIGHT = 1  # kube-proxy gives every real server weight 1


@dataclass(frozen=True)
class KernelState:
    """What the kernel holds of ours: read on full syncs, carried between partial ones."""

    services: Mapping[VSKey, VirtualServer] = field(default_factory=dict)
    reals: Mapping[VSKey, Mapping[Real, int]] = field(default_factory=dict)  # -> weight
    bound: frozenset[str] = frozenset()  # addresses on kube-ipvs0
    ipsets: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Kernel changes, grouped by kind; the adapter applies them in a safe order."""

    add_services: tuple[VirtualServer, ...] = ()
    update_services: tuple[VirtualServer, ...] = ()  # same key, other scheduler/flags/timeout
    delete_services: tuple[VirtualServer, ...] = ()
    add_reals: tuple[tuple[VirtualServer, Real], ...] = ()
    set_weights: tuple[tuple[VirtualServer, Real, int], ...] = ()
    delete_reals: tuple[tuple[VirtualServer, Real], ...] = ()
    bind: tuple[str, ...] = ()
    unbind: tuple[str, ...] = ()
    ipset_add: tuple[tuple[str, str], ...] = ()  # (set, member)
    ipset_del: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        """How many kernel requests the plan is."""
        return sum(len(getattr(self, f)) for f in self.__dataclass_fields__)


def draining(current: KernelState, desired: Desired) -> set[tuple[VSKey, Real]]:
    """Real servers that must go but may still carry connections (TCP ones).

    The adapter asks the kernel which of these have none left (`drained`).
    """
    out = set()
    for key, reals in current.reals.items():
        if key[0] in DELETE_AT_ONCE or key not in desired.services:
            continue
        wanted = desired.reals.get(key, frozenset())
        out.update((key, real) for real in reals if real not in wanted)
    return out


def diff(current: KernelState, desired: Desired,
         drained: Collection[tuple[VSKey, Real]] = ()) -> tuple[Plan, KernelState]:
    """The changes from `current` to `desired`, and the state once they are applied.

    `drained`: draining real servers without connections, deleted now; the
    other draining ones keep (or get) weight 0.
    """
    add_services, update_services, delete_services = [], [], []
    add_reals: list[tuple[VirtualServer, Real]] = []
    set_weights: list[tuple[VirtualServer, Real, int]] = []
    delete_reals: list[tuple[VirtualServer, Real]] = []
    after_reals: dict[VSKey, dict[Real, int]] = {}
    for key, vs in desired.services.items():
        old = current.services.get(key)
        if old is None:
            add_services.append(vs)
        elif old != vs:
            update_services.append(vs)
        have = current.reals.get(key, {}) if old is not None else {}
        wanted = desired.reals[key]
        kept = after_reals[key] = {}
        for real in sorted(wanted):
            weight = have.get(real)
            if weight is None:
                add_reals.append((vs, real))
            elif weight != WEIGHT:  # draining before, wanted again; or changed by hand
                set_weights.append((vs, real, WEIGHT))
            kept[real] = WEIGHT
        for real in sorted(set(have) - wanted):
            if key[0] in DELETE_AT_ONCE or (key, real) in drained:
                delete_reals.append((vs, real))
            else:
                if have[real] != 0:
                    set_weights.append((vs, real, 0))
                kept[real] = 0
    for key in sorted(set(current.services) - set(desired.services)):
        delete_services.append(current.services[key])  # its real servers go with it
    ipset_add: list[tuple[str, str]] = []
    ipset_del: list[tuple[str, str]] = []
    for name, members in desired.ipsets.items():
        have_members = current.ipsets.get(name, frozenset())
        ipset_add += [(name, m) for m in sorted(members - have_members)]
        ipset_del += [(name, m) for m in sorted(have_members - members)]
    plan = Plan(tuple(add_services), tuple(update_services), tuple(delete_services),
                tuple(add_reals), tuple(set_weights), tuple(delete_reals),
                tuple(sorted(desired.bound - current.bound)),
                tuple(sorted(current.bound - desired.bound)), tuple(ipset_add), tuple(ipset_del))
    after = KernelState(dict(desired.services), after_reals, desired.bound, dict(desired.ipsets))
    return plan, after
