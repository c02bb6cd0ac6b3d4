"""The node agent's config file (k3s-style) and kubelet's resolv.conf for dnsPolicy/dnsConfig."""

from __future__ import annotations

import pytest

from netlab.node import agentconfig, podfiles
from netlab.node.agentconfig import AgentConfigError, AgentSettings


def test_no_file_means_every_default(tmp_path):
    assert agentconfig.load(str(tmp_path / "config.yaml")) == AgentSettings()


def test_settings_use_k3s_key_names(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("flannel-iface: eth1\ndisable-kube-proxy: true\n")
    assert agentconfig.load(str(path)) == AgentSettings("eth1", True)


def test_a_misspelt_or_mistyped_setting_stops_the_agent_with_file_and_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("flannel-ifcae: eth1\n")
    with pytest.raises(AgentConfigError, match=r"config.yaml: flannel-ifcae: unknown setting"):
        agentconfig.load(str(path))
    path.write_text("disable-kube-proxy: 'yes please'\n")
    with pytest.raises(AgentConfigError, match="disable-kube-proxy: must be a bool"):
        agentconfig.load(str(path))
    path.write_text("flannel-iface: [unclosed\n")
    with pytest.raises(AgentConfigError, match="not valid YAML"):
        agentconfig.load(str(path))


def test_write_checks_first_and_an_empty_config_removes_the_file(tmp_path):
    path = str(tmp_path / "node" / "config.yaml")
    agentconfig.write(path, {"flannel-iface": "eth1"})
    assert agentconfig.read_values(path) == {"flannel-iface": "eth1"}
    with pytest.raises(AgentConfigError):
        agentconfig.write(path, {"disable-kube-proxy": "no"})
    assert agentconfig.read_values(path) == {"flannel-iface": "eth1"}
    agentconfig.write(path, {})
    assert agentconfig.read_values(path) == {}


def test_cluster_first_is_the_resolv_conf_kubelet_always_wrote():
    assert podfiles.pod_resolv_conf({}, "shop", "cluster.local", "10.96.0.10") == \
        podfiles.resolv_conf("shop", "cluster.local", "10.96.0.10")


def test_dns_policy_none_keeps_only_dns_config():
    spec = {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.96.0.10"],
                                              "options": [{"name": "ndots", "value": "1"}]}}
    assert podfiles.pod_resolv_conf(spec, "default", "cluster.local", "10.96.0.10") == \
        "nameserver 10.96.0.10\noptions ndots:1\n"


def test_dns_config_is_merged_onto_cluster_first():
    spec = {"dnsConfig": {"nameservers": ["1.1.1.1", "10.96.0.10"], "searches": ["corp.example"],
                          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}
    assert podfiles.pod_resolv_conf(spec, "default", "cluster.local", "10.96.0.10") == (
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "nameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:2 edns0\n")


def test_dns_policy_default_takes_the_nodes_resolv_conf():
    host = "# host\nnameserver 192.168.10.1\nsearch lan\noptions timeout:1\n"
    assert podfiles.pod_resolv_conf({"dnsPolicy": "Default"}, "default", "cluster.local",
                                    "10.96.0.10", host) == (
        "search lan\nnameserver 192.168.10.1\noptions timeout:1\n")
