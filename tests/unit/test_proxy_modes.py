"""Which proxier a node's agent gets for the lab's proxy mode."""

from __future__ import annotations

import pytest

from netlab.errors import KernelError
from netlab.proxy import modes


def test_iptables_and_nftables_modes_build_their_own_backends():
    for mode in ("iptables", "nftables"):
        proxier = modes.new_proxier_for(mode, "nlt-nft-unused", "node-a", ["192.168.10.2"],
                                        cluster_cidr="10.244.0.0/16", min_sync_period=0,
                                        lock_file="/tmp/unused.lock")
        assert proxier.backend.mode == mode


def test_nftables_mode_gets_the_service_cidr_for_its_unallocated_ip_drop():
    proxier = modes.new_proxier_for("nftables", None, "node-a", ["192.168.10.2"],
                                    service_cidrs=("10.96.0.0/12",))
    assert proxier.backend.node.service_cidrs == ("10.96.0.0/12",)
    assert proxier.backend.node.counters  # the lab's proxier counts, for `proxy rules`


def test_ipvs_is_refused_naming_what_the_kernel_lacks(monkeypatch):
    monkeypatch.setattr(modes, "ipvs_missing", lambda: ["ip_vs (CONFIG_IP_VS is not set)"])
    with pytest.raises(KernelError, match=r"ip_vs and dummy kernel modules.*CONFIG_IP_VS"):
        modes.new_proxier_for("ipvs", None, "node-a", ["192.168.10.2"])


def test_ipvs_missing_reads_modules_and_kernel_config(monkeypatch):
    monkeypatch.setattr(modes, "_module_present", lambda module: module == "dummy")
    monkeypatch.setattr(modes.os.path, "exists", lambda path: False)
    monkeypatch.setattr(modes, "_kernel_config", lambda: {"CONFIG_IP_VS": "m"})
    assert modes.ipvs_missing() == ["ip_vs (a module, CONFIG_IP_VS=m, not loaded: modprobe ip_vs)"]
    monkeypatch.setattr(modes, "_kernel_config", lambda: {"CONFIG_IP_VS": "n"})
    assert modes.ipvs_missing() == ["ip_vs (CONFIG_IP_VS is not set)"]


def test_unknown_mode_is_an_error():
    with pytest.raises(KernelError, match="unknown proxy mode 'userspace'"):
        modes.check_mode("userspace")


def test_ipvs_mode_builds_the_ipvs_backend_where_the_kernel_has_it(monkeypatch):
    monkeypatch.setattr(modes, "ipvs_missing", lambda: [])
    modes.check_mode("ipvs")
    proxier = modes.new_proxier_for("ipvs", "nlt-ipvs-unused", "node-a", ["192.168.10.2"],
                                    ipvs_scheduler="lc", cluster_cidr="10.244.0.0/16",
                                    min_sync_period=0, lock_file="/tmp/unused.lock")
    assert proxier.backend.mode == "ipvs"
    assert proxier.backend.node.scheduler == "lc"
    assert proxier.backend.node.cluster_cidr == "10.244.0.0/16"
