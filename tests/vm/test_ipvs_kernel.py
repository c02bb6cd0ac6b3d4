"""IPVS mode's kernel adapter against a real IPVS, inside a guest with a distribution kernel.

Runs tests/integration/test_proxy_ipvs_netns.py in the guest, where ip_vs and
dummy exist, so none of it is skipped: virtual and real servers programmed over
netlink and read back with pyroute2, diffs that change only what changed,
graceful removal, kube-ipvs0 and its addresses, the ipsets and iptables rules,
and real traffic through them (ClusterIP, NodePort, hairpin, UDP, affinity).
"""

from __future__ import annotations

from netlab.lab.vm.machine import VirtualMachine
from tests.vm.guest_pytest import load_modules, run_pytest, summary

MODULE = "tests/integration/test_proxy_ipvs_netns.py"


def test_ipvs_kernel_adapter_and_traffic_in_the_guest(vm: VirtualMachine, tmp_path) -> None:
    load_modules(vm)
    log = str(tmp_path / "guest-pytest.log")
    rc, found = run_pytest(vm, [MODULE], timeout=1800, log=log)
    bad = [f"{o.test}: {o.result}: {o.message}" for o in found
           if o.result not in ("passed",) and "this kernel has IPVS" not in o.message]
    assert not bad, "\n".join(bad) + f"\n(guest output: {log})"
    counts = summary(found)
    # Everything ran: only the one test about kernels *without* IPVS skips itself.
    assert counts.get("passed", 0) >= 18 and counts.get("skipped", 0) == 1, counts
    assert rc == 0
