"""Memory and time per pod of the shared netexec server (needs root).

Creates N namespaces (nlt-apps-bench-NNN), serves HTTP and UDP in each from one
PodServerThread, and prints the RSS growth per pod. The namespaces are deleted
at the end, whatever happens.

    sudo python scripts/bench_apps.py --pods 300
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import time

from pyroute2 import IPRoute

from netlab.apps.runner import PodServerThread
from netlab.kernel import netns

PREFIX = "nlt-apps-bench-"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=300)
    args = parser.parse_args()
    names = [f"{PREFIX}{i:03d}" for i in range(args.pods)]
    run_dir_existed = os.path.isdir(netns.NETNS_RUN_DIR)
    made: list[str] = []
    try:
        for name in names:
            netns.create(name)
            made.append(name)
        with netns.entered(names[-1]), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with PodServerThread() as server:
            server.add_pod("warm-up", names[0], "warm-up", [9999], [9998])
            server.remove_pod("warm-up")
            gc.collect()
            before = rss_kib()
            started = time.perf_counter()
            for i, name in enumerate(names):
                server.add_pod(f"bench/{i}", name, f"pod-{i}", [8080], [8081])
            took = time.perf_counter() - started
            gc.collect()
            after = rss_kib()
            with netns.entered(names[-1]):
                conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=5)
                conn.connect()
            conn.request("GET", "/hostname")
            answer = conn.getresponse().read().decode()
            conn.close()
            started = time.perf_counter()
            for i in range(len(names)):
                server.remove_pod(f"bench/{i}")
            removal = time.perf_counter() - started
        per_pod = (after - before) / len(names)
        print(f"pods: {len(names)} x (1 HTTP + 1 UDP listener)")
        print(f"RSS before: {before} KiB, after: {after} KiB, "
              f"per pod: {per_pod:.1f} KiB ({per_pod / 1024:.4f} MiB)")
        print(f"add_pod: {took * 1000 / len(names):.2f} ms/pod, "
              f"remove_pod: {removal * 1000 / len(names):.2f} ms/pod")
        print(f"last pod answers /hostname: {answer!r}")
    finally:
        for name in made:
            netns.delete(name)
        if not run_dir_existed:
            netns.release_run_dir()


if __name__ == "__main__":
    main()
