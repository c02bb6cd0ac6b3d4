"""Every troubleshooting exercise, played on one real lab (issue 8).

For each exercise of the built-in catalog: after `start` the checker fails and the
symptom is observable (the exercise's symptom checks, real traffic, pass while it
is broken); after the reference solution the checker passes; `reset` gives back a
healthy lab (the exercise's own check and a baseline of the lab's paths pass);
and every alternative fix the exercise lists passes the same checker, so the
checker decides by what works, not by which command was typed. For several
exercises `check svc` (the Debug Services walk) stops at the step the breakage is
about.

One lab serves the module (the exercises all use the catalog's troubleshoot lab),
as `knetlab exercise start` reuses a running lab; each test leaves it healthy for
the next. Its kube-proxies resync every 2 s instead of 30 s, and every exercise is
checked again after such a resync, so a breakage that the lab's own reconciling
would quietly undo (before a learner could look) fails here. The host footprint is
compared at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netlab.exercises.catalog import load_catalog
from netlab.exercises.checks import CheckReport, http_get
from netlab.exercises.model import Exercise
from netlab.exercises.runner import ExerciseRun, read_active
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from tests.hoststate import HostState
from tests.integration.labs import with_suite_store
from tests.integration.svc_traffic import eventually

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

LAB = "ex-trouble"
CATALOG = load_catalog()
SETTLE = 45.0  # seconds a fix or a reset may take to show (agent restarts, pod rollouts)
SYNC_PERIOD = 2.0  # the test lab's kube-proxy resync period

# exercise -> (Service, source pod or None, the Debug Services step that must fail first)
CHECK_SVC = {
    "selector-typo": ("hostnames", None, "selector"),
    "target-port": ("hostnames", None, "target-port"),
    "readiness-probe": ("hostnames", None, "pods-ready"),
    "proxy-stopped": ("hostnames", "client", "kube-proxy"),
    "dns-no-endpoints": ("hostnames", "client", "dns"),
    "hairpin-off": ("client", "server", "hairpin"),
    "stale-udp-conntrack": ("stats", "client", "conntrack"),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    before = HostState.capture(LAB)
    running = start_lab(_quick_resync_lab(tmp_path_factory.mktemp("lab")), LAB)
    try:
        yield running
    finally:
        lifecycle.down(LAB)
    assert _footprint(HostState.capture(LAB)).differences(_footprint(before)) == []


def _quick_resync_lab(folder: Path) -> Path:
    """The catalog's lab file with kube-proxy resyncing every SYNC_PERIOD seconds, on the
    suite's store backend."""
    source = next(iter(CATALOG.values())).lab
    data = yaml.safe_load(source.read_text())
    data["manifests"] = [str(source.parent / m) for m in data["manifests"]]
    data["proxy"] = {"syncPeriod": f"{SYNC_PERIOD:g}s", "minSyncPeriod": "1s"}
    data = with_suite_store(data)
    path = folder / "troubleshoot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _footprint(state: HostState) -> HostState:
    """The host as far as this lab is concerned: its namespaces, pod files, mounts and
    processes, and the host's own links, routes and rules. Namespaces that other
    people's tests make and remove meanwhile on a shared machine are left out."""
    from dataclasses import replace

    mine = f"nl-{LAB}-"

    def keep(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if n.startswith(mine))

    return replace(state, netns=keep(state.netns), etc_netns=keep(state.etc_netns),
                   run_netns=keep(state.run_netns),
                   mounts=tuple(m for m in state.mounts if mine in m),
                   processes=tuple(p for p in state.processes if f"/{LAB}" in p))


def _why(report: CheckReport) -> str:
    return "\n".join(f"{'ok  ' if r.ok else 'FAIL'} {r.title}: {r.evidence}"
                     for r in report.results)


def _healthy(lab: RunningLab) -> None:
    """The lab's baseline paths: pod to pod across nodes both ways and on one node,
    a Service by name (DNS, then kube-proxy), each hostnames pod directly."""
    client, server, neighbour = (lab.netns(p) for p in ("client", "server", "neighbour"))
    ip = {p: lab.pod_ip(p) for p in ("client", "server", "neighbour")}
    assert http_get(client, ip["server"], 8080, "/hostname", 2) == "server"
    assert http_get(server, ip["client"], 8080, "/hostname", 2) == "client"
    assert http_get(client, ip["neighbour"], 8080, "/hostname", 2) == "neighbour"
    assert http_get(client, ip["server"], 8080, "/echo?msg=" + "x" * 4000, 3) == "x" * 4000
    resolved = lab.exec("client", "getent", "ahostsv4", "hostnames", check=False,
                        timeout=15).stdout or "<nothing>"
    vip = lab.objects.get("Service", "default", "hostnames")["spec"]["clusterIP"]
    assert resolved.split()[0] == vip
    names = {p["metadata"]["name"] for p in lab.pods() if p["metadata"]["name"].startswith(
        "hostnames-")}
    for _ in range(6):
        assert http_get(client, vip, 80, "/", 2) in names


def _broken(run: ExerciseRun) -> None:
    report = run.check()
    assert not report.ok, f"{run.exercise.id}: the checker passes on a broken lab:\n" \
                          + _why(report)


def _passes(run: ExerciseRun, after: str) -> None:
    report = run.wait_until_passes(SETTLE)
    assert report.ok, f"{run.exercise.id}: still failing after {after}:\n{_why(report)}"


