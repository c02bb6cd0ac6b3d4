#!/usr/bin/env python3
"""Benchmark kube-proxy's modes side by side: sync time and first-packet latency.

For each size (services x endpoints) and each mode this host can run
(iptables, nftables, ipvs; IPVS is reported as unavailable when the kernel
lacks ip_vs or dummy), in namespaces this script creates and removes:

    client 192.168.10.100 ── 192.168.10.2 node 10.250.0.1 ── 10.250.0.2 backend

The node runs the proxy's rules; the backend owns every endpoint address
(10.244.0.0/15 is a local route there) behind one TCP listener on 8080. There
is one such lane per mode plus one without any rules (`nlt-nft-b{ipt,nft,0}-*`),
and the latency probes alternate between lanes, so each mode's figures and
the floor see the same load on a shared machine.

* sync: a full sync into an empty table, a full sync over the same rules
  (what the periodic resync costs), and a partial sync of one changed service.
* first-packet latency: `connect()` time (SYN out, SYN-ACK back) of new TCP
  connections from the client to the ClusterIP of random services; only the
  first packet of a connection walks the NAT rules (conntrack handles the
  rest), so this is where iptables' linear KUBE-SERVICES walk shows and
  nftables' map lookup does not. Connects straight to an endpoint address
  (through the same node, so its rules still see them) and through a lane
  without rules (the floor) are measured alongside.

    sudo python scripts/bench_modes.py [--sizes 100,1000,10000] [--endpoints 10]
        [--connects 1000] [--repeat 3] [--modes iptables,nftables,ipvs]
        [--plot docs/img/modes.png] [--in-vm]

Figures go to results/bench_modes-<time>.json; --plot draws them (needs
matplotlib: `pip install 'kube-netlab[bench]'`). `--in-vm` runs the same
benchmark inside a guest of the VM tier (netlab.lab.vm: the distribution
kernel, which has ip_vs), and copies its JSON back: the way to measure IPVS
on a host kernel without it. Under TCG, guest figures compare only with each
other, not with figures taken on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netlab.kernel import netns
from netlab.proxy import modes
from netlab.proxy.backend import Backend
from netlab.proxy.iptables.backend import IptablesBackend
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.iptables.render import NodeConfig as IptablesNode
from netlab.proxy.ipvs import names as ipvs_names
from netlab.proxy.ipvs.backend import IpvsBackend
from netlab.proxy.ipvs.kernel import IpvsKernel
from netlab.proxy.ipvs.render import NodeConfig as IpvsNode
from netlab.proxy.nftables.backend import NftablesBackend
from netlab.proxy.nftables.kernel import NftKernel
from netlab.proxy.nftables.render import NodeConfig as NftNode
from netlab.proxy.nftables.render import TableState
from netlab.proxy.proxier import Proxier, SyncReport

NODE_IP = "192.168.10.2"
CLIENT_IP = "192.168.10.100"
PORT = 8080
PROXY_MODES = ("iptables", "nftables", "ipvs")


@dataclass
class ModeResult:
    mode: str
    services: int
    endpoints: int
    cold_full_s: float | None = None
    warm_full_s: float | None = None
    partial_s: float | None = None
    transaction_mb: float | None = None
    kernel_requests: int | None = None  # IPVS mode: netlink requests of the cold full sync
    connect_us_p50: float | None = None  # new connection to a ClusterIP
    connect_us_p99: float | None = None
    direct_us_p50: float | None = None  # to an endpoint IP through the same node: no Service,
    direct_us_p99: float | None = None  # but the node's rules still see the first packet
    note: str = ""
    phases: dict[str, dict[str, float]] = field(default_factory=dict)


def service(i: int) -> dict:
    ip = cluster_ip(i)
    return {"kind": "Service", "metadata": {"namespace": "bench", "name": f"svc-{i}"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                "targetPort": PORT}]}}


def cluster_ip(i: int) -> str:
    n = i + 1  # skip 10.96.0.0
    return f"10.{96 + n // 65536}.{n // 256 % 256}.{n % 256}"


def endpoint_ip(n: int) -> str:
    return f"10.{244 + n // 65536}.{n // 256 % 256}.{n % 256}"


def endpoint_slice(i: int, endpoints: int, extra: int = 0) -> dict:
    eps = [{"addresses": [endpoint_ip(i * (endpoints + 1) + e)], "conditions": {"ready": True},
            "nodeName": f"node-{e % 3}"} for e in range(endpoints + extra)]
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "bench", "name": f"svc-{i}-abcde",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "endpoints": eps, "ports": [{"name": "http", "protocol": "TCP", "port": PORT}]}


def sh(ns: str, *argv: str, env: dict[str, str] | None = None) -> str:
    with netns.entered(ns):
        return subprocess.run(argv, check=True, capture_output=True, text=True,
                              env=env).stdout


def _mac(ns: str, dev: str) -> str:
    return json.loads(sh(ns, "ip", "-j", "link", "show", "dev", dev))[0]["address"]


def _veth(ns: str, name: str, peer_ns: str, peer: str, address: str, peer_address: str) -> None:
    temporary = f"nltb{os.getpid() % 10000}"
    sh(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", temporary)
    sh(ns, "ip", "link", "set", temporary, "netns", netns.path_of(peer_ns))
    sh(peer_ns, "ip", "link", "set", temporary, "name", peer)
    sh(ns, "ip", "addr", "add", address, "dev", name)
    sh(peer_ns, "ip", "addr", "add", peer_address, "dev", peer)
    sh(ns, "ip", "link", "set", name, "up")
    sh(peer_ns, "ip", "link", "set", peer, "up")
    # Permanent neighbours: the host's neighbour table is shared and capped, and
    # busy hosts run out of it; permanent entries are exempt.
    sh(ns, "ip", "neigh", "replace", peer_address.split("/")[0], "lladdr", _mac(peer_ns, peer),
       "dev", name, "nud", "permanent")
    sh(peer_ns, "ip", "neigh", "replace", address.split("/")[0], "lladdr", _mac(ns, name),
       "dev", peer, "nud", "permanent")


class Lane:
    """client -> node -> backend, one per mode (and one without rules), side by side.

    The lanes share nothing, not even addresses' namespaces, so every lane uses
    the same addresses; connects alternate between lanes so that each mode's
    figures see the same machine load.
    """

    def __init__(self, mode: str) -> None:
        tag = {"none": "0", "iptables": "ipt", "nftables": "nft", "ipvs": "ipvs"}[mode]
        self.mode = mode
        self.client, self.node, self.backend = (f"nlt-nft-b{tag}-{r}" for r in "cnb")
        self.lock_file = f"/tmp/{self.node}.xtables.lock"
        self.env = dict(os.environ, XTABLES_LOCKFILE=self.lock_file)
        self.created: list[str] = []
        self.sock: socket.socket | None = None

    def build(self) -> None:
        for ns in (self.client, self.node, self.backend):
            netns.create(ns)
            self.created.append(ns)
            sh(ns, "ip", "link", "set", "lo", "up")
        _veth(self.client, "eth0", self.node, "eth0", f"{CLIENT_IP}/24", f"{NODE_IP}/24")
        _veth(self.node, "eth1", self.backend, "eth0", "10.250.0.1/30", "10.250.0.2/30")
        sh(self.client, "ip", "route", "add", "10.96.0.0/12", "via", NODE_IP)
        sh(self.client, "ip", "route", "add", "10.244.0.0/15", "via", NODE_IP)
        sh(self.node, "ip", "route", "add", "10.244.0.0/15", "via", "10.250.0.2")
        sh(self.node, "ip", "route", "add", "default", "via", "10.250.0.2")
        sh(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Every endpoint address is local to the backend: one listener answers for all.
        sh(self.backend, "ip", "route", "add", "local", "10.244.0.0/15", "dev", "lo")
        sh(self.backend, "ip", "route", "add", "default", "via", "10.250.0.1")
        self.sock = netns.socket_in(self.backend, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", PORT))
        self.sock.listen(1024)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    @staticmethod
    def _accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def empty(self) -> None:
        """Remove both modes' rules and the connections they made from the node."""
        for table in ("nat", "filter", "mangle"):
            sh(self.node, "iptables-legacy", "-w", "5", "-t", table, "-F", env=self.env)
            sh(self.node, "iptables-legacy", "-w", "5", "-t", table, "-X", env=self.env)
        NftKernel(self.node).delete_table()
        if self.mode == "ipvs":
            self._empty_ipvs()
        sh(self.node, "conntrack", "-F")

    def _empty_ipvs(self) -> None:
        """Virtual servers, kube-ipvs0 and the ipsets go (after the rules that used them)."""
        kernel = IpvsKernel(self.node)
        try:
            servers = [vs for vs, _ in kernel.service_stats()]
            assert not kernel.ipvs.apply([kernel.ipvs.delete_service(vs) for vs in servers])
            if kernel.dummy_index() is not None:
                sh(self.node, "ip", "link", "del", ipvs_names.DUMMY_DEVICE)
            assert not kernel.ipset.apply([kernel.ipset.destroy(info.name)
                                           for info in ipvs_names.IPSETS])
        finally:
            kernel.close()

    def backend_for_mode(self) -> Backend:
        if self.mode == "iptables":
            return IptablesBackend(IptablesKernel(self.node, lock_file=self.lock_file),
                                   IptablesNode("node-0", (NODE_IP,),
                                                cluster_cidr="10.244.0.0/16"))
        if self.mode == "ipvs":
            return IpvsBackend(IpvsKernel(self.node, lock_file=self.lock_file),
                               IpvsNode("node-0", (NODE_IP,), cluster_cidr="10.244.0.0/16"))
        # kube-proxy's own rules: no counters (the lab's proxier adds them).
        return NftablesBackend(NftKernel(self.node),
                               NftNode("node-0", (NODE_IP,), cluster_cidr="10.244.0.0/16"))

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        for ns in reversed(self.created):
            netns.delete(ns)
        if os.path.exists(self.lock_file):
            os.unlink(self.lock_file)


