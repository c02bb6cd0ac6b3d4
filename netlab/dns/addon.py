"""The DNS addon as kubeadm installs it: Deployment `coredns` and Service `kube-dns`.

Same names, labels, ports and probes as kubeadm's manifests, so `kubectl -n
kube-system get svc kube-dns` habits carry over. The lab's runtime recognises the
CoreDNS image and serves this package's DNS server inside those pods.
"""

from __future__ import annotations

from typing import Any

COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.3"
LABELS = {"k8s-app": "kube-dns"}


def is_dns_pod(pod: dict[str, Any]) -> bool:
    """A pod running CoreDNS (any of its containers), whatever its name."""
    return any("coredns" in str(c.get("image", ""))
               for c in pod.get("spec", {}).get("containers") or [])


def coredns_deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(LABELS)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                    {"key": "node-role.kubernetes.io/control-plane",
                                     "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "coredns", "image": COREDNS_IMAGE,
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                          "initialDelaySeconds": 60, "timeoutSeconds": 5,
                                          "failureThreshold": 5},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                    }],
                    "dnsPolicy": "Default",
                },
            },
        },
    }


def kube_dns_service(cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {**LABELS, "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153",
                                     "prometheus.io/scrape": "true"}},
        "spec": {
            "selector": dict(LABELS),
            "clusterIP": cluster_ip,
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                      {"name": "metrics", "port": 9153, "protocol": "TCP",
                       "targetPort": 9153}],
        },
    }
