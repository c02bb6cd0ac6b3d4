"""The Service e2e tests in IPVS mode, inside a guest with a distribution kernel.

tests/integration/test_services.py runs every test once per proxy mode; on a
host kernel without ip_vs its IPVS run is skipped. Here it runs (`-k ipvs`)
inside a guest: a three-node namespace lab on the guest's kernel, with
kube-proxy's IPVS mode on every node. The mode's known differences from the
other modes are strict expected failures in that file (MODE_DIFFERENCES).
"""

from __future__ import annotations

from netlab.lab.vm.machine import VirtualMachine
from netlab.lab.vm.qemu import accel_from_env
from tests.integration.test_services import MODE_DIFFERENCES, PROXY_INDEPENDENT
from tests.vm.guest_pytest import load_modules, run_pytest, summary

MODULE = "tests/integration/test_services.py"


def test_services_in_ipvs_mode_in_the_guest(vm: VirtualMachine, tmp_path) -> None:
    load_modules(vm)
    log = str(tmp_path / "guest-pytest.log")
    # Under TCG a node's full sync takes seconds: the tests' waits are stretched (only
    # the waits: see TIME_SCALE in the module).
    scale = "4" if accel_from_env() == "tcg" else "1"
    rc, found = run_pytest(vm, [MODULE, "-k", "ipvs"], timeout=3600, log=log,
                           env={"KNETLAB_TEST_TIME_SCALE": scale})
    assert found, f"no test ran (guest output: {log})"
    expected_xfail = {test for test, mode in MODE_DIFFERENCES if mode == "ipvs"}
    bad = []
    for outcome in found:
        name = outcome.test.rsplit("::", 1)[-1].split("[", 1)[0]
        if outcome.result == "xfailed" and name in expected_xfail:
            continue
        if outcome.result == "skipped" and name in PROXY_INDEPENDENT:
            continue
        if outcome.result != "passed":
            bad.append(f"{outcome.test}: {outcome.result}: {outcome.message}")
    assert not bad, "\n".join(bad) + f"\n(guest output: {log})"
    counts = summary(found)
    assert counts.get("xfailed", 0) == len(expected_xfail), counts
    assert rc == 0
