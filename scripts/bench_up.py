"""Bring-up benchmark (issue 2): `up` of 3 nodes and N pods against a floor, same run.

For each size N (pods in total, a Deployment of agnhost netexec pods with an
httpGet readiness probe, as in topologies/demo/web.yaml, spread over the two
workers by the scheduler; the lab's DNS addon is off so that N is every pod):

floor  The same kernel objects made with iproute2 alone, as few `ip` processes as
       possible, then removed:
         1. `ip -batch -`            netns add: underlay, 3 nodes, ext, N pods
         2. `ip -n UNDERLAY -batch -` lo up; bridge br-underlay with the gateway;
                                      per machine a veth port into it, eth0 on the
                                      machine's side
         3. `ip -n MACHINE -batch -`  (x4) lo up; eth0 address, up, default route; on
                                      nodes cni0 with the gateway of the node's pod
                                      subnet, and per pod of the node a veth pair
                                      (host end into cni0, up, hairpin on; eth0 in
                                      the pod), both ends at the pod MTU
         4. `ip -n POD -batch -`      (x N) lo up; eth0 address, up, default route
         5. `ip -batch -`            netns del of everything (timed as floor down)
       That is N + 6 `ip` processes, run one after the other.
up     netlab.lab.lifecycle.up with a generated lab file, timed from the call to
       "every pod Ready" (when up returns). Memory: PSS (/proc/PID/smaps_rollup) and
       RSS summed over every process the lab's state dir records, taken right after
       Ready. Per pod = (PSS at N - PSS of the same lab with 0 pods) / N; the 0-pod
       lab runs first in every invocation.
down   netlab.lab.lifecycle.down, timed.
Before the floor and before `up` the script waits until the machine is quiet (at most
15 s): the kernel frees deleted namespaces in the background, and that work would
otherwise land on whichever measurement comes next. On ext4 without a journal it also
waits (after a sync) until the last teardown is a minute old: such a file system does
not reuse a freed inode for a minute (five while its inode table block is unwritten),
and each new file scans past the recently freed ones, so every file the next `up`
makes (five per pod) would pay for the previous lab's teardown, up to a second of
CPU at 300 pods. --back-to-back measures without that wait, as a user running `up`
right after `down` sees it.

Run as root from the repository (results go to results/, which git ignores):

    sudo .venv/bin/python scripts/bench_up.py --sizes 30,300,900

Labs are named bench<N> (never `default`); if a run dies, `knetlab clean --name
bench<N>` removes what it left. A size is skipped when its pods would overflow the
kernel's ARP table, which every namespace on the host shares (netlab/lab/capacity.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netlab.control.apply import apply_objects, bootstrap
from netlab.lab import lifecycle
from netlab.lab.capacity import neighbour_room, too_many_pods
from netlab.lab.cleanup import clean
from netlab.lab.labfile import lab_from_data
from netlab.lab.lifecycle import LabPlan
from netlab.lab.plan import plan_from_lab
from netlab.lab.state import StateDir

REPO = Path(__file__).resolve().parent.parent
FLOOR_PREFIX = "nlb-floor-"
MAX_PODS_PER_SUBNET = 250


# the lab ---------------------------------------------------------------------------------
def deployment(replicas: int) -> dict[str, Any]:
    """topologies/demo/web.yaml's Deployment with `replicas` pods."""
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "netexec",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                "ports": [{"name": "http", "containerPort": 8080},
                          {"name": "udp", "containerPort": 8081, "protocol": "UDP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            }]}},
        },
    }


