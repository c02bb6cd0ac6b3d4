"""Node-side logic that needs no root: host-local IPAM, kubelet files, flannel's data."""

from __future__ import annotations

import os

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.node import podfiles
from netlab.node.cni import host_veth_name
from netlab.node.ipam import AddressPoolExhausted, HostLocalIPAM
from netlab.node.overlay import Lease, masquerade_payload, network_config, subnet_env
from netlab.node.probes import resolve_port


def test_ipam_skips_network_gateway_and_broadcast(tmp_path):
    ipam = HostLocalIPAM(str(tmp_path), "10.244.1.0/29")
    ips = [ipam.allocate(f"c{i}").ip for i in range(5)]
    assert ips == ["10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"]
    with pytest.raises(AddressPoolExhausted):
        ipam.allocate("one-too-many")


def test_ipam_allocations_are_files_that_survive_a_restart(tmp_path):
    first = HostLocalIPAM(str(tmp_path), "10.244.1.0/24")
    a = first.allocate("pod-a")
    assert (tmp_path / a.ip).read_text() == "pod-a\neth0"
    assert (tmp_path / "last_reserved_ip.0").read_text() == a.ip
    again = HostLocalIPAM(str(tmp_path), "10.244.1.0/24")
    assert again.allocate("pod-a").ip == a.ip
    assert again.allocate("pod-b").ip == "10.244.1.3"


def test_ipam_scans_on_from_the_last_reserved_address_like_host_local(tmp_path):
    ipam = HostLocalIPAM(str(tmp_path), "10.244.1.0/24")
    a, b = ipam.allocate("a"), ipam.allocate("b")
    ipam.release("a")
    assert not os.path.exists(tmp_path / a.ip)
    assert ipam.allocate("c").ip == "10.244.1.4"  # not a's address: scanning goes on
    assert b.ip == "10.244.1.3"
    ipam.release("never-allocated")  # CNI DEL of an unknown container is fine


def test_host_veth_name_is_veth_plus_8_hex_and_stable():
    name = host_veth_name("0d9e1c5a-uid")
    assert name.startswith("veth") and len(name) == 12 and name == host_veth_name("0d9e1c5a-uid")
    int(name[4:], 16)


def test_resolv_conf_is_what_kubelet_writes_for_cluster_first():
    assert podfiles.resolv_conf("shop", "cluster.local", "10.96.0.10") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n")


def test_pod_netns_names_cannot_clash_with_nodes_and_stay_short():
    assert podfiles.pod_netns_name("lab", "default", "web-1") == "nl-lab-default.web-1"
    long = podfiles.pod_netns_name("lab", "n" * 63, "p" * 253)
    assert len(long) <= podfiles.MAX_NETNS_NAME


def test_flannel_lease_value_has_flannels_layout():
    lease = Lease("10.244.1.0/24", "192.168.10.3", "vxlan", "ce:28:31:9a:7b:01", 1)
    assert lease.to_value() == {"PublicIP": "192.168.10.3", "PublicIPv6": None,
                                "BackendType": "vxlan",
                                "BackendData": {"VNI": 1, "VtepMAC": "ce:28:31:9a:7b:01"}}
    assert Lease.from_value("10.244.1.0/24", lease.to_value()) == lease


def test_network_config_and_subnet_env_match_flannel():
    config = ClusterConfig()
    assert network_config(config) == {"Network": "10.244.0.0/16", "SubnetLen": 24,
                                      "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
    assert subnet_env(config, "10.244.1.0/24") == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


def test_masquerade_rules_are_flannels_in_order():
    payload = masquerade_payload("10.244.0.0/16", "10.244.1.0/24")
    rules = [line for line in payload.splitlines() if line.startswith("-A FLANNEL-POSTRTG")]
    assert [r.split(" -m comment")[0] for r in rules] == [
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4",
        "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24",
        "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16",
    ]
    assert all('--comment "flanneld masq"' in r for r in rules)


def test_probe_ports_resolve_by_number_or_container_port_name():
    containers = [{"ports": [{"name": "http", "containerPort": 8080}]}]
    assert resolve_port(8080, containers) == 8080
    assert resolve_port("http", containers) == 8080
    assert resolve_port("nope", containers) is None
