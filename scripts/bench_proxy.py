#!/usr/bin/env python3
"""Benchmark kube-proxy's iptables mode: full and incremental syncs at 1k and 10k services.

Each size runs in a network namespace this script creates and removes
(`nlt-proxy-bench`), with its own xtables lock file so that an 11-second
restore does not make other iptables users on the host wait. Every figure
is compared with a floor measured in the same run: `iptables-legacy-restore`
of the very same payload text on the same table state, i.e. what the kernel
and libiptc cost no matter who writes the text.

    sudo python scripts/bench_proxy.py [--sizes 1000,10000] [--endpoints 10]
                                       [--iptc-max 1000] [--repeat 3]

Goals (the issue's): full sync <= 1.5x floor; incremental sync of one changed
service <= 10% of a full sync. python-iptables, which builds rules one libiptc
call at a time, is measured only up to --iptc-max services (it needs ~1 ms per
rule, so 10k services x 10 endpoints, 430k rules, would take well over 8 minutes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from netlab.kernel import netns
from netlab.proxy.iptables.backend import IptablesBackend
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.iptables.render import NodeConfig
from netlab.proxy.proxier import Proxier, SyncReport

NAMESPACE = "nlt-proxy-bench"
LOCK_FILE = f"/tmp/{NAMESPACE}.xtables.lock"


@dataclass
class Row:
    label: str
    read: float | None
    render: float
    apply: float
    total: float
    floor: float | None = None
    note: str = ""


def service(i: int) -> dict:
    ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
    return {"kind": "Service", "metadata": {"namespace": "bench", "name": f"svc-{i}"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                "targetPort": 8080}]}}


def endpoint_slice(i: int, endpoints: int, extra: int = 0) -> dict:
    eps = []
    for e in range(endpoints + extra):
        n = i * (endpoints + 1) + e
        eps.append({"addresses": [f"10.{244 + n // 65536}.{n // 256 % 256}.{n % 256}"],
                    "conditions": {"ready": True}, "nodeName": f"node-{e % 3}"})
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "bench", "name": f"svc-{i}-abcde",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "endpoints": eps, "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}


def run(*argv: str, stdin: str | None = None) -> float:
    """Run a command in the bench namespace; seconds it took."""
    env = dict(os.environ, XTABLES_LOCKFILE=LOCK_FILE)
    with netns.entered(NAMESPACE):
        start = time.perf_counter()
        subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, env=env)
        return time.perf_counter() - start


def floor(payload: str) -> float:
    return run("iptables-legacy-restore", "-w", "5", "-W", "100000", "--noflush", "--counters",
               stdin=payload)


def empty_tables() -> None:
    for table in ("nat", "filter", "mangle"):
        run("iptables-legacy", "-w", "5", "-t", table, "-F")
        run("iptables-legacy", "-w", "5", "-t", table, "-X")


def row(label: str, report: SyncReport, floor_seconds: float | None = None) -> Row:
    phases = report.result.phases
    return Row(label, phases.get("read"), phases["render"], phases["apply"], report.duration,
               floor_seconds)


def build_with_iptc(payload: str) -> float:
    """Write the payload's rules with python-iptables, one rule at a time; seconds."""
    with netns.entered(NAMESPACE):
        import iptc

        start = time.perf_counter()
        table = None
        for line in payload.splitlines():
            if line.startswith("*"):
                table = iptc.Table(line[1:], autocommit=False)
                table.refresh()
            elif line == "COMMIT":
                table.commit()
                table.autocommit = True
            elif line.startswith(":"):
                name = line[1:].split()[0]
                if not table.is_chain(name):
                    table.create_chain(name)
            elif line.startswith("-A "):
                chain, rule = _iptc_rule(iptc, line)
                iptc.Chain(table, chain).append_rule(rule)
        return time.perf_counter() - start


def _iptc_rule(iptc: Any, line: str) -> tuple[str, Any]:
    tokens = shlex.split(line)
    chain = tokens[1]
    rule = iptc.Rule()
    if "-p" in tokens:
        rule.protocol = tokens[tokens.index("-p") + 1]
    current = None
    negate = False
    i = 2
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
        elif token in ("-s", "-d"):
            value = ("!" if negate else "") + tokens[i + 1]
            setattr(rule, "src" if token == "-s" else "dst", value)
            negate, i = False, i + 1
        elif token == "-p":
            i += 1
        elif token == "-m":
            current = rule.create_match(tokens[i + 1])
            i += 1
        elif token == "-j":
            current = rule.create_target(tokens[i + 1])
            i += 1
        elif token.startswith("--"):
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("-") \
                    and tokens[i + 1] != "!":
                values.append(tokens[i + 1])
                i += 1
            value = " ".join(values) if values else None
            if negate and value is not None:
                value = "!" + value
            current.set_parameter(token[2:], value)
            negate = False
        i += 1
    return chain, rule


