#!/usr/bin/env python3
"""Cluster DNS benchmark (issue 4): dnsperf against the lab's DNS and against dnsmasq, same run.

One lab (3 nodes, the DNS addon's 2 CoreDNS pods, --services selector-less
ClusterIP Services besides `kubernetes` and `kube-dns`). Two namespaces this
script creates hang off the lab's underlay bridge, like two more machines:

    <lab>-perf     192.168.10.201  runs dnsperf; routes each node's pod CIDR via
                                   that node, the service range via worker-1
    <lab>-dnsmasq  192.168.10.202  runs `dnsmasq --no-daemon --no-resolv --no-hosts
                                   --addn-hosts=FILE`, FILE holding every Service's
                                   `<ClusterIP> <name>.<ns>.svc.cluster.local`

The same dnsmasq also runs inside each DNS pod's namespace on port 5353, and a
selector-less Service `dnsmasq-bench` (53/UDP -> 5353, an EndpointSlice naming both
DNS pods) puts those two behind a ClusterIP: dnsmasq on exactly the network paths
the lab's DNS is measured on, so the comparison can tell the server from the path.

The query file is those same names, type A; before measuring, every name is asked
of every server and the answers compared. Targets, each measured --repeat times,
interleaved: one DNS pod by its IP (one Python process); dnsmasq in that pod's
namespace; the kube-dns ClusterIP (kube-proxy's DNAT spreading dnsperf's sockets
over both DNS pods, so two processes on two nodes); dnsmasq behind its ClusterIP;
dnsmasq on the underlay (one C process, one bridge hop from dnsperf). Per run:

    throughput  dnsperf -l DURATION -c CLIENTS -q OUTSTANDING -t 1, self-paced: QPS,
                average latency at that load, lost queries; server CPU per query from
                /proc/PID/stat of the serving process(es) (the node runtime that holds
                the DNS pod, or dnsmasq) over the run; UdpRcvbufErrors of the serving
                namespaces (queries the server's receive buffer had no room for)
    latency     dnsperf -v -Q RATE -l 5 at a rate every target sustains; p50 and p99 of
                the per-query latencies it prints

DNS programming latency, TRIALS times each: a Service applied -> its A record
answered by every DNS pod; a headless Deployment scaled up by one -> the new pod's
A record answered by every DNS pod.

The goal (issue 4) is judged against dnsmasq on the underlay; the two same-path
ratios are printed beside it, each also round by round (targets are interleaved, so
a round compares figures taken minutes apart on a machine whose load drifts).

    sudo flock /tmp/knetlab-bench.lock .venv/bin/python scripts/bench_dns.py \
        [--repeat 5] [--services 50] [--name dn-bench] [--json FILE]

The lab is named dn-bench (--name); if a run dies, `knetlab clean --name dn-bench` and
`ip netns del dn-bench-perf; ip netns del dn-bench-dnsmasq` remove what it left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
from pyroute2 import IPRoute

from netlab.kernel import netns
from netlab.lab import lifecycle
from netlab.lab.netns_machines import UNDERLAY_BRIDGE
from netlab.lab.session import RunningLab, start_lab

LAB = "dn-bench"
PERF_NS, DNSMASQ_NS = f"{LAB}-perf", f"{LAB}-dnsmasq"
PERF_IP, DNSMASQ_IP = "192.168.10.201", "192.168.10.202"
PREFIX = 24
SERVICE_RANGE = "10.96.0.0/12"
KUBE_DNS = "10.96.0.10"
ZONE = "cluster.local"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POD_DNSMASQ_PORT = 5353
# Target labels; each dnsmasq copy in the DNS pods sits on its neighbour's network path.
ONE_POD = "one DNS pod"
POD_DNSMASQ = "dnsmasq in that DNS pod's namespace (:5353)"
CLUSTER_IP = "kube-dns ClusterIP (2 DNS pods)"
CLUSTER_IP_DNSMASQ = "dnsmasq behind a ClusterIP, in both DNS pods (:5353)"
DNSMASQ = "dnsmasq"


# -- the lab and the two extra machines ---------------------------------------------------

def lab_data() -> dict[str, Any]:
    return {"name": LAB,
            "nodes": [{"name": "control-plane", "role": "control-plane"},
                      {"name": "worker-1", "role": "worker"},
                      {"name": "worker-2", "role": "worker"}],
            "dns": {"enabled": True, "replicas": 2}}


def bench_service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i:03d}"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def headless_deployment(replicas: int) -> list[dict[str, Any]]:
    labels = {"app": "prog"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "prog"},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                      "args": ["netexec", "--http-port=8080"],
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "prog"},
         "spec": {"clusterIP": "None", "selector": labels,
                  "ports": [{"name": "http", "port": 8080}]}},
    ]


def attach(lab: RunningLab, name: str, address: str) -> None:
    """A namespace with eth0 on the lab's underlay bridge (a machine like `ext`)."""
    netns.create(name)
    port = "dnsi-" + name.rsplit("-", 1)[1]
    with netns.entered(lab.netns("underlay")):
        uipr = IPRoute()
    with uipr:
        fd = os.open(netns.path_of(name), os.O_RDONLY)
        try:
            uipr.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        index = uipr.link_lookup(ifname=port)[0]
        uipr.link("set", index=index, master=uipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0],
                  state="up")
    with netns.entered(name):
        ipr = IPRoute()
    with ipr:
        ipr.link("set", index=1, state="up")
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth0, address=address, prefixlen=PREFIX)
        ipr.link("set", index=eth0, state="up")


