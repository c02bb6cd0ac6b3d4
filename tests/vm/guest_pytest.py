"""Run a pytest selection inside a guest and read back what each test did.

The guest sees the checkout at the same path and runs the host's interpreter,
so a test module written for a namespace lab runs unchanged on the guest's
kernel. The guest's pytest writes a JUnit report into its /tmp; the host reads
it back, so a failure names the guest test and its message, not just an exit
code. The output streams into a log on the host as it comes (TCG is slow).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from netlab.lab.vm.machine import VirtualMachine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What kube-proxy's IPVS mode and a lab need of the guest kernel, loaded up front:
# later loads would happen from inside a node namespace, on first use.
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "dummy", "br_netfilter",
                "nf_conntrack", "ip_set", "xt_set", "xt_physdev", "xt_addrtype", "vxlan")


@dataclass(frozen=True)
class Outcome:
    test: str  # the guest's test id (file::name[param])
    result: str  # passed, failed, error, skipped, xfailed
    message: str


def load_modules(vm: VirtualMachine) -> None:
    vm.sh("modprobe -a " + " ".join(IPVS_MODULES), timeout=120)


def run_pytest(vm: VirtualMachine, args: list[str], timeout: float, log: str,
               env: dict[str, str] | None = None) -> tuple[int, list[Outcome]]:
    """pytest `args` in the guest, from the checkout; (exit code, one Outcome per test)."""
    report = f"/tmp/guest-pytest-{os.getpid()}-{abs(hash(tuple(args))) % 10**8}.xml"
    result = vm.run(["python3", "-m", "pytest", *args, "-q", "-rs", "-p", "no:cacheprovider",
                     f"--junitxml={report}"], timeout, cwd=REPO, log=log,
                    env={"PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    xml = vm.run(["cat", report], check=True).stdout
    return result.rc, outcomes(xml)


def outcomes(xml: str) -> list[Outcome]:
    out = []
    for case in ET.fromstring(xml).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        result, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                result, message = ("failed" if child.tag == "failure" else "error",
                                   (child.get("message") or "")[:500])
            elif child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                result, message = ("xfailed" if xfail else "skipped", child.get("message") or "")
        out.append(Outcome(name, result, message))
    return out


def summary(found: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in found:
        counts[outcome.result] = counts.get(outcome.result, 0) + 1
    return counts