def best(reports: list[SyncReport]) -> SyncReport:
    return min(reports, key=lambda r: r.duration)


def bench(size: int, endpoints: int, iptc_max: int, repeat: int) -> list[Row]:
    """Each figure is the best of `repeat` runs, ours and the floor interleaved."""
    rows: list[Row] = []
    tag = f"{size // 1000}k" if size >= 1000 else str(size)
    empty_tables()
    node = NodeConfig("node-0", ("192.168.10.2",), cluster_cidr="10.244.0.0/16")
    backend = IptablesBackend(IptablesKernel(NAMESPACE, lock_file=LOCK_FILE), node)
    # kube-proxy >= 1.33 forces a full sync hourly; with a full sync every 30 s the
    # incremental measurement at 10k would itself turn into a full sync.
    proxier = Proxier(backend, "node-0", min_sync_period=0, full_sync_period=3600)
    start = time.perf_counter()
    for i in range(size):
        proxier.on_event("Service", "ADDED", service(i))
        proxier.on_event("EndpointSlice", "ADDED", endpoint_slice(i, endpoints))
    ingest = time.perf_counter() - start
    print(f"[{tag}] ingested {size} Services + EndpointSlices in {ingest:.2f}s", flush=True)

    cold, cold_floor = [], []
    for _ in range(repeat):
        empty_tables()
        cold.append(proxier.sync(full=True))
        payload = backend.last_render.payload
        empty_tables()
        cold_floor.append(floor(payload))
    rows.append(row(f"{tag} full sync, empty table", best(cold), min(cold_floor)))
    rows[-1].note = f"{payload.count(chr(10))} lines, {len(payload) / 1e6:.1f} MB"
    print(f"[{tag}] cold full sync {best(cold).duration:.2f}s "
          f"(floor {min(cold_floor):.2f}s)", flush=True)

    proxier.sync(full=True)  # the table now holds the rules
    warm, warm_floor = [], []
    for _ in range(repeat):
        warm.append(proxier.sync(full=True))
        warm_floor.append(floor(backend.last_render.payload))
    full = best(warm)
    rows.append(row(f"{tag} full sync, rules present", full, min(warm_floor)))
    print(f"[{tag}] warm full sync {full.duration:.2f}s (floor {min(warm_floor):.2f}s)",
          flush=True)

    # In large clusters kube-proxy scans for stale chains once per syncPeriod; force
    # that scan into the first incremental sync, then measure the usual ones.
    backend.sync_period = 0
    proxier.on_event("EndpointSlice", "MODIFIED", endpoint_slice(0, endpoints, extra=1))
    scanned = proxier.sync()
    backend.sync_period = 3600
    rows.append(row(f"{tag} incremental + stale scan", scanned,
                    floor(backend.last_render.payload)))
    rows[-1].note = f"{100 * scanned.duration / full.duration:.1f}% of a full sync"
    incremental, inc_floor = [], []
    for n in range(1, repeat + 1):
        changed = n * size // (repeat + 1)
        proxier.on_event("EndpointSlice", "MODIFIED", endpoint_slice(changed, endpoints, extra=1))
        report = proxier.sync()
        assert not report.full and report.changed_services == 1
        incremental.append(report)
        inc_floor.append(floor(backend.last_render.payload))
    inc = best(incremental)
    rows.append(row(f"{tag} incremental (1 service)", inc, min(inc_floor)))
    rows[-1].note = f"{100 * inc.duration / full.duration:.1f}% of a full sync"
    print(f"[{tag}] incremental sync {inc.duration:.2f}s", flush=True)

    if size <= iptc_max:
        empty_tables()
        seconds = build_with_iptc(payload)
        rows.append(Row(f"{tag} python-iptables build", None, 0.0, seconds, seconds,
                        min(cold_floor), "same rules, one libiptc append per rule"))
        print(f"[{tag}] python-iptables {seconds:.2f}s", flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    header = f"{'case':34} {'read':>7} {'render':>7} {'apply':>7} {'total':>8} {'floor':>8} " \
             f"{'x floor':>8}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = "-" if not r.floor else f"{r.total / r.floor:.2f}"
        print(f"{r.label:34} {fmt(r.read):>7} {fmt(r.render):>7} {fmt(r.apply):>7} "
              f"{fmt(r.total):>8} {fmt(r.floor):>8} {ratio:>8}  {r.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--iptc-max", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates a network namespace)", file=sys.stderr)
        return 1
    rows: list[Row] = []
    netns.create(NAMESPACE)
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rows += bench(size, args.endpoints, args.iptc_max, args.repeat)
    finally:
        netns.delete(NAMESPACE)
        if os.path.exists(LOCK_FILE):
            os.unlink(LOCK_FILE)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