_LINGER = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # close with RST, no TIME_WAIT


def connect_time(client: str, target: tuple[str, int], timeout: float = 2.0) -> float:
    """Seconds one new connection's connect() took (SYN out, SYN-ACK back)."""
    sock = netns.socket_in(client, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER)
    sock.settimeout(timeout)
    try:
        start = time.perf_counter()
        sock.connect(target)
        return time.perf_counter() - start
    finally:
        sock.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stats_us(values: list[float]) -> tuple[float, float]:
    return (round(statistics.median(values) * 1e6, 1), round(percentile(values, 0.99) * 1e6, 1))


def bench_sync(lane: Lane, size: int, endpoints: int, repeat: int) -> ModeResult:
    """Full and partial syncs of `size` services; the lane's node keeps the rules."""
    mode = lane.mode
    result = ModeResult(mode, size, endpoints)
    backend = lane.backend_for_mode()
    proxier = Proxier(backend, "node-0", min_sync_period=0, full_sync_period=1e9)
    for i in range(size):
        proxier.on_event("Service", "ADDED", service(i))
        proxier.on_event("EndpointSlice", "ADDED", endpoint_slice(i, endpoints))
    runs = repeat if size < 10000 else 1

    def best(reports: list[SyncReport], key: str) -> float:
        chosen = min(reports, key=lambda r: r.duration)
        result.phases[key] = {k: round(v, 4) for k, v in chosen.result.phases.items()}
        return round(chosen.duration, 4)

    cold = []
    for _ in range(runs):
        lane.empty()
        if isinstance(backend, NftablesBackend):
            backend.state = TableState()  # it was deleted with the table
        if isinstance(backend, IpvsBackend):
            backend.state = backend.dummy = None  # they were deleted with the rest
        cold.append(proxier.sync(full=True))
    result.cold_full_s = best(cold, "cold_full")
    if isinstance(backend, IpvsBackend):  # netlink requests, not a text transaction
        assert backend.last_plan is not None
        result.kernel_requests = len(backend.last_plan)
    else:
        last = getattr(backend, "last_render", None)
        text = getattr(last, "text", None) or getattr(last, "payload", "")
        result.transaction_mb = round(len(text) / 1e6, 2)
    print(f"  [{mode} {size}] cold full sync {result.cold_full_s:.2f}s", flush=True)
    warm = [proxier.sync(full=True) for _ in range(runs)]
    result.warm_full_s = best(warm, "warm_full")
    print(f"  [{mode} {size}] warm full sync {result.warm_full_s:.2f}s", flush=True)
    partial = []
    for n in range(1, repeat + 1):
        proxier.on_event("EndpointSlice", "MODIFIED",
                         endpoint_slice(n * size // (repeat + 1), endpoints, extra=1))
        report = proxier.sync()
        assert not report.full and report.changed_services == 1
        partial.append(report)
    result.partial_s = best(partial, "partial")
    print(f"  [{mode} {size}] partial sync {result.partial_s:.3f}s", flush=True)
    return result


def bench_latency(lanes: dict[str, Lane], results: dict[str, ModeResult], size: int,
                  endpoints: int, connects: int, rng: random.Random) -> tuple[float, float]:
    """Connect times per lane, interleaved; returns the rule-less lane's (p50, p99) in us."""
    probes: list[tuple[str, str, tuple[str, int]]] = []  # (lane, kind, target)
    for _ in range(connects):
        i = rng.randrange(size)
        endpoint = (endpoint_ip(i * (endpoints + 1) + rng.randrange(endpoints)), PORT)
        round_ = [("none", "direct", endpoint)]
        for mode in results:
            round_ += [(mode, "service", (cluster_ip(i), 80)), (mode, "direct", endpoint)]
        rng.shuffle(round_)
        probes += round_
    for lane, _, target in probes[:200]:
        connect_time(lanes[lane].client, target)  # warm up caches, listeners, conntrack
    times: dict[tuple[str, str], list[float]] = {}
    for lane, kind, target in probes:
        times.setdefault((lane, kind), []).append(connect_time(lanes[lane].client, target))
    for mode, result in results.items():
        result.connect_us_p50, result.connect_us_p99 = stats_us(times[(mode, "service")])
        result.direct_us_p50, result.direct_us_p99 = stats_us(times[(mode, "direct")])
        print(f"  [{mode} {size}] connect p50 {result.connect_us_p50}us p99 "
              f"{result.connect_us_p99}us; direct p50 {result.direct_us_p50}us", flush=True)
    floor = stats_us(times[("none", "direct")])
    print(f"  [no rules {size}] connect p50 {floor[0]}us p99 {floor[1]}us", flush=True)
    return floor


def merged(runs: list[dict]) -> dict:
    """Several runs as one (e.g. sizes measured in separate runs); the first's machine."""
    data = dict(runs[0])
    data["results"] = [r for run in runs for r in run["results"]]
    data["floor_connect_us"] = {k: v for run in runs for k, v in run["floor_connect_us"].items()}
    return data


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["results"] if r["cold_full_s"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"iptables": ("tab:orange", "o"), "nftables": ("tab:blue", "s"),
              "ipvs": ("tab:green", "^")}
    for mode, (color, marker) in styles.items():
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["services"])
        if not mine:
            continue
        x = [r["services"] for r in mine]
        ax1.plot(x, [r["cold_full_s"] for r in mine], color=color, marker=marker,
                 label=f"{mode} full sync")
        ax1.plot(x, [r["partial_s"] for r in mine], color=color, marker=marker,
                 linestyle="--", label=f"{mode} partial sync (1 service)")
        ax2.plot(x, [r["connect_us_p50"] for r in mine], color=color, marker=marker,
                 label=f"{mode} median")
        ax2.plot(x, [r["connect_us_p99"] for r in mine], color=color, marker=marker,
                 linestyle="--", label=f"{mode} p99")
    floor = sorted((int(n), p50) for n, (p50, _) in data["floor_connect_us"].items())
    ax2.plot([n for n, _ in floor], [p50 for _, p50 in floor], color="gray", marker=".",
             label="no proxy rules (direct), median")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel(f"services (x {data['endpoints']} endpoints)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax2.set_yscale("log")
    ax1.set_ylabel("seconds")
    ax1.set_title("Sync time")
    ax2.set_ylabel("microseconds")
    ax2.set_title("First-packet latency (TCP connect to a ClusterIP)")
    ipvs = "; ipvs: not available on this kernel" if data.get("ipvs", "").startswith("not av") \
        else ""
    where = " (in a VM, TCG: compare only with each other)" if data.get("vm") else ""
    fig.suptitle(f"kube-proxy modes{where}, kernel {data['machine']['kernel']}, nft "
                 f"{data['machine']['nft']}, {data['machine']['nproc']} CPUs shared "
                 f"(load {data['loadavg_start'][0]:.1f}){ipvs}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def print_table(data: dict) -> None:
    def f(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    print(f"{'mode':9} {'services':>8} {'cold full s':>11} {'warm full s':>11} "
          f"{'partial s':>9} {'MB':>6} {'p50 us':>8} {'p99 us':>8} {'direct':>8}")
    for r in data["results"]:
        print(f"{r['mode']:9} {r['services']:>8} {f(r['cold_full_s']):>11} "
              f"{f(r['warm_full_s']):>11} {f(r['partial_s']):>9} "
              f"{f(r['transaction_mb'], 1):>6} {f(r['connect_us_p50'], 1):>8} "
              f"{f(r['connect_us_p99'], 1):>8} {f(r['direct_us_p50'], 1):>8}  {r['note']}"
              + (f" ({r['kernel_requests']} netlink requests)" if r.get("kernel_requests")
                 else ""))
    for n, (p50, p99) in data["floor_connect_us"].items():
        print(f"no proxy rules, {n} services' addresses: connect p50 {p50}us p99 {p99}us")


GUEST_MODULES = ("ip_vs", "ip_vs_rr", "dummy", "br_netfilter", "nf_conntrack", "ip_set",
                 "xt_set", "xt_addrtype", "xt_statistic", "xt_comment", "nf_tables")


def run_in_vm(argv: list[str], memory_mb: int, plot_path: str | None) -> int:
    """This benchmark inside a guest (netlab.lab.vm), its JSON copied back to results/."""
    import tempfile

    from netlab.lab.vm import machine
    from netlab.lab.vm.machine import VirtualMachine, VmConfig
    from netlab.lab.vm.qemu import accel_from_env

    if os.geteuid() != 0:
        print("needs root (QEMU, namespaces)", file=sys.stderr)
        return 1
    reason = machine.preflight()
    if reason:
        print(f"no VM tier here: {reason}", file=sys.stderr)
        return 1
    # A SIGTERM (a `timeout`, a kill) still shuts the guest down and removes its run dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_dir = tempfile.mkdtemp(prefix="ipvs-bench-vm-")
    guest = VirtualMachine(VmConfig(f"ipvs-bench-{os.getpid()}", run_dir, memory_mb=memory_mb,
                                    die_with_parent=True))
    try:
        guest.boot(600)
        guest.sh("modprobe -a " + " ".join(GUEST_MODULES), timeout=300)
        inner = "/tmp/bench_modes-vm.json"
        print(f"guest {guest.name} up in {guest.boot_seconds:.0f}s; running the benchmark",
              flush=True)
        result = guest.run(["python3", os.path.abspath(__file__), *argv, "--out", inner],
                           timeout=6 * 3600, cwd=str(Path(__file__).resolve().parents[1]),
                           log=sys.stdout.buffer)
        if result.rc != 0:
            print(f"the benchmark failed in the guest (exit {result.rc})", file=sys.stderr)
            return result.rc or 1
        data = json.loads(guest.run(["cat", inner], check=True).stdout)
    finally:
        guest.shutdown()
        machine.cleanup(run_dir)
    data["vm"] = {"accel": accel_from_env(), "memory_mb": memory_mb, "vcpus": 1,
                  "host_kernel": platform.release(), "host_nproc": os.cpu_count()}
    out = Path("results") / f"bench_modes-vm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {out}")
    print_table(data)
    if plot_path:
        plot(data, plot_path)
        print(f"plotted {plot_path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="iptables,nftables,ipvs")
    parser.add_argument("--plot", default=None, help="draw the figures into this PNG")
    parser.add_argument("--replot", default=None,
                        help="only plot earlier JSON results (comma-separated: merged)")
    parser.add_argument("--out", default=None, help="write the JSON here (default: results/)")
    parser.add_argument("--in-vm", action="store_true",
                        help="run inside a guest with a distribution kernel (for IPVS)")
    parser.add_argument("--vm-memory", type=int, default=3072, help="guest memory, MiB")
    args = parser.parse_args()
    if args.in_vm:
        argv = ["--sizes", args.sizes, "--endpoints", str(args.endpoints), "--connects",
                str(args.connects), "--repeat", str(args.repeat), "--modes", args.modes]
        return run_in_vm(argv, args.vm_memory, args.plot)
    if args.replot:
        data = merged([json.loads(Path(p).read_text()) for p in args.replot.split(",")])
        plot(data, args.plot or "docs/img/modes.png")
        print_table(data)
        return 0
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 1
    rng = random.Random(6)
    data: dict = {
        "machine": {"nproc": os.cpu_count(), "kernel": platform.release(),
                    "nft": ".".join(map(str, NftKernel(None).version())),
                    "python": platform.python_version()},
        "command": sys.argv,
        "loadavg_start": os.getloadavg(),
        "endpoints": args.endpoints,
        "results": [],
    }
    wanted = args.modes.split(",")
    if "ipvs" in wanted:
        missing = modes.ipvs_missing()
        if missing:
            data["ipvs"] = "not available on this kernel: lacks " + ", ".join(missing)
            print(f"ipvs: {data['ipvs']}")
            wanted.remove("ipvs")
            data["results_unavailable"] = ["ipvs"]
    proxy_modes = [m for m in wanted if m in PROXY_MODES]
    lanes = {mode: Lane(mode) for mode in ("none", *proxy_modes)}
    data["floor_connect_us"] = {}
    try:
        for lane in lanes.values():
            lane.build()
        for size in (int(s) for s in args.sizes.split(",")):
            results = {}
            for mode in proxy_modes:
                started = time.monotonic()
                results[mode] = bench_sync(lanes[mode], size, args.endpoints, args.repeat)
                results[mode].note = (f"sync {time.monotonic() - started:.0f}s wall, "
                                      f"load {os.getloadavg()[0]:.1f}")
            data["floor_connect_us"][size] = bench_latency(lanes, results, size, args.endpoints,
                                                           args.connects, rng)
            data["results"] += [asdict(r) for r in results.values()]
            if "ipvs" in data.get("results_unavailable", ()):
                data["results"].append(asdict(ModeResult("ipvs", size, args.endpoints,
                                                         note=data["ipvs"])))
            for mode in proxy_modes:
                lanes[mode].empty()
    finally:
        for lane in lanes.values():
            lane.close()
    data["loadavg_end"] = os.getloadavg()
    out = Path(args.out or Path("results") / f"bench_modes-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {out}")
    print_table(data)
    if args.plot:
        plot(data, args.plot)
        print(f"plotted {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