def _reset(run: ExerciseRun) -> None:
    run.reset()
    _passes(run, "reset")
    run.teardown()
    assert read_active(run.lab.state) is None
    eventually(lambda: _healthy(run.lab) or True, timeout=SETTLE, what="a healthy lab")


@pytest.mark.parametrize("ident", list(CATALOG))
def test_exercise_breaks_solves_and_resets(lab: RunningLab, ident: str) -> None:
    exercise: Exercise = CATALOG[ident]
    run = ExerciseRun(exercise, lab)
    run.start()
    broken_at = time.monotonic()
    try:
        _broken(run)
        symptoms = run.symptoms()
        assert symptoms.ok, f"{ident}: the symptom is not as described:\n{_why(symptoms)}"
        if ident in CHECK_SVC:
            _check_svc_stops_at(lab, *CHECK_SVC[ident])
        time.sleep(max(0.0, broken_at + SYNC_PERIOD + 0.5 - time.monotonic()))
        _broken(run)  # still broken after a resync: nothing repaired it behind our back
        run.solve()
        _passes(run, "the reference solution")
    finally:
        _reset(run)


@pytest.mark.parametrize("ident", [i for i, e in CATALOG.items() if e.alternatives])
def test_alternative_fixes_pass_the_same_checker(lab: RunningLab, ident: str) -> None:
    exercise = CATALOG[ident]
    for alternative in exercise.alternatives:
        run = ExerciseRun(exercise, lab)
        run.start()
        try:
            _broken(run)
            run.run_fix(alternative.steps)
            _passes(run, f"the alternative fix ({alternative.title})")
        finally:
            _reset(run)


def test_every_exercise_has_an_alternative_fix() -> None:
    assert [i for i, e in CATALOG.items() if not e.alternatives] == []
    assert len(CATALOG) >= 12


def _check_svc_stops_at(lab: RunningLab, service: str, source: str | None, step: str) -> None:
    from netlab.check.svc import check_service

    report = check_service(lab, service, source=source)
    first = report.first_failure
    assert first is not None and first.name == step, (
        f"check svc {service}: first failure {first.name if first else None}, expected "
        f"{step}: " + "; ".join(f"{r.name}={r.status}" for r in report.results))


def test_cli_plays_an_exercise_and_keeps_progress(lab: RunningLab, tmp_path: Path) -> None:
    """knetlab exercise start/hint/check/status/solve/reset/list, as a learner types them."""
    env = {**os.environ, "KNETLAB_PROGRESS": str(tmp_path / "progress.json")}

    def knetlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True,
                              text=True, env=env, timeout=180)

    started = knetlab("exercise", "start", "ip-forward-off", "--name", LAB)
    assert started.returncode == 0, started.stderr
    assert "already running, reused" in started.stdout and "Symptom" in started.stdout
    try:
        assert "hint 1 of 3" in knetlab("exercise", "hint").stdout
        assert "hint 3 of 3" in knetlab("exercise", "hint", "3").stdout
        failing = knetlab("exercise", "check")
        assert failing.returncode == 1 and "FAIL" in failing.stdout
        status = knetlab("exercise", "status").stdout
        assert "ip-forward-off on lab " + LAB in status and "hints seen: 3 of 3" in status
        # the learner fixes it by hand
        lab.exec("worker-2", "sysctl", "-w", "net.ipv4.ip_forward=1")
        passing = knetlab("exercise", "check")
        assert passing.returncode == 0 and "Solved! First time." in passing.stdout
    finally:
        reset = knetlab("exercise", "reset")
    assert reset.returncode == 0 and "healthy again" in reset.stdout, reset.stderr
    listing = knetlab("exercise", "list").stdout
    assert any(line.startswith("ip-forward-off") and "solved (3 hints)" in line
               for line in listing.splitlines())
    assert f"1 of {len(CATALOG)} solved" in listing


def test_an_exercise_of_ones_own_with_scripts(lab: RunningLab, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An author's folder on KNETLAB_EXERCISE_PATH, its steps and check as shell scripts."""
    from netlab.exercises.catalog import PATH_ENV, find_exercise

    folder = tmp_path / "forward-off"
    folder.mkdir()
    lab_file = next(iter(CATALOG.values())).lab
    sysctl = '$KNETLAB exec --name "$KNETLAB_LAB" worker-2 -- sysctl -qw net.ipv4.ip_forward='
    (folder / "break.sh").write_text(sysctl + "0\n")
    (folder / "fix.sh").write_text(sysctl + "1\n")
    (folder / "check.sh").write_text(
        'ip=$($KNETLAB get pod server -o json --name "$KNETLAB_LAB" | python3 -c '
        '"import json, sys; print(json.load(sys.stdin)[\'status\'][\'podIP\'])")\n'
        '$KNETLAB exec --name "$KNETLAB_LAB" client -- '
        'curl -s -m 2 "http://$ip:8080/hostname" | grep -qx server\n')
    (folder / "exercise.yaml").write_text(f"""\
id: forward-off
title: worker-2 forwards nothing
lab: {lab_file}
story: a reboot
symptom: worker-2's pods are cut off
hints: [forwarding?, sysctl net.ipv4.ip_forward]
break: [{{script: break.sh}}]
check: [{{script: check.sh}}]
solve: [{{script: fix.sh}}]
reset: [{{script: fix.sh}}]
""")
    monkeypatch.setenv(PATH_ENV, str(tmp_path))
    run = ExerciseRun(find_exercise("forward-off"), lab)
    run.start()
    try:
        _broken(run)
        run.solve()
        _passes(run, "the script fix")
    finally:
        _reset(run)