def subnet_len(pods: int, workers: int = 2) -> int:
    """The default /24 per node while the pods fit, a larger node subnet beyond."""
    per_node = -(-pods // workers)
    length = 24
    while per_node > MAX_PODS_PER_SUBNET * 2 ** (24 - length):
        length -= 1
    return length


def bench_plan(name: str, pods: int, directory: Path) -> LabPlan:
    """The default lab (1 control plane + 2 workers), DNS off, one Deployment of `pods`."""
    manifest = directory / "web.yaml"
    manifest.write_text(yaml.safe_dump(deployment(pods), sort_keys=False))
    data = {"name": name, "network": {"nodeSubnetLen": subnet_len(pods)},
            "dns": {"enabled": False}, "manifests": [manifest.name]}
    return plan_from_lab(lab_from_data(data, source=f"<{name}>", base_dir=directory))


# the floor -------------------------------------------------------------------------------
@dataclass
class FloorScript:
    """Every `ip` invocation of the floor: (namespace or None for the host, batch text)."""

    namespaces: list[str] = field(default_factory=list)
    batches: list[tuple[str | None, list[str]]] = field(default_factory=list)
    check: tuple[str, str] | None = None  # (a pod's netns, its gateway): ping after setup

    def run(self) -> None:
        for ns, lines in self.batches:
            argv = ["ip", "-batch", "-"] if ns is None else ["ip", "-n", ns, "-batch", "-"]
            subprocess.run(argv, input="\n".join(lines) + "\n", text=True, check=True)


def floor_script(plan: LabPlan, pods: int, tag: str) -> FloorScript:
    """The floor's objects for the plan's topology (see module doc), pods split as evenly."""
    script = FloorScript()
    under = f"{FLOOR_PREFIX}{tag}-underlay"
    underlay_len = ipaddress.ip_network(plan.underlay.cidr).prefixlen
    mtu, pod_mtu = plan.underlay.mtu, plan.config.pod_mtu
    machines = [(n.name, n.address, n.role) for n in plan.nodes]
    machines.append(("ext", plan.ext_address, "ext"))
    pod_cidr = ipaddress.ip_network(plan.config.pod_cidr)
    subnets = list(pod_cidr.subnets(new_prefix=plan.config.node_subnet_len))
    workers = [name for name, _, role in machines if role == "worker"]
    per_node = {w: pods // len(workers) + (i < pods % len(workers))
                for i, w in enumerate(workers)}

    machine_ns = {name: f"{FLOOR_PREFIX}{tag}-{name}" for name, _, _ in machines}
    pod_ns: dict[str, list[tuple[str, str, str]]] = {}  # node -> (netns, ip, gateway)
    for i, (name, _, _) in enumerate(m for m in machines if m[2] != "ext"):
        subnet = subnets[i]
        pod_ns[name] = [(f"{FLOOR_PREFIX}{tag}-{name}-p{j}", str(subnet[j + 2]), str(subnet[1]))
                        for j in range(per_node.get(name, 0))]
    script.namespaces = [under, *machine_ns.values(),
                         *(ns for entries in pod_ns.values() for ns, _, _ in entries)]
    script.batches.append((None, [f"netns add {ns}" for ns in script.namespaces]))

    lines = ["link set lo up", f"link add br-underlay mtu {mtu} type bridge",
             f"addr add {plan.underlay.gateway}/{underlay_len} dev br-underlay",
             "link set br-underlay up"]
    for k, (name, _, _) in enumerate(machines, 1):
        lines += [f"link add port{k} mtu {mtu} type veth peer name eth0 netns "
                  f"{machine_ns[name]} mtu {mtu}",
                  f"link set port{k} master br-underlay up"]
    script.batches.append((under, lines))

    for i, (name, address, role) in enumerate(machines):
        lines = ["link set lo up", f"addr add {address}/{underlay_len} dev eth0",
                 "link set eth0 up", f"route add default via {plan.underlay.gateway} dev eth0"]
        if role != "ext":
            subnet = subnets[i]
            lines += [f"link add cni0 mtu {pod_mtu} type bridge",
                      f"addr add {subnet[1]}/{subnet.prefixlen} dev cni0", "link set cni0 up"]
            for j, (ns, _, _) in enumerate(pod_ns[name]):
                veth = f"veth{j:08x}"
                lines += [f"link add {veth} mtu {pod_mtu} type veth peer name eth0 netns {ns} "
                          f"mtu {pod_mtu}",
                          f"link set {veth} master cni0 up",
                          f"link set {veth} type bridge_slave hairpin on"]
        script.batches.append((machine_ns[name], lines))

    prefixlen = plan.config.node_subnet_len
    for entries in pod_ns.values():
        for ns, ip, gateway in entries:
            script.batches.append((ns, ["link set lo up", f"addr add {ip}/{prefixlen} dev eth0",
                                        "link set eth0 up",
                                        f"route add default via {gateway} dev eth0"]))
            script.check = (ns, gateway)
    return script


def delete_namespaces(names: list[str]) -> None:
    """One `ip -batch` of `netns del`, pods first (only names this script made)."""
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    doomed = [n for n in reversed(names) if n in existing]
    if doomed:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in doomed),
                       text=True, check=True)