def route_perf_namespace(lab: RunningLab) -> None:
    """Pod CIDRs via their nodes (no overlay on the way), the service range via worker-1."""
    with netns.entered(PERF_NS):
        ipr = IPRoute()
    with ipr:
        for node in lab.objects.list("Node")[0]:
            ipr.route("add", dst=node["spec"]["podCIDR"],
                      gateway=lab.node_ip(node["metadata"]["name"]))
        ipr.route("add", dst=SERVICE_RANGE, gateway=lab.node_ip("worker-1"))


@contextlib.contextmanager
def machines(lab: RunningLab) -> Iterator[None]:
    try:
        attach(lab, PERF_NS, PERF_IP)
        attach(lab, DNSMASQ_NS, DNSMASQ_IP)
        route_perf_namespace(lab)
        yield
    finally:
        for name in (PERF_NS, DNSMASQ_NS):
            netns.delete(name)


@contextlib.contextmanager
def hosts_file(hosts: dict[str, str]) -> Iterator[str]:
    """A hosts file of `hosts` (name -> IP) for dnsmasq's --addn-hosts."""
    with tempfile.NamedTemporaryFile("w", prefix=f"{LAB}-", suffix=".hosts",
                                     delete=False) as f:
        f.writelines(f"{ip} {name}\n" for name, ip in sorted(hosts.items()))
    os.chmod(f.name, 0o644)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


@contextlib.contextmanager
def dnsmasq(hosts: str, namespace: str, address: str, port: int = 53) -> Iterator[int]:
    """dnsmasq in `namespace` serving the hosts file with the lab's TTL; yields its pid."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "dnsmasq", "--no-daemon", "--no-resolv",
         "--no-hosts", f"--addn-hosts={hosts}", "--conf-file=/dev/null", "--pid-file=",
         f"--listen-address={address}", f"--port={port}", "--bind-interfaces",
         "--local-ttl=30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {proc.stderr.read() if proc.stderr else ''}")
        yield proc.pid  # `ip netns exec` execs dnsmasq: same pid
    finally:
        proc.terminate()
        proc.wait(5)


def dnsmasq_service(dns_ips: list[str]) -> list[dict[str, Any]]:
    """A ClusterIP Service whose endpoints are the dnsmasq copies in the DNS pods (:5353)."""
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "dnsmasq-bench", "namespace": "default"},
             "spec": {"ports": [{"name": "dns", "port": 53, "targetPort": POD_DNSMASQ_PORT,
                                 "protocol": "UDP"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "dnsmasq-bench-1", "namespace": "default",
                          "labels": {"kubernetes.io/service-name": "dnsmasq-bench"}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                                               "terminating": False}}
                           for ip in dns_ips],
             "ports": [{"name": "dns", "port": POD_DNSMASQ_PORT, "protocol": "UDP"}]}]


# -- asking -------------------------------------------------------------------------------

def perf_socket() -> socket.socket:
    sock = netns.socket_in(PERF_NS, socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def ask(server: str, name: str, timeout: float = 1.0, port: int = 53) -> tuple[int, set[str]]:
    """(rcode, A addresses) from server, asked from the perf namespace."""
    query = dns.message.make_query(name, "A")
    with perf_socket() as sock:
        reply = dns.query.udp(query, server, timeout=timeout, port=port, sock=sock)
    return reply.rcode(), {rr.address for rrset in reply.answer for rr in rrset}


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> float:
    """Poll check() until true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return time.monotonic()
        except (OSError, dns.exception.DNSException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def service_names(lab: RunningLab) -> dict[str, str]:
    """Every Service with a ClusterIP: FQDN -> ClusterIP."""
    return {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.{ZONE}":
            s["spec"]["clusterIP"]
            for s in lab.objects.list("Service")[0]
            if s["spec"].get("clusterIP") not in (None, "", "None")}


def check_same_answers(names: dict[str, str], servers: list[tuple[str, int]]) -> None:
    for name, ip in names.items():
        for server, port in servers:
            rcode, found = ask(server, name, port=port)
            if rcode != dns.rcode.NOERROR or found != {ip}:
                raise RuntimeError(f"{server} answers {name} with {dns.rcode.to_text(rcode)} "
                                   f"{sorted(found)}, expected {ip}")


# -- dnsperf ------------------------------------------------------------------------------

@dataclass
class Run:
    qps: float
    avg_ms: float
    lost: int
    cpu_us: float | None  # server CPU per completed query
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    split: list[float] = field(default_factory=list)  # share answered by each DNS pod
    rcvbuf_errors: int = 0  # datagrams the server sockets' receive buffers had no room for


@dataclass
class Target:
    label: str
    server: str
    pids: list[int]
    port: int = 53
    pods: list[str] = field(default_factory=list)  # DNS pod IPs whose counters to read
    netns: list[str] = field(default_factory=list)  # where the serving sockets live
    runs: list[Run] = field(default_factory=list)


def requests_total(pod_ip: str) -> float:
    """coredns_dns_requests_total of one DNS pod, summed over its labels."""
    text = subprocess.run(["ip", "netns", "exec", PERF_NS, "curl", "-s", "--max-time", "5",
                           f"http://{pod_ip}:9153/metrics"],
                          capture_output=True, text=True, check=True).stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("coredns_dns_requests_total{"))


