"""VM tier benchmark (issue 6): guest boot time and command round trip, TCG by default.

boot      One guest (768 MiB, 1 vCPU, no nic), timed from QEMU's start to the guest
          agent's first answer (kernel, initramfs, 9p root, Python agent), --boots
          times, one after the other. Then three guests on one L2, started together and
          timed until the last answers (what tests/vm's cluster fixture does).
exec      `true` in the guest through the command channel (host -> virtio-serial ->
          agent -> fork/exec -> exit status back), --execs times; and `python3 -c pass`
          and `python3 -m netlab --version` (the interpreter and the package read over
          9p), a few times each.

Run as root from the repository, under the benchmark lock (it keeps both cores busy):

    flock /tmp/knetlab-bench.lock python3 scripts/bench_vm.py --boots 5 --execs 50

KNETLAB_VM_ACCEL=kvm measures KVM instead. Guests and their L2 namespace are named
bvm-*; every one is stopped and removed before the script exits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netlab.kernel import netns  # noqa: E402
from netlab.lab.vm import machine, network  # noqa: E402
from netlab.lab.vm.kernel import find_kernel  # noqa: E402
from netlab.lab.vm.machine import VirtualMachine, VmConfig  # noqa: E402
from netlab.lab.vm.qemu import Nic, accel_from_env  # noqa: E402


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (f"median {statistics.median(ordered):.3f}s  p90 {p90:.3f}s  "
            f"min {ordered[0]:.3f}s  max {ordered[-1]:.3f}s  (n={len(ordered)})")


def single_boots(base: str, count: int) -> tuple[list[float], VirtualMachine]:
    """Boot `count` guests one after the other; the last one stays up for the exec runs."""
    times = []
    guest = None
    for i in range(count):
        if guest is not None:
            guest.shutdown()
        guest = VirtualMachine(VmConfig(f"bvm-single{i}", os.path.join(base, f"single{i}"),
                                        die_with_parent=True))
        started = time.monotonic()
        guest.boot(300)
        times.append(time.monotonic() - started)
    assert guest is not None
    return times, guest


def exec_times(guest: VirtualMachine, argv: list[str], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        guest.run(argv, 120, check=True)
        times.append(time.monotonic() - started)
    return times


def cluster_boot(base: str, size: int) -> float:
    l2 = f"bvm-l2-{os.getpid()}"
    created = netns.prepare_run_dir()
    guests: list[VirtualMachine] = []
    try:
        network.create_bridge_netns(l2, "192.168.60.1", 24)
        for i in range(size):
            network.add_tap(l2, f"tap{i + 1}")
            nic = Nic(f"tap{i + 1}", network.mac_for(f"bvm{i}"), f"192.168.60.{11 + i}/24",
                      "192.168.60.1")
            guests.append(VirtualMachine(VmConfig(f"bvm-node{i + 1}",
                                                  os.path.join(base, f"node{i}"), nic=nic,
                                                  netns=l2, die_with_parent=True)))
        started = time.monotonic()
        machine.boot_all(guests, 600)
        elapsed = time.monotonic() - started
        guests[0].run(["ping", "-c", "1", "-W", "5", guests[-1].ip or ""], 30, check=True)
        return elapsed
    finally:
        for guest in guests:
            guest.shutdown()
        netns.delete(l2)
        if created:
            netns.release_run_dir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--execs", type=int, default=50)
    parser.add_argument("--cluster", type=int, default=3, help="guests booted together")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    problem = machine.preflight()
    if problem:
        sys.exit(problem)
    print(f"kernel {find_kernel().version}, accelerator {accel_from_env()}, "
          f"{os.cpu_count()} host cores")
    with tempfile.TemporaryDirectory(prefix="bvm-") as base:
        boots, guest = single_boots(base, args.boots)
        try:
            print(f"boot, one guest:            {summary(boots)}")
            print(f"exec `true`:                {summary(exec_times(guest, ['true'], args.execs))}")
            print("exec `python3 -c pass`:     "
                  f"{summary(exec_times(guest, ['python3', '-c', 'pass'], 5))}")
            print("exec `python3 -m netlab --version`: "
                  f"{summary(exec_times(guest, ['python3', '-m', 'netlab', '--version'], 3))}")
        finally:
            guest.shutdown()
        if args.cluster:
            print(f"boot, {args.cluster} guests together: "
                  f"{cluster_boot(base, args.cluster):.1f}s until the last answers")


if __name__ == "__main__":
    main()