def run_floor(plan: LabPlan, pods: int) -> dict[str, float]:
    script = floor_script(plan, pods, str(pods))
    try:
        started = time.perf_counter()
        script.run()
        setup = time.perf_counter() - started
        if script.check:  # the last pod reaches its gateway: the floor is a working network
            ns, gateway = script.check
            subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", "-q", gateway],
                           check=True, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        delete_namespaces(script.namespaces)
        teardown = time.perf_counter() - started
    finally:
        delete_namespaces(script.namespaces)
    return {"setup_s": setup, "teardown_s": teardown,
            "ip_processes": len(script.batches) + 1}


# up and down -----------------------------------------------------------------------------
def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, from smaps_rollup."""
    pss = rss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every CPU), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def lab_usage(state: StateDir) -> dict[str, Any]:
    """Memory and CPU time of every live process of the lab, and their sums."""
    per_role = {}
    for proc in state.processes():
        if proc.alive():
            pss, rss = memory_kib(proc.pid)
            per_role[proc.role] = {"pss_kib": pss, "rss_kib": rss,
                                   "cpu_s": round(cpu_seconds(proc.pid), 2)}
    return {key: sum(m[key] for m in per_role.values()) for key in ("pss_kib", "rss_kib")
            } | {"cpu_s": round(sum(m["cpu_s"] for m in per_role.values()), 2),
                 "processes": per_role}


class Phases:
    """When each phase of `up` finished, from its progress reports."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.done: dict[str, float] = {}

    def report(self, phase: str, done: int, total: int) -> None:
        if done >= total and phase not in self.done:
            self.done[phase] = round(time.perf_counter() - self.started, 3)


@contextmanager
def lab_cleaned_on_error(name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        state = StateDir(name)
        if state.exists():
            clean(state)
        raise


def run_lab(plan: LabPlan, timeout: float) -> dict[str, Any]:
    def apply(objects: Any, objs: list[dict[str, Any]]) -> None:
        bootstrap(objects, plan.config)
        apply_objects(objects, objs, plan.config)

    phases = Phases()
    cpu_started, busy_started = time.process_time(), host_busy_seconds()
    with lab_cleaned_on_error(plan.name):
        state = lifecycle.up(plan, apply, phases.report, timeout)
        up_s = time.perf_counter() - phases.started
        driver_cpu_s = time.process_time() - cpu_started
        busy_s = host_busy_seconds() - busy_started
        usage = lab_usage(state)
        arp_entries = neighbour_room()[0]
        started = time.perf_counter()
        lifecycle.down(plan.name)
        down_s = time.perf_counter() - started
    return {"up_s": up_s, "phases_s": phases.done, "down_s": down_s, "usage": usage,
            "driver_cpu_s": round(driver_cpu_s, 2), "arp_entries_at_ready": arp_entries,
            "others_cpu_s": round(busy_s - driver_cpu_s - usage["cpu_s"], 2)}


# the run ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": model,
            "python": platform.python_version(),
            # Set, every lab process compiles netlab from source at start (more CPU).
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
            "ip": subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout.strip()}


