"""How the iptables backend talks to the kernel, with a fake kernel (no root)."""

from __future__ import annotations

from collections.abc import Callable

from netlab.proxy.changes import ChangeTracker, Snapshot
from netlab.proxy.iptables.backend import IptablesBackend
from netlab.proxy.iptables.render import JUMP_RULES, JumpRule, NodeConfig
from tests.unit.proxy_objects import endpoint, endpoint_slice, port, service


class FakeKernel:
    def __init__(self, saved: str = "") -> None:
        self.saved = saved
        self.saves: list[str | None] = []
        self.payloads: list[str] = []
        self.checked: list[str] = []
        self.sysctls: dict[str, str] = {}

    def start_save(self, table: str | None = None) -> Callable[[], str]:
        self.saves.append(table)
        return lambda: self.saved

    def restore(self, payload: str) -> None:
        self.payloads.append(payload)

    def has_rule(self, rule: JumpRule) -> bool:
        self.checked.append(rule.save_line())
        return False

    def read_sysctl(self, name: str) -> str | None:
        return self.sysctls.get(name, "0")

    def write_sysctl(self, name: str, value: str) -> None:
        self.sysctls[name] = value

    def supports_random_fully(self) -> bool:
        return True

    def canaries_present(self) -> bool:
        return "KUBE-PROXY-CANARY" in self.saved


def saved_with_everything() -> str:
    tables = {"mangle": [], "filter": [], "nat": []}
    for jump in JUMP_RULES:
        tables[jump.table].append(jump.save_line())
    return "".join(f"*{t}\n:KUBE-PROXY-CANARY - [0:0]\n" + "".join(r + "\n" for r in rules)
                   + "COMMIT\n" for t, rules in tables.items())


def snapshot(services: int = 1, endpoints: int = 1) -> Snapshot:
    tracker = ChangeTracker("node-a")
    for i in range(services):
        tracker.update("Service", "ADDED", service("ns", f"s{i}", f"10.96.1.{i % 250}",
                                                   [port("p", 80)]))
        tracker.update("EndpointSlice", "ADDED", endpoint_slice(
            "ns", f"s{i}", [endpoint(f"10.244.{i // 250}.{e}") for e in range(endpoints)],
            [("p", 80, "TCP")]))
    return tracker.snapshot()


def test_setup_turns_on_route_localnet_for_localhost_nodeports():
    kernel = FakeKernel()
    IptablesBackend(kernel, NodeConfig("node-a")).setup()
    assert kernel.sysctls["net.ipv4.conf.all.route_localnet"] == "1"


def test_liberal_conntrack_in_the_namespace_drops_the_invalid_rule():
    kernel = FakeKernel()
    kernel.sysctls["net.netfilter.nf_conntrack_tcp_be_liberal"] = "1"
    backend = IptablesBackend(kernel, NodeConfig("node-a"))
    backend.setup()
    backend.sync(snapshot(), full=True)
    assert "INVALID" not in kernel.payloads[-1]


def test_first_full_sync_hooks_everything_in_the_same_restore_without_checks():
    kernel = FakeKernel()
    IptablesBackend(kernel, NodeConfig("node-a")).sync(snapshot(), full=True)
    payload = kernel.payloads[-1]
    assert payload.count("\n-I ") == len(JUMP_RULES)
    assert payload.startswith("*mangle\n:KUBE-PROXY-CANARY - [0:0]\n")
    assert kernel.checked == []  # flushed tables: nothing to double-check
    assert kernel.saves == [None]


def test_full_sync_on_a_hooked_node_inserts_nothing():
    kernel = FakeKernel(saved_with_everything())
    IptablesBackend(kernel, NodeConfig("node-a")).sync(snapshot(), full=True)
    assert "\n-I " not in kernel.payloads[-1] and "*mangle" not in kernel.payloads[-1]
    assert kernel.checked == []


def test_a_hook_missing_from_a_table_that_was_not_flushed_is_double_checked():
    kernel = FakeKernel(saved_with_everything().replace(JUMP_RULES[0].save_line() + "\n", ""))
    IptablesBackend(kernel, NodeConfig("node-a")).sync(snapshot(), full=True)
    assert kernel.checked == [JUMP_RULES[0].save_line()]
    assert kernel.payloads[-1].count("\n-I ") == 1


def test_small_clusters_look_for_stale_chains_on_every_sync():
    kernel = FakeKernel(saved_with_everything())
    backend = IptablesBackend(kernel, NodeConfig("node-a"))
    backend.sync(snapshot(), full=True)
    backend.sync(snapshot(), full=False)
    assert kernel.saves == [None, "nat"]


def test_large_clusters_look_for_stale_chains_once_per_sync_period():
    now = [0.0]
    kernel = FakeKernel(saved_with_everything())
    backend = IptablesBackend(kernel, NodeConfig("node-a"), sync_period=30,
                              clock=lambda: now[0])
    big = snapshot(services=101, endpoints=10)
    backend.sync(big, full=True)
    now[0] = 10
    backend.sync(big, full=False)
    now[0] = 31
    backend.sync(big, full=False)
    assert kernel.saves == [None, "nat"]
    assert set(backend.sync(big, full=False).phases) == {"render", "apply"}