def rcvbuf_errors(namespaces: list[str]) -> int:
    """UdpRcvbufErrors summed over namespaces (the kernel counts them per namespace)."""
    total = 0
    for name in namespaces:
        with netns.entered(name), open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        total += int(rows[1][rows[0].index("RcvbufErrors")])
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def dnsperf(target: Target, query_file: str, *args: str) -> str:
    argv = ["ip", "netns", "exec", PERF_NS, "dnsperf", "-s", target.server, "-p",
            str(target.port), "-d", query_file, *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"dnsperf output lacks {pattern!r}:\n{text}")
    return float(match.group(1))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def measure(target: Target, query_file: str, args: argparse.Namespace) -> Run:
    counted = [requests_total(ip) for ip in target.pods]
    dropped = rcvbuf_errors(target.netns)
    cpu_before = cpu_seconds(target.pids)
    out = dnsperf(target, query_file, "-l", str(args.duration), "-c", str(args.clients),
                  "-q", str(args.outstanding), "-t", "1")
    cpu = cpu_seconds(target.pids) - cpu_before
    dropped = rcvbuf_errors(target.netns) - dropped
    answered = [requests_total(ip) - before for ip, before in
                zip(target.pods, counted, strict=True)]
    completed = _number(r"Queries completed:\s+(\d+)", out)
    run = Run(qps=_number(r"Queries per second:\s+([\d.]+)", out),
              avg_ms=_number(r"Average Latency \(s\):\s+([\d.]+)", out) * 1000,
              lost=int(_number(r"Queries lost:\s+(\d+)", out)),
              cpu_us=cpu / completed * 1e6 if completed else None,
              split=[n / sum(answered) for n in answered] if sum(answered) else [],
              rcvbuf_errors=dropped)
    verbose = dnsperf(target, query_file, "-l", "5", "-c", str(args.clients),
                      "-Q", str(args.rate), "-t", "1", "-v")
    latencies = [float(line.split()[-1]) * 1000 for line in verbose.splitlines()
                 if line.startswith("> ")]
    run.p50_ms, run.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
    return run


# -- programming latency ------------------------------------------------------------------

def service_programming(lab: RunningLab, dns_ips: list[str], trials: int) -> list[float]:
    """Seconds from a Service's apply to its A record at every DNS pod."""
    seconds = []
    for i in range(trials):
        obj = bench_service(900 + i)
        name = f"{obj['metadata']['name']}.default.svc.{ZONE}"
        start = time.monotonic()
        lab.apply([obj])
        done = max(wait_until(lambda ip=ip, n=name: ask(ip, n, 0.2)[1] != set(), what=name)
                   for ip in dns_ips)
        seconds.append(done - start)
        lab.delete("Service", obj["metadata"]["name"])
    return seconds


