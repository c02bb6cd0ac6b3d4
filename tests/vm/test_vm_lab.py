"""The VM-tier lab (issue 7): topologies/vm.yaml, each node a guest provisioned by
scripts/provision with etcd on the control-plane guest, the agents joined over the
guests' L2. Pod-to-pod across guests, a ClusterIP from a pod, a NodePort from `ext`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from netlab.lab.vm.nodes import VmLabError, check_checkout, guests
from netlab.lab.vm.targets import guest_place

LAB_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "vm.yaml")
LAB = "vmtier"
UP_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def vm_lab() -> Iterator[RunningLab]:
    try:
        check_checkout()
    except VmLabError as exc:
        pytest.skip(str(exc))
    lab = start_lab(LAB_FILE, name=LAB, timeout=UP_TIMEOUT)
    try:
        yield lab
    finally:
        lifecycle.down(LAB)


def in_pod(lab: RunningLab, pod: str, *argv: str) -> str:
    place = guest_place(lab.state, lab.objects, pod)
    assert place is not None and place.netns, pod
    rc, out, err = place.run(list(argv), timeout=120)
    assert rc == 0, f"{pod}: {' '.join(argv)}: exit {rc}: {err}"
    return out


def web_pods(lab: RunningLab) -> dict[str, str]:
    """web pod name -> node."""
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in lab.pods()
            if p["metadata"].get("labels", {}).get("app") == "web"}


def test_nodes_are_guests_with_their_own_kernel_and_etcd_on_the_first(
        vm_lab: RunningLab) -> None:
    nodes = guests(vm_lab.state)
    try:
        assert set(nodes) == {"control-plane", "worker-1", "worker-2"}
        host_kernel = os.uname().release
        for name, guest in nodes.items():
            assert guest.run(["uname", "-r"], check=True).stdout.strip() != host_kernel, name
        etcd = nodes["control-plane"].run(["pgrep", "-x", "etcd"])
        assert etcd.rc == 0
        for name in ("worker-1", "worker-2"):
            assert nodes[name].run(["pgrep", "-x", "etcd"]).rc == 1, name
    finally:  # each guest has 4 command ports; this process must not keep one
        for guest in nodes.values():
            guest.detach()


def test_pod_to_pod_across_guests(vm_lab: RunningLab) -> None:
    client_node = vm_lab.pod("client")["spec"]["nodeName"]
    remote = {name: node for name, node in web_pods(vm_lab).items() if node != client_node}
    assert remote, f"every web pod is on {client_node}"
    for name in remote:
        answer = in_pod(vm_lab, "client", "curl", "-s", "--max-time", "20",
                        f"http://{vm_lab.pod_ip(name)}:8080/hostname")
        assert answer == name


def test_clusterip_from_a_pod(vm_lab: RunningLab) -> None:
    service = vm_lab.objects.get("Service", "default", "web")
    assert service is not None
    seen = {in_pod(vm_lab, "client", "curl", "-s", "--max-time", "20",
                   f"http://{service['spec']['clusterIP']}/hostname") for _ in range(6)}
    assert seen <= set(web_pods(vm_lab)) and seen


def test_nodeport_from_ext_on_every_node(vm_lab: RunningLab) -> None:
    pods = set(web_pods(vm_lab))
    for node in ("control-plane", "worker-1", "worker-2"):
        answer = vm_lab.exec("ext", "curl", "-s", "--max-time", "20",
                             f"http://{vm_lab.node_ip(node)}:30080/hostname", timeout=60)
        assert answer.stdout in pods, node


def test_knetlab_exec_runs_in_the_guest(vm_lab: RunningLab) -> None:
    result = subprocess.run([sys.executable, "-m", "netlab", "exec", "--name", LAB,
                             "worker-1", "--", "ip", "-br", "addr", "show", "eth0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert vm_lab.node_ip("worker-1") in result.stdout
