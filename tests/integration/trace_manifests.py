"""Pods and Services the trace integration tests use: a client and a server on two nodes."""

from __future__ import annotations

from typing import Any

from tests.integration.labs import pod


def service(name: str, app: str, selector: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    if "nodePort" in spec:
        port["nodePort"] = spec.pop("nodePort")
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector or {"app": app}, "ports": [port], **spec}}


def backend(manifest: dict[str, Any]) -> dict[str, Any]:
    """A pod that also serves the `sticky` Service (two endpoints, on two nodes)."""
    manifest["metadata"]["labels"]["tier"] = "backend"
    return manifest


def manifests() -> list[dict[str, Any]]:
    return [
        pod("client", "worker-1"), backend(pod("peer", "worker-1")),
        backend(pod("server", "worker-2")),
        service("web", "server"),
        service("empty", "nobody"),
        service("loopback", "client"),
        service("web-np", "server", type="NodePort", nodePort=30080),
        service("web-local", "server", type="NodePort", nodePort=30081,
                externalTrafficPolicy="Local"),
        service("sticky", "", {"tier": "backend"}, sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}),
    ]


def pinned(lab: Any, node: str) -> set[str]:
    """Client addresses pinned by session affinity on a node (xt_recent lists or nft sets)."""
    from netlab.trace import nft
    from netlab.trace.observe import node_rules

    netns = next(n["netns"] for n in lab.info["nodes"] if n["name"] == node)
    rules = node_rules(netns, lab.config.proxy_mode)
    found = {ip for ips in rules.recent.values() for ip in ips}
    if rules.nft is not None:
        found |= {ip for ips in nft.affinity_entries(rules.nft).values() for ip in ips}
    return found
