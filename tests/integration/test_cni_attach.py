"""The CNI bridge work over raw rtnetlink: what a pod gets, and attach after a restart.

Each test makes its own node and pod namespaces (prefix nlt-cni-) and removes them.
"""

from __future__ import annotations

import errno
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from netlab.kernel import netns
from netlab.kernel.rtnl import Rtnl, RtnlError
from netlab.node.cni import BridgeNetwork, host_veth_name

pytestmark = [pytest.mark.root, pytest.mark.integration]

SUBNET = "10.244.7.0/24"
MTU = 1450


def ip(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "-n", ns, *argv], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def node() -> Iterator[tuple[str, BridgeNetwork, list[str]]]:
    """A node namespace with cni0, and a list to name the pod namespaces in."""
    name = f"nlt-cni-{uuid.uuid4().hex[:8]}"
    pods: list[str] = []
    netns.create(name)
    try:
        with netns.entered(name):
            rtnl = Rtnl()
        bridge = BridgeNetwork(rtnl, SUBNET, MTU)
        with netns.entered(name):
            bridge.ensure_bridge()
        yield name, bridge, pods
        rtnl.close()
    finally:
        for pod in pods:
            netns.delete(pod)
        netns.delete(name)


def attach(node: tuple[str, BridgeNetwork, list[str]], pod: str, uid: str, address: str):
    name, bridge, pods = node
    pods.append(f"{name}-{pod}")
    with netns.entered(name):
        return bridge.attach(f"{name}-{pod}", uid, address)


def test_pod_gets_address_default_route_and_a_hairpin_port_of_cni0(node):
    name = node[0]
    attached = attach(node, "a", "uid-a", "10.244.7.2")
    pod = attached.netns
    assert "inet 10.244.7.2/24" in ip(pod, "-4", "addr", "show", "eth0")
    assert "default via 10.244.7.1 dev eth0" in ip(pod, "route")
    assert f"mtu {MTU}" in ip(pod, "link", "show", "eth0")
    assert "state UP" in ip(pod, "link", "show", "eth0") and "UP" in ip(pod, "link", "show", "lo")
    port = ip(name, "-d", "link", "show", attached.host_veth)
    assert attached.host_veth == host_veth_name("uid-a")
    assert "master cni0" in port and f"mtu {MTU}" in port and "hairpin on" in port
    assert attached.mac in ip(pod, "link", "show", "eth0")


def test_pods_on_one_bridge_reach_each_other(node):
    a = attach(node, "a", "uid-a", "10.244.7.2")
    attach(node, "b", "uid-b", "10.244.7.3")
    result = subprocess.run(["ip", "netns", "exec", a.netns, "ping", "-c1", "-W2", "10.244.7.3"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gateway_mac_stays_put_when_a_port_with_a_lower_mac_comes_and_goes(node):
    """cni0's MAC is set (as the CNI bridge plugin sets it), so the kernel never swaps it
    for a port's: pods keep reaching their gateway by the MAC they have cached."""
    name = node[0]

    def cni0_mac() -> str:
        return ip(name, "-br", "link", "show", "cni0").split()[2]

    attach(node, "a", "uid-a", "10.244.7.2")
    before = cni0_mac()
    low = attach(node, "low", "uid-low", "10.244.7.3")
    ip(name, "link", "set", low.host_veth, "address", "02:00:00:00:00:01")
    assert cni0_mac() == before
    netns.delete(low.netns)
    assert cni0_mac() == before


def test_attach_again_keeps_the_pod_and_completes_what_is_missing(node):
    """After an agent restart: the same veth and MAC, and a lost address comes back."""
    first = attach(node, "a", "uid-a", "10.244.7.2")
    ip(first.netns, "addr", "flush", "dev", "eth0")
    again = attach(node, "a", "uid-a", "10.244.7.2")
    assert again == first
    assert "inet 10.244.7.2/24" in ip(first.netns, "-4", "addr", "show", "eth0")
    assert "default via 10.244.7.1" in ip(first.netns, "route")


def test_attach_into_an_existing_namespace_without_its_veth_creates_the_pair(node):
    """A crash between creating the namespace and the veth leaves exactly this."""
    name = node[0]
    netns.create(f"{name}-a")
    attached = attach(node, "a", "uid-a", "10.244.7.2")
    assert "inet 10.244.7.2/24" in ip(attached.netns, "-4", "addr", "show", "eth0")


def test_kernel_refusals_carry_the_errno(node):
    name = node[0]
    with netns.entered(name):
        rtnl = Rtnl()
    with rtnl:
        assert rtnl.link("no-such-link") is None
        with pytest.raises(RtnlError) as refused:
            rtnl.add_bridge("cni0", MTU)
    assert refused.value.code == errno.EEXIST
