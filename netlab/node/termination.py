"""How long a terminating pod's workloads keep serving after kubelet's SIGTERM.

kubelet stops a pod with a deletionTimestamp by signalling its containers and
tearing the sandbox down once they have exited (or the grace period is over). Most
workloads here exit at once; CoreDNS does not: kubeadm's Corefile has
`health { lameduck 5s }`, so a DNS pod fails /ready but keeps answering for five
seconds, and queries already on their way to it (sent before kube-proxy dropped the
endpoint) still get an answer. The agent (sandbox teardown) and the runtime (the
servers) both follow this, each from the moment it sees the deletion.
"""

from __future__ import annotations

from typing import Any

from netlab.dns.addon import is_dns_pod

DNS_LAMEDUCK_SECONDS = 5.0  # kubeadm's Corefile: health { lameduck 5s }


def stop_delay(pod: dict[str, Any]) -> float:
    """Seconds from the pod's deletion to its workloads' exit, capped by its grace period."""
    delay = DNS_LAMEDUCK_SECONDS if is_dns_pod(pod) else 0.0
    grace = pod.get("metadata", {}).get("deletionGracePeriodSeconds")
    return min(delay, float(grace)) if isinstance(grace, int | float) else delay
