"""Remove what a lab recorded, and only that: processes, namespaces, pod files, dirs.

Works from the state dir alone, so it also cleans up after `kill -9` of every lab
process. A process is killed only if its pid still has the start time recorded for
it (pids get reused); a namespace is removed only if it was recorded and carries
the lab's prefix (the tag).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

from netlab.kernel import netns
from netlab.lab.state import StateDir, netns_prefix, running_labs, state_root
from netlab.node import podfiles

STOP_WAIT = 6.0


@dataclass
class CleanupReport:
    processes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def stop_processes(state: StateDir, report: CleanupReport) -> None:
    """SIGTERM the supervisor first (it stops its children), then anything left."""
    procs = sorted(state.processes(), key=lambda p: p.role != "supervisor")
    for proc in procs:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    for proc in procs:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            report.processes.append(f"{proc.role} (pid {proc.pid}, killed)")
        else:
            report.processes.append(f"{proc.role} (pid {proc.pid})")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)


def remove_namespaces(state: StateDir, report: CleanupReport) -> None:
    prefix = netns_prefix(state.lab)
    names = state.netns_names()
    # Pods first, machines after, the underlay last: veth peers go with their namespace.
    for name in sorted(names, key=lambda n: ("." not in n, n.endswith("underlay"))):
        if name.startswith(prefix) and netns.delete(name):
            report.namespaces.append(name)
    for rec in state.records("etcnetns"):
        if rec["name"].startswith(prefix):
            path = os.path.join(podfiles.ETC_NETNS, rec["name"])
            if os.path.isdir(path):
                podfiles.remove_pod_files(rec["name"])
                report.files.append(path)


def release_host_dirs(state: StateDir) -> None:
    """Take away /run/netns and /etc/netns if this lab created them and they are empty."""
    others = [lab for lab in running_labs() if lab != state.lab]
    if others:
        return
    for rec in state.records("created-dir"):
        if rec["path"] == netns.NETNS_RUN_DIR:
            netns.release_run_dir()
        elif rec["path"] == podfiles.ETC_NETNS:
            podfiles.release_etc_netns()


def clean(state: StateDir) -> CleanupReport:
    report = CleanupReport()
    if not state.exists():
        return report
    stop_processes(state, report)
    remove_namespaces(state, report)
    release_host_dirs(state)
    state.remove()
    with contextlib.suppress(OSError):
        os.rmdir(state_root())  # only if no other lab is left
    return report