def settle(window: float = 0.5, busy_below: float = 0.25, at_most: float = 15.0) -> float:
    """Wait until the machine is quiet: namespaces deleted before (the floor's, a lab's)
    are freed by kernel workers in the background, and that work must not land on
    the next measurement. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < at_most:
        before = host_busy_seconds()
        time.sleep(window)
        if (host_busy_seconds() - before) / window < busy_below:
            break
    return time.monotonic() - started


def journal_less_ext4(path: str) -> bool:
    """Whether `path` is on ext4 without a journal (see the module doc)."""
    device = os.stat(path).st_dev
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            major, minor = fields[2].split(":")
            if os.makedev(int(major), int(minor)) == device:
                fstype, source = fields[fields.index("-") + 1:][:2]
                if fstype != "ext4":
                    return False
                journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
                return not any(j.startswith(os.path.basename(source) + "-") for j in journals)
    return False


class Quiet:
    """Waits before each measurement; remembers when the last teardown deleted files."""

    # ext4's RECENTCY_MIN: a freed inode on a written-back table block is "recent" this
    # long (fs/ext4/ialloc.c, recently_deleted()); a second more for the clock.
    RECENT_INODE_SECONDS = 61

    def __init__(self, back_to_back: bool) -> None:
        self.inode_wait = not back_to_back and any(
            journal_less_ext4(p) for p in ("/run", "/etc") if os.path.isdir(p))
        # Whatever ran before this script may have just deleted files too.
        self.deleted_at = time.monotonic()

    def wait(self) -> dict[str, float]:
        waited = {"cpu_s": settle()}
        if self.inode_wait:
            started = time.monotonic()
            os.sync()  # dirty inode table blocks keep freed inodes "recent" for 5 min
            time.sleep(max(0.0, self.deleted_at + self.RECENT_INODE_SECONDS - time.monotonic()))
            waited["inodes_s"] = round(time.monotonic() - started, 1)
            waited["cpu_s"] += settle()
        waited["cpu_s"] = round(waited["cpu_s"], 1)
        return waited

    def deleted(self) -> None:
        self.deleted_at = time.monotonic()


def measure(pods: int, timeout: float, prefix: str, quiet: Quiet) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        plan = bench_plan(f"{prefix}{pods}", pods, Path(tmp))
    waits = {"floor": quiet.wait()}
    floor = run_floor(plan, pods)
    quiet.deleted()
    waits["up"] = quiet.wait()
    lab = run_lab(plan, timeout)
    quiet.deleted()
    return {"pods": pods, "lab": plan.name, "node_subnet_len": plan.config.node_subnet_len,
            "floor": floor, **lab, "waited": waits}


def print_table(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    header = (f"{'pods':>5} {'floor':>7} {'up':>7} {'ratio':>6} {'CPU':>7} {'others':>7} "
              f"{'PSS total':>10} "
              f"{'PSS/pod':>9} {'RSS total':>10} {'down':>6} {'floor dn':>8}")
    print(header)
    print("-" * len(header))
    base_pss = baseline["usage"]["pss_kib"]
    for r in [baseline, *rows]:
        n = r["pods"]
        per_pod = f"{(r['usage']['pss_kib'] - base_pss) / n:7.0f} K" if n else "      -  "
        ratio = r["up_s"] / r["floor"]["setup_s"] if n else float("nan")
        cpu = r["usage"]["cpu_s"] + r["driver_cpu_s"]
        print(f"{n:>5} {r['floor']['setup_s']:6.2f}s {r['up_s']:6.2f}s {ratio:6.1f} {cpu:6.1f}s "
              f"{r['others_cpu_s']:6.1f}s "
              f"{r['usage']['pss_kib'] / 1024:8.1f} M {per_pod} "
              f"{r['usage']['rss_kib'] / 1024:8.1f} M {r['down_s']:5.2f}s "
              f"{r['floor']['teardown_s']:7.2f}s")
    print("CPU: user+system seconds of the lab's processes and of this one until Ready;\n"
          "others: CPU the rest of the machine used meanwhile (other work skews the run).\n"
          "PSS/pod: (PSS of the lab at N pods - PSS at 0 pods) / N.\n"
          "Phases done, seconds from the start of up; CPU seconds per process:")
    for r in [baseline, *rows]:
        cpu = {role: m["cpu_s"] for role, m in r["usage"]["processes"].items()}
        print(f"  {r['pods']:>5}: {r['phases_s']}\n         {cpu} driver {r['driver_cpu_s']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="30,300",
                        help="pod counts, comma-separated (default: 30,300)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for every pod to be Ready")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each size this many times (one row each)")
    parser.add_argument("--prefix", default="bench", help="lab name prefix (default: bench)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default: results/bench_up-<time>.json)")
    parser.add_argument("--back-to-back", action="store_true",
                        help="do not wait for a journal-less ext4 to stop skipping the "
                             "inodes the previous teardown freed (see above)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_up needs root (network namespaces): run it with sudo")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    skipped = {n: reason for n in sizes if (reason := too_many_pods(n))}
    for n, reason in skipped.items():
        print(f"skipping {n}: {reason}", file=sys.stderr)
    quiet = Quiet(args.back_to_back)
    baseline = measure(0, args.timeout, args.prefix, quiet)
    rows = [measure(n, args.timeout, args.prefix, quiet) for n in sizes if n not in skipped
            for _ in range(args.repeat)]
    print_table(baseline, rows)
    output = args.output or REPO / "results" / time.strftime("bench_up-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": machine_info(), "command": sys.argv,
                                  "waits_for_freed_inodes": quiet.inode_wait,
                                  "baseline": baseline, "runs": rows,
                                  "skipped": {str(n): r for n, r in skipped.items()}},
                                 indent=2) + "\n")
    print(f"results: {output}")


if __name__ == "__main__":
    main()
