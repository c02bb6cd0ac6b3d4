"""The cluster config in the store: published once, read by agents, never changed under them."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.store import clusterconfig, open_store

CONFIG = ClusterConfig(lab="vagrant", pod_cidr="10.245.0.0/16", backend="host-gw",
                       proxy_mode="nftables", dns_upstreams=("192.0.2.53",))


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite://{tmp_path}/store.db") as s:
        yield s


def test_published_config_reads_back_equal_as_a_kube_system_configmap(store):
    assert clusterconfig.read(store) is None
    assert clusterconfig.publish(store, CONFIG) is True
    assert clusterconfig.read(store) == CONFIG
    obj = store.get(clusterconfig.KEY).value
    assert (obj["kind"], obj["metadata"]["namespace"]) == ("ConfigMap", "kube-system")


def test_publishing_the_same_config_again_is_a_no_op(store):
    clusterconfig.publish(store, CONFIG)
    revision = store.revision()
    assert clusterconfig.publish(store, CONFIG) is False
    assert store.revision() == revision


def test_a_different_config_is_refused_naming_each_changed_field(store):
    clusterconfig.publish(store, CONFIG)
    other = dataclasses.replace(CONFIG, pod_cidr="10.244.0.0/16", proxy_mode="iptables")
    with pytest.raises(clusterconfig.ClusterConfigError) as err:
        clusterconfig.publish(store, other)
    assert "pod_cidr ('10.245.0.0/16' -> '10.244.0.0/16')" in str(err.value)
    assert "proxy_mode ('nftables' -> 'iptables')" in str(err.value)
    assert clusterconfig.read(store) == CONFIG


def test_a_malformed_config_map_is_an_error_naming_the_key(store):
    store.put(clusterconfig.KEY, {"kind": "ConfigMap", "data": {"cluster.json": "{nope"}})
    with pytest.raises(clusterconfig.ClusterConfigError, match="knetlab-config: data.cluster"):
        clusterconfig.read(store)


def test_wait_for_returns_the_config_once_published(store):
    stop = threading.Event()
    got: list[ClusterConfig | None] = []
    waiter = threading.Thread(target=lambda: got.append(clusterconfig.wait_for(store, stop,
                                                                               poll=0.02)))
    waiter.start()
    clusterconfig.publish(store, CONFIG)
    waiter.join(5)
    assert got == [CONFIG]


def test_wait_for_gives_up_when_stopped(store):
    stop = threading.Event()
    stop.set()
    assert clusterconfig.wait_for(store, stop) is None