def scale_programming(lab: RunningLab, dns_ips: list[str], trials: int) -> list[float]:
    """Seconds from a scale-up write to the new pod's A record at every DNS pod."""
    name = f"prog.default.svc.{ZONE}"
    lab.apply(headless_deployment(1))
    wait_until(lambda: all(len(ask(ip, name, 0.2)[1]) == 1 for ip in dns_ips), 60, name)
    seconds = []
    try:
        for replicas in range(2, trials + 2):
            start = time.monotonic()
            lab.apply(headless_deployment(replicas)[:1])
            done = max(wait_until(lambda ip=ip, r=replicas: len(ask(ip, name, 0.2)[1]) == r,
                                  what=f"{replicas} A records") for ip in dns_ips)
            seconds.append(done - start)
    finally:
        lab.delete("Service", "prog")
        lab.delete("Deployment", "prog")
    return seconds


# -- report -------------------------------------------------------------------------------

def machine() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), platform.machine())
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_run(runs: list[Run]) -> Run:
    def med(values: list[float]) -> float:
        return statistics.median(values)
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    return Run(qps=med([r.qps for r in runs]), avg_ms=med([r.avg_ms for r in runs]),
               lost=int(med([r.lost for r in runs])), cpu_us=med(cpus) if cpus else None,
               p50_ms=med([r.p50_ms for r in runs]), p99_ms=med([r.p99_ms for r in runs]),
               rcvbuf_errors=int(med([r.rcvbuf_errors for r in runs])))


def round_ratios(ours: Target, theirs: Target) -> str:
    """QPS ratios of two targets round by round (measured minutes apart, not hours)."""
    ratios = [a.qps / b.qps for a, b in zip(ours.runs, theirs.runs, strict=True)]
    return (f"per round {', '.join(f'{r:.2f}' for r in ratios)}, "
            f"median {statistics.median(ratios):.2f}x")


