"""Watch-to-rules latency on each store backend, and what one host holds (issue 7).

latency   A lab of N nodes (control-plane + N-1 workers, DNS off) on the embedded store
          (sqlite) or on etcd (the lab's own member in its control-plane node), with a
          Deployment of 2 netexec pods. Then, --repeat times: a new ClusterIP Service
          selecting them is applied (the `knetlab apply` path: admission, ClusterIP
          allocation, one store write), and every node's nat table is read until the
          Service's KUBE-SVC chain jumps to a KUBE-SEP endpoint chain, i.e. the rules a
          packet needs are live. Per Service: the time until the last node has them
          ("every node") and the median node. In between, the control plane made the
          EndpointSlice and each node's proxy watched both objects and ran
          iptables-restore. kube-proxy's minSyncPeriod (1 s by default) usually holds
          the second sync back; --min-sync-period 0 shows the pipeline without it.
          Nodes are read in-process with python-iptables inside each namespace, only
          until each has the rules, every 20 ms.
capacity  Labs of N nodes with P pods per worker: bring-up time, memory (PSS) and idle
          CPU per node, ARP entries per pod; what they mean for one 24 GiB, 2-core host.

Run as root from the repository, one benchmark at a time (results go to results/):

    sudo flock /tmp/knetlab-bench.lock .venv/bin/python scripts/bench_watch.py latency \\
        --nodes 3,20 --stores sqlite,etcd --repeat 10
    sudo flock /tmp/knetlab-bench.lock .venv/bin/python scripts/bench_watch.py capacity \\
        --nodes 20,60 --pods-per-node 2 [--store etcd]

Labs are named edge-<store initial><N> (latency) or edge-c<store initial><N>; if a run dies,
`knetlab clean --name NAME` removes what it left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_up import cpu_seconds, lab_cleaned_on_error, lab_usage, machine_info  # noqa: E402

from netlab.control.apply import apply_objects, bootstrap  # noqa: E402
from netlab.kernel import netns  # noqa: E402
from netlab.lab import lifecycle  # noqa: E402
from netlab.lab.capacity import neighbour_room, too_many_pods  # noqa: E402
from netlab.lab.labfile import lab_from_data  # noqa: E402
from netlab.lab.plan import plan_from_lab  # noqa: E402
from netlab.lab.state import StateDir  # noqa: E402
from netlab.store import open_store  # noqa: E402
from netlab.store.objects import Objects  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
POLL = 0.02
IDLE_WINDOW = 20.0
_iptc_lock = threading.Lock()


def deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{
                             "name": "netexec",
                             "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                             "args": ["netexec", "--http-port=8080"],
                             "ports": [{"name": "http", "containerPort": 8080}],
                             "readinessProbe": {"httpGet": {"path": "/healthz",
                                                            "port": 8080}}}]}}}}


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def lab_data(name: str, nodes: int, store: str, min_sync: float) -> dict[str, Any]:
    return {"name": name,
            "nodes": [{"name": "control-plane", "role": "control-plane"}]
            + [{"name": f"worker-{i}", "role": "worker"} for i in range(1, nodes)],
            "dns": {"enabled": False},
            "proxy": {"minSyncPeriod": f"{int(min_sync * 1000)}ms"},
            "store": {"backend": store}}


def start(data: dict[str, Any], manifests: list[dict[str, Any]]) -> tuple[StateDir, float]:
    plan = plan_from_lab(lab_from_data(data, source="<bench>"))

    def apply(objects: Objects, objs: list[dict[str, Any]]) -> None:
        bootstrap(objects, plan.config)
        apply_objects(objects, [*objs, *manifests], plan.config)

    started = time.perf_counter()
    state = lifecycle.up(plan, apply, None, 600)
    return state, time.perf_counter() - started


# latency -------------------------------------------------------------------------------
def rules_live(iptc: Any, namespace: str, cluster_ip: str) -> bool:
    """Whether the node's nat table sends cluster_ip to at least one endpoint."""
    with _iptc_lock, netns.entered(namespace):
        table = iptc.Table("nat")
        table.refresh()
        try:
            services = iptc.Chain(table, "KUBE-SERVICES").rules
        except iptc.IPTCError:
            return False
        for rule in services:
            if rule.dst.split("/")[0] == cluster_ip:
                chain = iptc.Chain(table, rule.target.name)
                return any(r.target.name.startswith("KUBE-SEP") for r in chain.rules)
    return False


