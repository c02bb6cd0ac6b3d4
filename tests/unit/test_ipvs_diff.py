"""IPVS mode's diff (current vs desired) and its backend's sync flow, with a fake kernel."""

from __future__ import annotations

import dataclasses

import pytest

from netlab.errors import KernelError
from netlab.proxy.changes import ChangeTracker, Snapshot
from netlab.proxy.iptables.render import JumpRule
from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.backend import IpvsBackend, sysctls
from netlab.proxy.ipvs.diff import KernelState, Plan, diff, draining
from netlab.proxy.ipvs.render import (
    JUMP_RULES,
    Desired,
    NodeConfig,
    Real,
    VirtualServer,
    VSKey,
    render,
)
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service

NODE = NodeConfig("node-a", ("192.168.10.2",))
LOCAL = ("192.168.10.2",)


def objects(eps: list[str], protocol: str = "TCP", **spec) -> list[dict]:
    return [service("ns", "web", "10.96.0.20", [port("p", 80, 8080, protocol=protocol)], **spec),
            endpoint_slice("ns", "web", [endpoint(ip) for ip in eps],
                           [("p", 8080, protocol)])]


def desired_for(eps: list[str], protocol: str = "TCP", **spec) -> Desired:
    tracker = ChangeTracker("node-a")
    for obj in objects(eps, protocol, **spec):
        tracker.update(obj["kind"], "ADDED", obj)
    return render(tracker.snapshot(), NODE, LOCAL)


KEY = ("TCP", "10.96.0.20", 80)


def applied(desired: Desired) -> KernelState:
    """The kernel after a sync from scratch."""
    return diff(KernelState(), desired)[1]


def test_from_nothing_everything_is_added_and_the_state_is_the_desired_one():
    desired = desired_for(["10.244.1.2", "10.244.2.2"])
    plan, after = diff(KernelState(), desired)
    assert [str(vs) for vs in plan.add_services] == ["TCP  10.96.0.20:80 rr"]
    assert [real for _, real in plan.add_reals] == [("10.244.1.2", 8080), ("10.244.2.2", 8080)]
    assert plan.bind == ("10.96.0.20",)
    assert (n.CLUSTER_IP, "10.96.0.20,tcp:80") in plan.ipset_add
    assert (n.IPVS_IPS, "10.96.0.20") in plan.ipset_add
    assert not plan.delete_services and not plan.delete_reals and not plan.unbind
    assert after.reals == {KEY: {("10.244.1.2", 8080): 1, ("10.244.2.2", 8080): 1}}
    assert after.bound == desired.bound and after.ipsets == desired.ipsets


def test_nothing_changed_means_no_kernel_request():
    desired = desired_for(["10.244.1.2"])
    plan, after = diff(applied(desired), desired)
    assert len(plan) == 0 and plan == Plan()
    assert after == applied(desired)


def test_a_removed_tcp_endpoint_drains_at_weight_zero_then_goes():
    before = applied(desired_for(["10.244.1.2", "10.244.2.2"]))
    now = desired_for(["10.244.1.2"])
    gone = (KEY, ("10.244.2.2", 8080))
    assert draining(before, now) == {gone}
    plan, after = diff(before, now)
    assert [(str(vs), real, w) for vs, real, w in plan.set_weights] == [
        ("TCP  10.96.0.20:80 rr", ("10.244.2.2", 8080), 0)]
    assert not plan.delete_reals
    assert after.reals[KEY][("10.244.2.2", 8080)] == 0
    # Still connections: nothing more to do; none left: deleted.
    plan, after = diff(after, now)
    assert len(plan) == 0
    plan, after = diff(after, now, drained={gone})
    assert [real for _, real in plan.delete_reals] == [("10.244.2.2", 8080)]
    assert after.reals[KEY] == {("10.244.1.2", 8080): 1}


def test_a_removed_endpoint_without_connections_is_deleted_at_once():
    before = applied(desired_for(["10.244.1.2", "10.244.2.2"]))
    plan, _ = diff(before, desired_for(["10.244.1.2"]), drained={(KEY, ("10.244.2.2", 8080))})
    assert [real for _, real in plan.delete_reals] == [("10.244.2.2", 8080)]
    assert not plan.set_weights


def test_udp_real_servers_are_deleted_at_once():
    before = applied(desired_for(["10.244.1.2", "10.244.2.2"], "UDP"))
    now = desired_for(["10.244.1.2"], "UDP")
    assert draining(before, now) == set()
    plan, _ = diff(before, now)
    assert [real for _, real in plan.delete_reals] == [("10.244.2.2", 8080)]


