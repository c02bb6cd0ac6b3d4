"""The node's interface and address on a real machine: never the NAT one by accident."""

from __future__ import annotations

import pytest

from netlab.node.hostnet import HostAddress, NodeSetupError, choose_interface, preflight_problems

# A Vagrant VM: eth0 is VirtualBox's NAT (same 10.0.2.15 on every VM, default route),
# eth1 the private network the VMs share.
VAGRANT = [HostAddress("lo", "127.0.0.1", 8), HostAddress("eth0", "10.0.2.15", 24),
           HostAddress("eth1", "192.168.56.11", 24)]


def test_vagrant_worker_uses_the_private_network_not_the_nat_interface():
    assert choose_interface(VAGRANT, route_source="192.168.56.11",
                            store_host="192.168.56.10") == ("eth1", "192.168.56.11")


def test_control_plane_reaching_its_own_address_uses_the_interface_holding_it():
    own = [HostAddress("eth0", "10.0.2.15", 24), HostAddress("eth1", "192.168.56.10", 24)]
    assert choose_interface(own, route_source="192.168.56.10") == ("eth1", "192.168.56.10")


def test_an_explicit_address_picks_the_interface_holding_it():
    assert choose_interface(VAGRANT, address="192.168.56.11") == ("eth1", "192.168.56.11")


def test_an_explicit_interface_gives_its_address():
    assert choose_interface(VAGRANT, iface="eth0") == ("eth0", "10.0.2.15")


def test_address_and_interface_that_disagree_are_refused_naming_both():
    with pytest.raises(NodeSetupError, match="192.168.56.11 is on eth1, not on --iface eth0"):
        choose_interface(VAGRANT, iface="eth0", address="192.168.56.11")


def test_an_address_no_interface_holds_is_refused_listing_what_there_is():
    with pytest.raises(NodeSetupError, match=r"no interface .* holds it .*eth1 192.168.56.11"):
        choose_interface(VAGRANT, address="192.168.56.99")


def test_an_unknown_interface_is_refused():
    with pytest.raises(NodeSetupError, match="--iface eth7: no such interface"):
        choose_interface(VAGRANT, iface="eth7")


def test_a_store_on_loopback_does_not_tell_the_cluster_address():
    with pytest.raises(NodeSetupError, match="give --address IP or --iface NAME"):
        choose_interface(VAGRANT, route_source="127.0.0.1", store_host="127.0.0.1")
    with pytest.raises(NodeSetupError, match="not reached over a network interface"):
        choose_interface(VAGRANT, route_source=None, store_host="etcd.example")


def test_preflight_names_each_missing_setting_and_the_fix():
    values = {"net.ipv4.ip_forward": "0"}
    problems = preflight_problems(values.get)
    assert problems == [
        "net.ipv4.ip_forward is 0, needs 1 (sysctl -w net.ipv4.ip_forward=1)",
        "net.bridge.bridge-nf-call-iptables is missing: load br_netfilter "
        "(modprobe br_netfilter)"]
    ready = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
    assert preflight_problems(ready.get) == []
