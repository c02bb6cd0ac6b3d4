"""Lab files for the integration tests, as data: small, fast, each with its own name."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
                "ports": [{"name": "http", "containerPort": 8080},
                          {"name": "udp", "containerPort": 8081, "protocol": "UDP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            }]},
        },
    },
}


def pod(name: str, node: str | None = None, **spec: Any) -> dict[str, Any]:
    """An agnhost netexec pod, optionally pinned to a node."""
    body: dict[str, Any] = {"containers": [{
        "name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
        "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
        "ports": [{"containerPort": 8080}]}]}
    if node:
        body["nodeName"] = node
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}}, "spec": body}


STORE_ENV = "KNETLAB_TEST_STORE"


def store_backend() -> str:
    """The store the suite's labs use: sqlite (default) or etcd (KNETLAB_TEST_STORE=etcd)."""
    backend = os.environ.get(STORE_ENV, "sqlite")
    if backend not in ("sqlite", "etcd"):
        raise ValueError(f"{STORE_ENV}={backend!r}: use sqlite or etcd")
    return backend


def with_suite_store(data: dict[str, Any]) -> dict[str, Any]:
    """Lab data on the suite's store backend (an etcd lab runs its own member)."""
    return {**data, "store": {"backend": "etcd"}} if store_backend() == "etcd" else data


@contextlib.contextmanager
def suite_store_url(tmp_dir: Any) -> Iterator[str]:
    """A store URL on the suite's backend, for tests that run components without a lab."""
    if store_backend() == "etcd":
        from netlab.store.etcd_server import LocalEtcd

        with LocalEtcd() as member:
            yield member.url
    else:
        yield f"sqlite://{tmp_dir}/store.db"


def lab_data(name: str, backend: str = "vxlan") -> dict[str, Any]:
    return with_suite_store({
        "name": name,
        "nodes": [{"name": "control-plane", "role": "control-plane"},
                  {"name": "worker-1", "role": "worker"},
                  {"name": "worker-2", "role": "worker"}],
        "network": {"backend": backend},
    })


def manifests_file(tmp_dir: Any, objs: list[dict[str, Any]]) -> str:
    import yaml

    path = tmp_dir / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(copy.deepcopy(objs)))
    return str(path)