def test_an_endpoint_back_while_draining_gets_its_weight_back():
    before = diff(applied(desired_for(["10.244.1.2", "10.244.2.2"])),
                  desired_for(["10.244.1.2"]))[1]
    plan, after = diff(before, desired_for(["10.244.1.2", "10.244.2.2"]))
    assert [(real, w) for _, real, w in plan.set_weights] == [(("10.244.2.2", 8080), 1)]
    assert not plan.add_reals
    assert after.reals[KEY][("10.244.2.2", 8080)] == 1


def test_turning_affinity_on_updates_the_virtual_server_in_place():
    before = applied(desired_for(["10.244.1.2"]))
    plan, _ = diff(before, desired_for(["10.244.1.2"], sessionAffinity="ClientIP"))
    assert [str(vs) for vs in plan.update_services] == ["TCP  10.96.0.20:80 rr persistent 10800"]
    assert not plan.add_services and not plan.delete_services and not plan.add_reals


def test_a_deleted_service_loses_its_virtual_server_address_and_set_members():
    before = applied(desired_for(["10.244.1.2"]))
    empty = render(Snapshot({}, {}, frozenset()), NODE, LOCAL)
    plan, after = diff(before, empty)
    assert [str(vs) for vs in plan.delete_services] == ["TCP  10.96.0.20:80 rr"]
    assert not plan.delete_reals  # they go with their virtual server
    assert plan.unbind == ("10.96.0.20",)
    assert set(plan.ipset_del) == {(n.CLUSTER_IP, "10.96.0.20,tcp:80"), (n.IPVS_IPS, "10.96.0.20")}
    assert after == KernelState({}, {}, frozenset(), empty.ipsets)


def test_leftovers_of_an_earlier_run_are_removed():
    current = applied(desired_for(["10.244.1.2"]))
    stale = dataclasses.replace(
        current, services={**current.services,
                           ("UDP", "10.96.9.9", 53): VirtualServer("UDP", "10.96.9.9", 53)},
        bound=frozenset({"10.96.0.20", "10.96.9.9"}))
    plan, _ = diff(stale, desired_for(["10.244.1.2"]))
    assert [vs.key for vs in plan.delete_services] == [("UDP", "10.96.9.9", 53)]
    assert plan.unbind == ("10.96.9.9",)


# -- the backend's flow, on a fake kernel -----------------------------------------------------


class FakeIptables:
    def __init__(self) -> None:
        self.saved = ""
        self.has: set[str] = set()
        self.chains = {("nat", n.KUBE_SERVICES)}

    def save(self, table: str | None = None) -> str:
        return self.saved

    def has_rule(self, rule: JumpRule) -> bool:
        return rule.save_line() in self.has

    def chain_exists(self, table: str, chain: str) -> bool:
        return (table, chain) in self.chains

    def supports_random_fully(self) -> bool:
        return False


class FakeKernel:
    """The IpvsKernel surface the backend uses; the 'kernel' state is a KernelState."""

    def __init__(self) -> None:
        self.iptables = FakeIptables()
        self.ipvs = object()
        self.held = KernelState()
        self.conns: dict[tuple[VSKey, Real], int] = {}
        self.plans: list[Plan] = []
        self.payloads: list[str] = []
        self.reads = 0
        self.asked: list = []
        self.sysctls: dict[str, str] = {name: "0" for name in sysctls(NODE, "6.1.0")}
        self.fail = False
        self.dummy: int | None = 7
        self.desired: Desired | None = None  # what the driver rendered: apply() reaches it

    def ensure_dummy(self) -> int:
        return self.dummy

    def dummy_index(self) -> int | None:
        return self.dummy

    def ensure_sets(self) -> None:
        pass

    def read(self, dummy: int) -> tuple[KernelState, dict]:
        self.reads += 1
        return self.held, self.conns

    def read_addresses(self, dummy: int | None) -> tuple[frozenset[str], tuple[str, ...]]:
        return self.held.bound, LOCAL

    def drained(self, candidates, services) -> set:
        self.asked.append(set(candidates))
        return {c for c in candidates if self.conns.get(c, 0) == 0}

    def apply(self, plan: Plan, dummy: int, payload: str) -> None:
        if self.fail:
            raise KernelError("ipset add failed")
        self.plans.append(plan)
        self.payloads.append(payload)
        assert self.desired is not None
        self.held = diff(self.held, self.desired)[1]

    def read_sysctl(self, name: str) -> str | None:
        return self.sysctls.get(name)

    def write_sysctl(self, name: str, value: str) -> None:
        self.sysctls[name] = value


class Driver:
    """Feeds snapshots to a backend and keeps the fake kernel in step with what it applies."""

    def __init__(self) -> None:
        self.kernel = FakeKernel()
        self.backend = IpvsBackend(self.kernel, NODE)  # type: ignore[arg-type]
        self.tracker = ChangeTracker("node-a")

    def sync(self, eps: list[str], full: bool, **spec) -> Plan:
        for obj in objects(eps, **spec):
            self.tracker.update(obj["kind"], "MODIFIED", obj)
        snap = self.tracker.snapshot()
        self.kernel.desired = render(snap, NODE, LOCAL)
        self.backend.sync(snap, full=full)
        return self.kernel.plans[-1]


