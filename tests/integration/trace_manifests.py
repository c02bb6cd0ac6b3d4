"""Pods and Services the trace integration tests use: a client and a server on two nodes."""

from __future__ import annotations

from typing import Any

from tests.integration.labs import pod


def service(name: str, app: str, **spec: Any) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    if "nodePort" in spec:
        port["nodePort"] = spec.pop("nodePort")
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [port], **spec}}


def manifests() -> list[dict[str, Any]]:
    return [
        pod("client", "worker-1"), pod("peer", "worker-1"), pod("server", "worker-2"),
        service("web", "server"),
        service("empty", "nobody"),
        service("loopback", "client"),
        service("web-np", "server", type="NodePort", nodePort=30080),
        service("web-local", "server", type="NodePort", nodePort=30081,
                externalTrafficPolicy="Local"),
    ]
