"""Bringing labs up and down: the cleanup guarantee, bad input, host-gw, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from netlab.lab import lifecycle
from netlab.lab.session import running_lab, start_lab
from netlab.lab.state import StateDir
from tests.hoststate import HostState
from tests.integration.labs import lab_data, pod

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]


def knetlab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_down_leaves_the_host_exactly_as_before():
    before = HostState.capture("t-down")
    with running_lab(lab_data("t-down")) as lab:
        lab.apply([pod("a", "worker-1"), pod("b", "worker-2")])
        lab.wait_ready()
        during = HostState.capture("t-down")
        # The root namespace is untouched while the lab runs, too.
        assert (during.links, during.routes, during.iptables, during.nft) == (
            before.links, before.routes, before.iptables, before.nft)
    assert HostState.capture("t-down").differences(before) == []


def test_clean_after_kill_9_of_every_lab_process_leaves_the_host_as_before():
    before = HostState.capture("t-kill")
    lab = start_lab(lab_data("t-kill"))
    lab.apply([pod("a", "worker-1"), pod("b", "worker-2")])
    lab.wait_ready()
    for proc in lab.state.processes():
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert StateDir("t-kill").exists()
    with pytest.raises(lifecycle.LabError, match="left behind.*knetlab clean --name t-kill"):
        start_lab(lab_data("t-kill"))  # a killed lab is told apart from a running one
    result = knetlab("clean", "--name", "t-kill")
    assert result.returncode == 0, result.stderr
    assert HostState.capture("t-kill").differences(before) == []


def test_up_twice_under_one_name_is_refused_and_keeps_the_first_lab():
    with running_lab(lab_data("t-twice")) as lab:
        with pytest.raises(lifecycle.LabError, match="already up"):
            start_lab(lab_data("t-twice"))
        assert lab.objects.list("Node")[0]


def test_up_without_pods_returns_with_every_lab_process_running():
    """Nothing to be Ready is no reason to return before the runtimes exist."""
    data = {**lab_data("t-nopods"), "dns": {"enabled": False}}
    with running_lab(data) as lab:
        nodes = ("control-plane", "worker-1", "worker-2")
        assert {p.role for p in lab.state.processes() if p.alive()} >= {
            "supervisor", "control-plane",
            *(f"{kind}-{node}" for node in nodes for kind in ("agent", "runtime"))}


def test_bad_lab_file_is_rejected_naming_file_and_field_with_nothing_created(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t-bad\nnetwork:\n  podCIDR: 10.96.0.0/16\n")
    before = HostState.capture("t-bad")
    result = knetlab("up", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr and "podCIDR" in result.stderr
    assert "Traceback" not in result.stderr
    assert HostState.capture("t-bad").differences(before) == []
    assert not StateDir("t-bad").exists()


def test_bad_manifest_in_lab_is_rejected_with_nothing_created(tmp_path):
    (tmp_path / "app.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
        "  - name: c\n    image: i\n    ports: [{containerPort: 70000}]\n")
    (tmp_path / "lab.yaml").write_text("name: t-badm\nmanifests: [app.yaml]\n")
    before = HostState.capture("t-badm")
    result = knetlab("up", str(tmp_path / "lab.yaml"))
    assert result.returncode == 1
    assert "app.yaml" in result.stderr and "containerPort" in result.stderr
    assert HostState.capture("t-badm").differences(before) == []


def test_host_gw_backend_routes_pods_across_nodes_without_vxlan():
    before = HostState.capture("t-hostgw")
    with running_lab(lab_data("t-hostgw", backend="host-gw")) as lab:
        lab.apply([pod("a", "worker-1"), pod("c", "worker-2")])
        lab.wait_ready()
        out = lab.exec("a", "curl", "-s", "--max-time", "5",
                       f"http://{lab.pod_ip('c')}:8080/hostname").stdout
        assert out == "c"
        routes = lab.exec("worker-1", "ip", "route").stdout
        cidr = lab.objects.get("Node", None, "worker-2")["spec"]["podCIDR"]
        assert f"{cidr} via {lab.node_ip('worker-2')} dev eth0" in routes
        assert "flannel" not in lab.exec("worker-1", "ip", "link").stdout
        mtu = lab.exec("a", "cat", "/sys/class/net/eth0/mtu", check=False).stdout
        link = lab.exec("a", "ip", "link", "show", "eth0").stdout
        assert "mtu 1500" in link, mtu
    assert HostState.capture("t-hostgw").differences(before) == []


def test_cli_get_exec_apply_delete_round_trip(tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec:\n  nodeName: worker-2\n"
        "  containers:\n  - name: c\n    image: nginx\n    imagePullPolicy: Always\n"
        "    ports: [{containerPort: 80}]\n")
    with running_lab(lab_data("t-cli")) as lab:
        applied = knetlab("apply", "-f", str(manifest), "--name", "t-cli")
        assert applied.stdout.strip() == "pod/solo created", applied.stderr
        assert "imagePullPolicy" in applied.stderr  # accepted and noted, not an error
        lab.wait_ready()
        wide = knetlab("get", "pods", "-o", "wide", "--name", "t-cli").stdout
        assert "solo" in wide and lab.pod_ip("solo") in wide and "worker-2" in wide
        listing = knetlab("get", "nodes", "-o", "json", "--name", "t-cli").stdout
        assert '"kind": "List"' in listing and '"InternalIP"' in listing
        served = knetlab("exec", "--name", "t-cli", "worker-1", "--", "curl", "-s",
                         f"http://{lab.pod_ip('solo')}:80/hostname").stdout
        assert served == "solo"
        deleted = knetlab("delete", "-f", str(manifest), "--name", "t-cli")
        assert deleted.stdout.strip() == "pod/solo deleted"
        lab.wait_for(lambda: lab.objects.get("Pod", "default", "solo") is None,
                     what="solo to go")
        missing = knetlab("get", "pods", "nope", "--name", "t-cli")
        assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr


def test_overlapping_labs_leave_the_host_as_before_whichever_goes_down_first():
    before = HostState.capture()
    first = start_lab(lab_data("t-first"))
    try:
        second = start_lab(lab_data("t-second"))
        lifecycle.down(first.name)
    finally:
        if StateDir("t-first").exists():
            lifecycle.down("t-first")
    lifecycle.down(second.name)
    assert HostState.capture().differences(before) == []
