"""The container runtime's role: run each pod's workload, one process for the whole node.

Pods have no containers here; what runs "in" a pod is the netexec-compatible
server (netlab.apps), listening on sockets opened inside the pod's namespace. The
runtime is its own process, separate from the agent, so that restarting the agent
(kubelet, flannel and kube-proxy roles) leaves workloads serving, as a real
container runtime keeps containers running across a kubelet restart.
"""

from __future__ import annotations

import logging
import threading

from netlab.apps.container import plan_for_pod
from netlab.apps.runner import PodServerThread
from netlab.errors import NetlabError
from netlab.node.podfiles import pod_netns_name
from netlab.node.pods import pod_key
from netlab.store import open_store
from netlab.store.informer import Informer
from netlab.store.objects import ObjectEvent, Objects

log = logging.getLogger(__name__)


class Runtime:
    """Keeps the served pods equal to this node's running pods."""

    def __init__(self, store_url: str, lab: str, node: str) -> None:
        self.objects = Objects(open_store(store_url))
        self.lab = lab
        self.node = node
        self.apps = PodServerThread()
        self.served: dict[str, tuple[str, str]] = {}  # key -> (uid, podIP)
        self.informer = Informer(self.objects, ["Pod"], self._on_batch)

    def _on_batch(self, _events: list[ObjectEvent]) -> None:
        wanted = {}
        for pod in self.informer.items("Pod"):
            meta, status = pod["metadata"], pod.get("status") or {}
            if (pod.get("spec", {}).get("nodeName") == self.node and status.get("podIP")
                    and not meta.get("deletionTimestamp")):
                wanted[pod_key(pod)] = pod
        for key in [k for k in self.served if k not in wanted]:
            self.apps.remove_pod(key)
            del self.served[key]
        for key, pod in wanted.items():
            meta = pod["metadata"]
            ident = (meta["uid"], pod["status"]["podIP"])
            if self.served.get(key) == ident:
                continue
            try:
                plan = plan_for_pod(pod["spec"].get("containers") or [])
                self.apps.add_pod(key, pod_netns_name(self.lab, meta["namespace"], meta["name"]),
                                  pod["spec"].get("hostname") or meta["name"],
                                  plan.http_ports, plan.udp_ports, mode=plan.mode)
            except NetlabError as exc:
                log.error("pod %s: cannot start workload: %s", key, exc)
                continue
            self.served[key] = ident
            log.info("serving %s on tcp %s udp %s", key, plan.http_ports, plan.udp_ports)

    def run(self, stop: threading.Event) -> None:
        self.informer.start()
        stop.wait()
        self.informer.stop()
        self.apps.close()
