"""Lab files load with kubeadm/flannel defaults; every class of mistake is rejected with
the file, the line and the field."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from netlab.errors import LabFileError, ManifestError
from netlab.lab.labfile import Lab, PortRange, format_duration, lab_from_data, load_lab

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

NODES = """\
nodes:
  - {name: cp, role: control-plane}
  - {name: w1, role: worker}
"""


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "lab.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def lab_error(write):
    def lab_error(text: str) -> LabFileError:
        path = write(text)
        with pytest.raises(LabFileError) as info:
            load_lab(path)
        assert info.value.file == str(path)
        return info.value
    return lab_error


def test_default_topology_loads_with_its_demo_manifests():
    lab = load_lab(TOPOLOGIES / "default.yaml")
    assert lab.name == "default" and lab.node_backend == "netns"
    assert lab.node_ips == {"control-plane": IPv4Address("192.168.10.2"),
                            "worker-1": IPv4Address("192.168.10.3"),
                            "worker-2": IPv4Address("192.168.10.4")}
    assert lab.control_plane.name == "control-plane"
    assert [n.name for n in lab.workers] == ["worker-1", "worker-2"]
    assert [(o.kind, o.name) for o in lab.objects] == [
        ("Deployment", "web"), ("Pod", "client"), ("Service", "web"), ("Service", "web-nodeport")]
    assert lab.manifest_paths == [TOPOLOGIES / "demo" / "web.yaml",
                                  TOPOLOGIES / "demo" / "web-svc.yaml"]
    assert lab.source == TOPOLOGIES / "default.yaml"


def test_host_gw_topology_differs_only_in_backend_and_name():
    default, hostgw = load_lab(TOPOLOGIES / "default.yaml"), load_lab(TOPOLOGIES / "host-gw.yaml")
    assert hostgw.name == "hostgw" and hostgw.network.backend == "host-gw"
    assert hostgw.node_ips == default.node_ips
    assert hostgw.network.model_copy(update={"backend": "vxlan"}) == default.network


def test_a_name_alone_gives_the_kubeadm_and_flannel_defaults(write):
    lab = load_lab(write("name: mini\n"))
    net = lab.network
    assert net.pod_cidr == IPv4Network("10.244.0.0/16") and net.node_subnet_len == 24
    assert net.service_cidr == IPv4Network("10.96.0.0/12")
    assert (net.backend, net.vxlan.vni, net.vxlan.port) == ("vxlan", 1, 8472)
    assert net.underlay.cidr == IPv4Network("192.168.10.0/24") and net.underlay.mtu == 1500
    assert lab.gateway == IPv4Address("192.168.10.1")
    assert net.node_port_range == PortRange(30000, 32767) and 30080 in net.node_port_range
    assert net.cluster_domain == "cluster.local"
    assert (lab.proxy.mode, lab.proxy.sync_period, lab.proxy.min_sync_period) == (
        "iptables", 30.0, 1.0)
    assert lab.dns.enabled and lab.dns.replicas == 2 and lab.dns.ttl == 30
    assert lab.dns_ip == IPv4Address("10.96.0.10")
    assert lab.ext_address == IPv4Address("192.168.10.100")
    assert lab.store.backend == "sqlite" and lab.objects == []
    assert [(n.name, n.role) for n in lab.nodes] == [
        ("control-plane", "control-plane"), ("worker-1", "worker"), ("worker-2", "worker")]


def test_addresses_follow_the_ranges_the_user_chose(write):
    lab = load_lab(write(NODES + "network:\n  underlay: {cidr: 10.0.0.0/16}\n"
                         "  serviceCIDR: 172.20.0.0/16\n"))
    assert lab.gateway == IPv4Address("10.0.0.1") and lab.ext_address == IPv4Address("10.0.0.100")
    assert lab.node_ips == {"cp": IPv4Address("10.0.0.2"), "w1": IPv4Address("10.0.0.3")}
    assert lab.dns_ip == IPv4Address("172.20.0.10")


def test_node_addresses_skip_given_ones_the_gateway_and_ext(write):
    lab = load_lab(write("""\
        network: {underlay: {gateway: 192.168.10.2}}
        ext: {address: 192.168.10.4}
        nodes:
          - {name: cp, role: control-plane}
          - {name: w1, address: 192.168.10.3}
          - {name: w2}
        """))
    assert [str(ip) for ip in lab.node_ips.values()] == [
        "192.168.10.5", "192.168.10.3", "192.168.10.6"]


def test_durations_are_go_duration_strings(write):
    lab = load_lab(write("proxy: {mode: ipvs, syncPeriod: 1m30s, minSyncPeriod: 500ms}\n"))
    assert (lab.proxy.sync_period, lab.proxy.min_sync_period) == (90.0, 0.5)
    assert format_duration(0.5) == "500ms" and format_duration(90.0) == "90s"


def test_a_lab_round_trips_through_its_json_dump(write):
    lab = load_lab(TOPOLOGIES / "default.yaml")
    dumped = lab.model_dump(by_alias=True, mode="json")
    assert dumped["network"]["podCIDR"] == "10.244.0.0/16"
    assert dumped["proxy"]["syncPeriod"] == "30s"
    assert dumped["network"]["nodePortRange"] == "30000-32767"
    assert Lab.model_validate(dumped).model_dump(by_alias=True, mode="json") == dumped


def test_a_renamed_lab_keeps_its_manifests_and_checks_the_name():
    lab = load_lab(TOPOLOGIES / "default.yaml").renamed("second")
    assert lab.name == "second" and len(lab.objects) == 4
    assert lab.source == TOPOLOGIES / "default.yaml"
    with pytest.raises(LabFileError) as info:
        lab.renamed("Not_Valid")
    assert info.value.field == "name" and info.value.file == str(TOPOLOGIES / "default.yaml")


def test_etcd_store_without_endpoints_means_the_lab_runs_its_own(write):
    lab = load_lab(write("store: {backend: etcd}\n"))
    assert lab.store.backend == "etcd" and lab.store.endpoints == []


def test_etcd_store_takes_endpoints(write):
    lab = load_lab(write("store: {backend: etcd, endpoints: ['http://192.168.10.2:2379']}\n"))
    assert lab.store.endpoints == ["http://192.168.10.2:2379"]


def test_lab_from_data_for_scripts(tmp_path):
    (tmp_path / "m.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    lab = lab_from_data({"name": "py", "manifests": ["m.yaml"]}, base_dir=tmp_path)
    assert [o.name for o in lab.objects] == ["x"] and lab.manifest_paths == [tmp_path / "m.yaml"]
    with pytest.raises(LabFileError) as info:
        lab_from_data({"name": "py", "nodez": []}, source="script.py")
    assert str(info.value).startswith("script.py: nodez: unknown field")


# -- rejected files ------------------------------------------------------------------------


def test_unknown_keys_are_errors_that_list_the_known_ones(lab_error):
    err = lab_error("name: x\nnetwork:\n  podCidr: 10.244.0.0/16\n")
    assert (err.field, err.line) == ("network.podCidr", 3)
    assert "unknown field" in err.reason and "podCIDR" in err.reason


@pytest.mark.parametrize(("text", "field", "line", "message"), [
    ("name: Default\n", "name", 1, "RFC 1123 label"),
    ("name: a-very-long-lab\n", "name", 1, "no more than 12"),
    (NODES + "  - {name: worker-with-long-name, role: worker}\n", "nodes[2].name", 4,
     "no more than 15"),
    (NODES + "  - {name: w2, role: master}\n", "nodes[2].role", 4, "'control-plane' or 'worker'"),
    ("nodeBackend: docker\n", "nodeBackend", 1, "'netns' or 'vm'"),
    ("network: {backend: geneve}\n", "network.backend", 1, "got \"geneve\""),
    ("network:\n  vxlan: {vni: 16777216}\n", "network.vxlan.vni", 2, "less than or equal"),
    ("network:\n  vxlan: {port: '8472'}\n", "network.vxlan.port", 2, "valid integer"),
    ("network:\n  podCIDR: 10.244.1.0/16\n", "network.podCIDR", 2, "did you mean 10.244.0.0/16"),
    ("network:\n  serviceCIDR: 10.96.0.0\n", "network.serviceCIDR", 2, "CIDR"),
    ("network:\n  nodePortRange: 32767-30000\n", "network.nodePortRange", 2, "first <= last"),
    ("network:\n  clusterDomain: Cluster_Local\n", "network.clusterDomain", 2, "RFC 1123"),
    ("network:\n  underlay: {mtu: 100}\n", "network.underlay.mtu", 2, "greater than or equal"),
    ("proxy: {mode: userspace}\n", "proxy.mode", 1, "'iptables', 'ipvs' or 'nftables'"),
    ("proxy: {syncPeriod: 30}\n", "proxy.syncPeriod", 1, "duration string"),
    ("proxy: {syncPeriod: 30 seconds}\n", "proxy.syncPeriod", 1, "not a duration"),
    ("proxy: {syncPeriod: 1s, minSyncPeriod: 2s}\n", "proxy.minSyncPeriod", 1,
     "must not exceed syncPeriod"),
    ("dns: {enabled: 'yes'}\n", "dns.enabled", 1, "valid boolean"),
    ("dns:\n  upstreams: [1.1.1.1, dns.google]\n", "dns.upstreams[1]", 2, "IPv4 address"),
    ("dns:\n  clusterIP: 10.244.0.10\n", "dns.clusterIP", 2, "inside network.serviceCIDR"),
    ("dns:\n  clusterIP: 10.96.0.1\n", "dns.clusterIP", 2, "kubernetes Service"),
    ("store: {backend: etcd, endpoints: ['https://a:2379']}\n", "store.endpoints[0]", 1,
     "TLS"),
    ("store: {endpoints: ['http://a:2379']}\n", "store.endpoints", 1, "only used with"),
    ("store: {backend: etcd, endpoints: [localhost]}\n", "store.endpoints[0]", 1, "URL"),
    ("manifests: demo.yaml\n", "manifests", 1, "valid list"),
    (NODES + "  - {name: w2, labels: {role: [a]}}\n", "nodes[2].labels.role", 4, "valid string"),
    (NODES + "  - {name: w2, labels: {'bad key': a}}\n", "nodes[2].labels.bad key", 4,
     "label key"),
])
def test_bad_values_name_the_field_and_line(lab_error, text, field, line, message):
    err = lab_error(text)
    assert (err.field, err.line) == (field, line)
    assert message in err.reason


def test_exactly_one_control_plane_node(lab_error):
    err = lab_error("nodes:\n  - {name: a}\n  - {name: b}\n")
    assert err.field == "nodes" and "exactly one node with role control-plane" in err.reason
    err = lab_error(NODES + "  - {name: cp2, role: control-plane}\n")
    assert (err.field, err.line) == ("nodes[2].role", 4)
    assert "only one control-plane node" in err.reason


def test_at_least_one_worker(lab_error):
    err = lab_error("nodes:\n  - {name: cp, role: control-plane}\n")
    assert err.field == "nodes" and "at least one node with role worker" in err.reason


def test_node_names_are_unique(lab_error):
    err = lab_error(NODES + "  - {name: w1}\n")
    assert (err.field, err.line) == ("nodes[2].name", 4) and "nodes[1].name" in err.reason


def test_node_addresses_are_unique_and_inside_the_underlay(lab_error):
    err = lab_error(NODES + "  - {name: w2, address: 192.168.10.7}\n"
                    "  - {name: w3, address: 192.168.10.7}\n")
    assert (err.field, err.line) == ("nodes[3].address", 5) and "nodes[2].address" in err.reason
    err = lab_error(NODES + "  - {name: w2, address: 10.0.0.7}\n")
    assert err.field == "nodes[2].address" and "192.168.10.0/24" in err.reason
    for taken, owner in (("192.168.10.1", "gateway"), ("192.168.10.100", "ext.address")):
        err = lab_error(NODES + f"  - {{name: w2, address: {taken}}}\n")
        assert err.field == "nodes[2].address" and owner in err.reason
    err = lab_error(NODES + "  - {name: w2, address: 192.168.10.255}\n")
    assert "not a host address" in err.reason


def test_ext_and_gateway_must_be_host_addresses_of_the_underlay(lab_error):
    err = lab_error("ext: {address: 192.168.11.1}\n")
    assert err.field == "ext.address"
    err = lab_error("network:\n  underlay: {gateway: 192.168.10.0}\n")
    assert err.field == "network.underlay.gateway"


@pytest.mark.parametrize(("network", "field", "other"), [
    ("serviceCIDR: 10.244.128.0/20", "network.serviceCIDR", "network.podCIDR"),
    ("underlay: {cidr: 10.96.0.0/24}", "network.underlay.cidr", "network.serviceCIDR"),
    ("podCIDR: 192.168.0.0/16", "network.podCIDR", "network.underlay.cidr"),
])
def test_address_ranges_must_not_overlap_and_both_are_named(lab_error, network, field, other):
    err = lab_error(f"network:\n  {network}\n")
    assert err.field == field and other in err.reason and err.line in (2, 3)


def test_node_subnets_must_fit_the_pod_cidr(lab_error):
    err = lab_error("network: {podCIDR: 10.244.0.0/24, nodeSubnetLen: 24}\n")
    assert err.field == "network.nodeSubnetLen" and "longer than podCIDR" in err.reason
    err = lab_error("network: {podCIDR: 10.244.0.0/23, nodeSubnetLen: 24}\n")
    assert "2 /24 subnets, fewer than the 3 nodes" in err.reason


def test_a_small_underlay_runs_out_of_node_addresses(lab_error):
    err = lab_error("network: {underlay: {cidr: 10.0.0.0/29}}\nnodes:\n"
                    "  - {name: cp, role: control-plane}\n" +
                    "".join(f"  - {{name: w{i}}}\n" for i in range(5)))
    assert err.field == "nodes[4].address" and "no free address" in err.reason


def test_missing_manifest_names_its_path_and_index(write, tmp_path):
    write("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n", "a.yaml")
    path = write("manifests:\n  - a.yaml\n  - gone.yaml\n")
    with pytest.raises(LabFileError) as info:
        load_lab(path)
    assert (info.value.field, info.value.line) == ("manifests[1]", 3)
    assert str(tmp_path / "gone.yaml") in info.value.reason


def test_an_invalid_manifest_is_reported_in_its_own_file(write):
    bad = write("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n", "bad.yaml")
    with pytest.raises(ManifestError) as info:
        load_lab(write("manifests: [bad.yaml]\n"))
    assert (info.value.file, info.value.field, info.value.line) == (
        str(bad), "spec.containers", 4)


def test_the_same_object_in_two_manifests_is_rejected(write):
    for name in ("a.yaml", "b.yaml"):
        write("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", name)
    with pytest.raises(ManifestError, match="Duplicate value: Namespace x"):
        load_lab(write("manifests: [a.yaml, b.yaml]\n"))


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("- name: x\n", "expected a mapping"),
    ("name: a\n---\nname: b\n", "one YAML document"),
    ("name: a\nname: b\n", "duplicate key"),
    ("name: [a\n", "invalid YAML"),
])
def test_files_that_are_not_one_mapping_are_rejected(lab_error, text, message):
    assert message in lab_error(text).reason


def test_a_missing_lab_file_is_a_lab_file_error(tmp_path):
    with pytest.raises(LabFileError, match="no such file"):
        load_lab(tmp_path / "nope.yaml")
    with pytest.raises(LabFileError, match="is a directory"):
        load_lab(tmp_path)


def test_all_field_problems_are_reported_together(lab_error):
    err = lab_error("name: X\nproxy: {mode: nope}\n")
    assert err.field == "name" and "proxy.mode" in str(err)
