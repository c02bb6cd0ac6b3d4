"""The cluster config in the store, so agents on other machines need no lab file.

kubeadm keeps its ClusterConfiguration in the ConfigMap kube-system/kubeadm-config and
kube-proxy reads its own from kube-system/kube-proxy; here one ConfigMap,
kube-system/knetlab-config, holds the ClusterConfig (pod and service networks,
overlay backend, proxy mode, DNS) as JSON. The control plane publishes it; an agent,
a runtime or a remote `knetlab apply` reads it. A running cluster's config is not
changed under it: publishing a different one is refused, naming the fields.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.errors import ConflictError, NetlabError
from netlab.store.base import Store
from netlab.store.retry import retry_store

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
NAME = "knetlab-config"
KEY = f"/registry/configmaps/{NAMESPACE}/{NAME}"
DATA_KEY = "cluster.json"


class ClusterConfigError(NetlabError):
    """The store's cluster config is missing, malformed, or not the one asked for."""


def config_map(config: ClusterConfig) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "knetlab"}},
            "data": {DATA_KEY: config.to_json()}}


def from_config_map(obj: dict[str, Any]) -> ClusterConfig:
    try:
        return ClusterConfig.from_json(obj["data"][DATA_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClusterConfigError(f"{KEY}: data.{DATA_KEY} is not a cluster config "
                                 f"({exc})") from exc


def differences(old: ClusterConfig, new: ClusterConfig) -> list[str]:
    """`field (old -> new)` for every field that differs."""
    a, b = dataclasses.asdict(old), dataclasses.asdict(new)
    return [f"{k} ({a[k]!r} -> {b[k]!r})" for k in a if a[k] != b.get(k)]


def read(store: Store) -> ClusterConfig | None:
    kv = store.get(KEY)
    return None if kv is None else from_config_map(kv.value)


def publish(store: Store, config: ClusterConfig) -> bool:
    """Write config if the store has none; True if written.

    The same config already there is fine; a different one raises ClusterConfigError
    (a cluster's networks cannot change while nodes and Services use them).
    """
    current = read(store)
    if current is None:
        try:
            store.put(KEY, config_map(config), expect_revision=0)
            return True
        except ConflictError:  # another control plane published first: compare with it
            current = read(store)
            assert current is not None
    changed = differences(current, config)
    if changed:
        raise ClusterConfigError(
            f"the store already holds another cluster config ({KEY}): "
            f"{'; '.join(changed)}. A running cluster's config cannot change: start "
            "from an empty store (remove etcd's data dir) to use the new one")
    return False


def wait_for(store: Store, stop: threading.Event, poll: float = 1.0) -> ClusterConfig | None:
    """The store's cluster config, waiting until a control plane publishes it."""
    told = False
    while not stop.is_set():
        config = retry_store(lambda: read(store), "reading the cluster config", stop)
        if config is not None:
            return config
        if not told and not stop.is_set():
            log.info("waiting for the control plane to publish %s", KEY)
            told = True
        stop.wait(poll)
    return None