def test_setup_sets_kube_proxys_sysctls_and_drops_random_fully_when_unsupported():
    driver = Driver()
    driver.backend.setup()
    assert driver.kernel.sysctls["net.ipv4.vs.conntrack"] == "1"
    assert driver.kernel.sysctls["net.ipv4.vs.expire_nodest_conn"] == "1"
    assert driver.kernel.sysctls["net.ipv4.vs.expire_quiescent_template"] == "1"
    assert driver.kernel.sysctls["net.ipv4.ip_forward"] == "1"
    assert driver.backend.node.random_fully is False


def test_setup_without_ip_vs_sysctls_says_so():
    driver = Driver()
    del driver.kernel.sysctls["net.ipv4.vs.conntrack"]
    with pytest.raises(KernelError, match=r"net.ipv4.vs.conntrack does not exist.*ip_vs"):
        driver.backend.setup()


def test_conn_reuse_mode_is_set_only_on_the_kernels_that_need_it():
    assert "net.ipv4.vs.conn_reuse_mode" in sysctls(NODE, "5.4.0-150-generic")
    assert "net.ipv4.vs.conn_reuse_mode" not in sysctls(NODE, "6.1.0-27-amd64")
    strict = sysctls(dataclasses.replace(NODE, strict_arp=True), "6.1.0")
    assert strict["net.ipv4.conf.all.arp_ignore"] == "1"


def test_full_sync_reads_the_kernel_and_hooks_in_missing_jumps_partial_does_neither():
    driver = Driver()
    plan = driver.sync(["10.244.1.2"], full=True)
    assert driver.kernel.reads == 1 and len(plan.add_services) == 1
    assert driver.kernel.payloads[-1].count("-I ") == len(JUMP_RULES)
    plan = driver.sync(["10.244.1.2", "10.244.2.2"], full=False)
    assert driver.kernel.reads == 1  # the previous sync's state, not a read
    assert [real for _, real in plan.add_reals] == [("10.244.2.2", 8080)]
    assert len(plan) == 1 and "-I " not in driver.kernel.payloads[-1]


def test_hooks_already_there_are_not_inserted_again():
    driver = Driver()
    driver.kernel.iptables.saved = "".join(
        f"*{t}\n" + "".join(j.save_line() + "\n" for j in JUMP_RULES if j.table == t)
        + "COMMIT\n" for t in ("nat", "filter"))
    driver.sync(["10.244.1.2"], full=True)
    assert "-I " not in driver.kernel.payloads[-1]


def test_a_partial_sync_asks_the_kernel_only_about_draining_real_servers():
    driver = Driver()
    driver.sync(["10.244.1.2", "10.244.2.2"], full=True)
    driver.kernel.conns[(KEY, ("10.244.2.2", 8080))] = 3
    plan = driver.sync(["10.244.1.2"], full=False)
    assert driver.kernel.asked == [{(KEY, ("10.244.2.2", 8080))}]
    assert [w for _, _, w in plan.set_weights] == [0]
    driver.kernel.conns.clear()
    plan = driver.sync(["10.244.1.2"], full=False)
    assert [real for _, real in plan.delete_reals] == [("10.244.2.2", 8080)]


def test_a_failed_sync_forgets_the_state_so_the_next_one_reads_the_kernel():
    driver = Driver()
    driver.sync(["10.244.1.2"], full=True)
    driver.kernel.fail = True
    with pytest.raises(KernelError):
        driver.sync(["10.244.1.2", "10.244.2.2"], full=False)
    assert driver.backend.state is None
    driver.kernel.fail = False
    driver.sync(["10.244.1.2", "10.244.2.2"], full=False)
    assert driver.kernel.reads == 2


def test_flushed_when_the_dummy_or_the_nat_chain_is_gone():
    driver = Driver()
    assert driver.backend.flushed() is False  # nothing synced yet
    driver.sync(["10.244.1.2"], full=True)
    assert driver.backend.flushed() is False
    driver.kernel.iptables.chains.clear()
    assert driver.backend.flushed() is True
    driver.kernel.iptables.chains.add(("nat", n.KUBE_SERVICES))
    driver.kernel.dummy = None
    assert driver.backend.flushed() is True


def test_backend_reports_phases_but_no_iptables_rule_counts():
    driver = Driver()
    for obj in objects(["10.244.1.2"]):
        driver.tracker.update(obj["kind"], "ADDED", obj)
    snap = driver.tracker.snapshot()
    driver.kernel.desired = render(snap, NODE, LOCAL)
    result = driver.backend.sync(snap, full=True)
    assert result.rules_total == {}  # kube-proxy's IPVS mode exports none
    assert set(result.phases) == {"read", "render", "apply"}