def report(targets: list[Target], programming: dict[str, list[float]],
           args: argparse.Namespace, loads: list[str]) -> dict[str, Any]:
    print(f"\nmachine: {machine()}")
    print(f"load average (1/5/15 min) at start and end: {loads[0]} | {loads[-1]}")
    print(f"dnsperf -l {args.duration} -c {args.clients} -q {args.outstanding} -t 1; "
          f"latency at -Q {args.rate}; median of {args.repeat} runs\n")
    print("| target | QPS | avg latency at max QPS | p50 / p99 at "
          f"{args.rate} QPS | server CPU per query | lost | receive buffer drops | "
          "QPS of each run | pod split |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for target in targets:
        m = median_run(target.runs)
        cpu = f"{m.cpu_us:.0f} µs" if m.cpu_us is not None else "-"
        each = ", ".join(f"{r.qps:,.0f}" for r in target.runs)
        split = "; ".join("/".join(f"{share:.0%}" for share in r.split)
                          for r in target.runs if r.split) or "-"
        print(f"| {target.label} | {m.qps:,.0f} | {m.avg_ms:.2f} ms | {m.p50_ms:.3f} / "
              f"{m.p99_ms:.3f} ms | {cpu} | {m.lost} | {m.rcvbuf_errors} | {each} | {split} |")
    print("\n| DNS programming latency | trials | median | p99 (nearest rank) | max |")
    print("| --- | --- | --- | --- | --- |")
    for label, values in programming.items():
        print(f"| {label} | {len(values)} | {statistics.median(values) * 1000:.0f} ms | "
              f"{percentile(values, 99) * 1000:.0f} ms | {max(values) * 1000:.0f} ms |")
    by_label = {t.label: t for t in targets}
    best = {t.label: median_run(t.runs).qps for t in targets}
    floor = best[DNSMASQ]
    for label in (CLUSTER_IP, ONE_POD):
        verdict = "met" if best[label] >= floor else "not met"
        print(f"goal (>= dnsmasq's QPS) via {label}: {verdict} "
              f"({best[label]:,.0f} vs {floor:,.0f}, {best[label] / floor:.2f}x; "
              f"{round_ratios(by_label[label], by_label[DNSMASQ])})")
    for ours, theirs in ((CLUSTER_IP, CLUSTER_IP_DNSMASQ), (ONE_POD, POD_DNSMASQ)):
        print(f"same path: {ours} / {theirs}: {best[ours] / best[theirs]:.2f}x "
              f"({best[ours]:,.0f} vs {best[theirs]:,.0f}; "
              f"{round_ratios(by_label[ours], by_label[theirs])})")
    return {"machine": machine(), "loads": loads, "args": vars(args),
            "targets": {t.label: [asdict(r) for r in t.runs] for t in targets},
            "programming_seconds": programming}


# -- main ---------------------------------------------------------------------------------

def runtime_pid(lab: RunningLab, node: str) -> int:
    return next(p.pid for p in lab.state.processes() if p.role == f"runtime-{node}")


def use_names(lab: str) -> None:
    """Name the lab and the script's two namespaces after `lab`."""
    global LAB, PERF_NS, DNSMASQ_NS
    LAB, PERF_NS, DNSMASQ_NS = lab, f"{lab}-perf", f"{lab}-dnsmasq"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run")
    parser.add_argument("--clients", type=int, default=32, help="dnsperf -c (sockets)")
    parser.add_argument("--outstanding", type=int, default=200, help="dnsperf -q")
    parser.add_argument("--rate", type=int, default=3000, help="dnsperf -Q of latency runs")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--name", default=LAB, help="lab name, and prefix of the two namespaces")
    args = parser.parse_args()
    use_names(args.name)
    if os.geteuid() != 0:
        print("needs root (creates network namespaces)", file=sys.stderr)
        return 1
    loads = [load()]
    print(f"[dns] load average {loads[0]}; bringing up {LAB}", flush=True)
    lab = start_lab(lab_data(), LAB)
    try:
        lab.apply([bench_service(i) for i in range(args.services)])
        lab.wait_ready()
        dns_pods = [p for p in lab.pods("kube-system")
                    if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"]
        dns_ips = [p["status"]["podIP"] for p in dns_pods]
        with machines(lab):
            names = service_names(lab)
            wait_until(lambda: all(ask(ip, n)[1] for ip in dns_ips for n in names), 60,
                       "every DNS pod to know every Service")
            spaces = [lab.netns(f"kube-system/{p['metadata']['name']}") for p in dns_pods]
            lab.apply(dnsmasq_service(dns_ips)[:1])
            lab.objects.create(dnsmasq_service(dns_ips)[1])
            dnsmasq_ip = lab.objects.get("Service", "default", "dnsmasq-bench")["spec"][
                "clusterIP"]
            with contextlib.ExitStack() as stack:
                qf = stack.enter_context(tempfile.NamedTemporaryFile(
                    "w", prefix=f"{LAB}-", suffix=".queries"))
                qf.writelines(f"{name} A\n" for name in sorted(names))
                qf.flush()
                hosts = stack.enter_context(hosts_file(names))
                dnsmasq_pid = stack.enter_context(dnsmasq(hosts, DNSMASQ_NS, DNSMASQ_IP))
                in_pods = [stack.enter_context(dnsmasq(hosts, space, ip, POD_DNSMASQ_PORT))
                           for space, ip in zip(spaces, dns_ips, strict=True)]
                wait_until(lambda: ask(dnsmasq_ip, next(iter(names)), 0.2)[1] != set(), 30,
                           "kube-proxy to program the dnsmasq-bench Service")
                check_same_answers(names, [*((ip, 53) for ip in dns_ips), (KUBE_DNS, 53),
                                           (DNSMASQ_IP, 53), (dnsmasq_ip, 53),
                                           *((ip, POD_DNSMASQ_PORT) for ip in dns_ips)])
                pids = [runtime_pid(lab, p["spec"]["nodeName"]) for p in dns_pods]
                targets = [Target(ONE_POD, dns_ips[0], pids[:1], netns=spaces[:1]),
                           Target(POD_DNSMASQ, dns_ips[0], in_pods[:1], POD_DNSMASQ_PORT,
                                  netns=spaces[:1]),
                           Target(CLUSTER_IP, KUBE_DNS, pids, pods=dns_ips, netns=spaces),
                           Target(CLUSTER_IP_DNSMASQ, dnsmasq_ip, in_pods, netns=spaces),
                           Target(DNSMASQ, DNSMASQ_IP, [dnsmasq_pid], netns=[DNSMASQ_NS])]
                for round_ in range(args.repeat):
                    for target in targets:
                        target.runs.append(measure(target, qf.name, args))
                        run = target.runs[-1]
                        print(f"[dns] run {round_ + 1} {target.label}: {run.qps:,.0f} QPS, "
                              f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms, "
                              f"lost {run.lost}, rcvbuf drops {run.rcvbuf_errors}, "
                              f"load {load()}", flush=True)
            programming = {
                "Service applied -> A at both DNS pods":
                    service_programming(lab, dns_ips, args.trials),
                "Deployment scaled +1 -> new pod's A at both DNS pods (headless)":
                    scale_programming(lab, dns_ips, args.trials),
            }
        loads.append(load())
    finally:
        lifecycle.down(LAB)
    results = report(targets, programming, args, loads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