def one_service(iptc: Any, objects: Objects, config: Any, name: str,
                namespaces: list[str], timeout: float = 60) -> list[float]:
    """Seconds from apply until each node has the Service's rules (node order)."""
    started = time.perf_counter()
    apply_objects(objects, [service(name)], config)
    ip = objects.get("Service", "default", name)["spec"]["clusterIP"]
    done: dict[str, float] = {}
    while len(done) < len(namespaces):
        for ns in namespaces:
            if ns not in done and rules_live(iptc, ns, ip):
                done[ns] = time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{name}: rules on {len(done)}/{len(namespaces)} nodes "
                               f"after {timeout}s")
        time.sleep(POLL)
    return [done[ns] for ns in namespaces]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(nodes: int, store: str, repeat: int, min_sync: float) -> dict[str, Any]:
    import iptc  # python-iptables: the legacy nat table the nodes' proxies write

    name = f"edge-{store[0]}{nodes}"
    data = lab_data(name, nodes, store, min_sync)
    with lab_cleaned_on_error(name):
        state, up_s = start(data, [deployment(2)])
        try:
            config = state.read_config()
            objects = Objects(open_store(state.store_url))
            namespaces = [n["netns"] for n in state.read_lab()["nodes"]]
            time.sleep(2)  # let the first full syncs settle
            runs = []
            for i in range(repeat):
                runs.append(one_service(iptc, objects, config, f"w{i}", namespaces))
                time.sleep(max(1.5, min_sync + 0.5))  # each apply starts from idle proxies
            objects.store.close()
        finally:
            lifecycle.down(name)
    every = [max(r) for r in runs]
    median_node = [statistics.median(r) for r in runs]
    return {"nodes": nodes, "store": store, "min_sync_period_s": min_sync, "repeat": repeat,
            "up_s": round(up_s, 2),
            "every_node_ms": {"median": round(statistics.median(every) * 1e3),
                              "p90": round(percentile(every, 0.9) * 1e3),
                              "max": round(max(every) * 1e3)},
            "median_node_ms": round(statistics.median(median_node) * 1e3),
            "runs_ms": [[round(t * 1e3) for t in r] for r in runs]}


# capacity ------------------------------------------------------------------------------
def capacity(nodes: int, pods_per_node: int, store: str) -> dict[str, Any]:
    name = f"edge-c{store[0]}{nodes}"
    pods = pods_per_node * (nodes - 1)
    reason = too_many_pods(pods)
    if reason:
        return {"nodes": nodes, "pods": pods, "skipped": reason}
    entries_before = neighbour_room()[0]
    with lab_cleaned_on_error(name):
        state, up_s = start(lab_data(name, nodes, store, 1.0), [deployment(pods)])
        try:
            time.sleep(5)  # past the bring-up burst
            procs = [p for p in state.processes() if p.alive()]
            cpu_before = {p.pid: cpu_seconds(p.pid) for p in procs}
            time.sleep(IDLE_WINDOW)
            idle_cpu = sum(cpu_seconds(p.pid) - cpu_before[p.pid] for p in procs
                           if p.alive()) / IDLE_WINDOW
            usage = lab_usage(state)
            arp_added = neighbour_room()[0] - entries_before
        finally:
            lifecycle.down(name)
    node_pss = [m["pss_kib"] for role, m in usage["processes"].items()
                if role.startswith(("agent-", "runtime-"))]
    return {"nodes": nodes, "pods": pods, "store": store, "up_s": round(up_s, 1),
            "pss_mib": round(usage["pss_kib"] / 1024),
            "pss_per_node_mib": round(sum(node_pss) / nodes / 1024, 1),
            "idle_cpu_cores": round(idle_cpu, 3),
            "idle_cpu_per_node": round(idle_cpu / nodes, 4),
            # Shared by every namespace, and other labs come and go: a rough figure.
            "arp_entries_added": arp_added}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--nodes", default="3,20")
    lat.add_argument("--stores", default="sqlite,etcd")
    lat.add_argument("--repeat", type=int, default=10)
    lat.add_argument("--min-sync-period", type=float, default=1.0)
    cap = sub.add_parser("capacity")
    cap.add_argument("--nodes", default="20,60")
    cap.add_argument("--pods-per-node", type=int, default=2)
    cap.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    args = parser.parse_args()
    rows = []
    if args.what == "latency":
        for nodes in map(int, args.nodes.split(",")):
            for store in args.stores.split(","):
                rows.append(latency(nodes, store, args.repeat, args.min_sync_period))
                row = rows[-1]
                print(f"{nodes:>3} nodes {store:<6} minSync {args.min_sync_period:g}s: "
                      f"every node median {row['every_node_ms']['median']} ms, p90 "
                      f"{row['every_node_ms']['p90']} ms, max {row['every_node_ms']['max']} "
                      f"ms; median node {row['median_node_ms']} ms (up {row['up_s']} s)",
                      flush=True)
    else:
        for nodes in map(int, args.nodes.split(",")):
            rows.append(capacity(nodes, args.pods_per_node, args.store))
            print(json.dumps(rows[-1]), flush=True)
    out = REPO / "results" / f"bench_watch-{args.what}-{int(time.time())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": rows},
                              indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
