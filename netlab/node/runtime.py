"""The container runtime's role: run each pod's workload, one process for the whole node.

Pods have no containers here; what runs "in" a pod is the netexec-compatible
server (netlab.apps), listening on sockets opened inside the pod's namespace, or,
for CoreDNS pods, the cluster DNS server (netlab.dns). The runtime is its own
process, separate from the agent, so that restarting the agent (kubelet, flannel
and kube-proxy roles) leaves workloads serving, as a real container runtime keeps
containers running across a kubelet restart.

The runtime also reports what it started: a pod is Running (and, without a
readiness probe, Ready) only once its servers listen, so Ready never runs ahead
of the workload, as kubelet reports a container running only once the runtime
has started it.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable

from netlab.api.cluster import ClusterConfig
from netlab.apps.container import plan_for_pod
from netlab.apps.runner import PodServerThread
from netlab.dns.addon import is_dns_pod
from netlab.dns.pods import DNS_KINDS, DnsPods
from netlab.errors import NetlabError
from netlab.node.podfiles import pod_netns_name
from netlab.node.pods import containers_failed, containers_started, pod_key
from netlab.node.termination import stop_delay
from netlab.store import open_store
from netlab.store.informer import Informer
from netlab.store.objects import Obj, ObjectEvent, Objects

log = logging.getLogger(__name__)

# How often a pod whose status could not be written (the store was away) is
# reported again, when no change to the pods comes first.
REPORT_RETRY_SECONDS = 1.0


class Runtime:
    """Keeps the served pods equal to this node's running pods."""

    def __init__(self, store_url: str, config: ClusterConfig, node: str) -> None:
        self.objects = Objects(open_store(store_url))
        self.config = config
        self.node = node
        self.apps = PodServerThread()
        self.dns = DnsPods(config.cluster_domain, config.dns_ttl, config.dns_upstreams)
        self.served: dict[str, tuple[str, str]] = {}  # key -> (uid, podIP)
        # pods started (None) or failed (the error) whose status is not yet written
        self.to_report: dict[str, str | None] = {}
        self.lock = threading.Lock()  # the informer's thread and the retry in run()
        self.informer = Informer(self.objects, list(DNS_KINDS), self._on_batch)

    def _on_batch(self, events: list[ObjectEvent]) -> None:
        if self.dns.serving:
            for ev in events:
                self.dns.apply(ev.kind, ev.type, ev.obj)
        if any(ev.kind == "Pod" for ev in events):
            with self.lock:
                self._reconcile()

    def _node_pods(self) -> tuple[dict[str, Obj], dict[str, Obj]]:
        """This node's pods by key: those to serve (an address, not deleted) and those
        being deleted."""
        wanted, terminating = {}, {}
        for pod in self.informer.items("Pod"):
            if pod.get("spec", {}).get("nodeName") != self.node:
                continue
            if pod["metadata"].get("deletionTimestamp"):
                terminating[pod_key(pod)] = pod
            elif (pod.get("status") or {}).get("podIP"):
                wanted[pod_key(pod)] = pod
        return wanted, terminating

    def _reconcile(self) -> None:
        wanted, terminating = self._node_pods()
        for key in [k for k in self.served if k not in wanted]:
            pod = terminating.get(key)
            # A deleted CoreDNS pod answers through its lameduck (termination.py).
            self.dns.remove(key, lameduck=stop_delay(pod) if pod else 0.0)
            self.apps.remove_pod(key)
            del self.served[key]
        for key, pod in wanted.items():
            ident = (pod["metadata"]["uid"], pod["status"]["podIP"])
            if self.served.get(key) == ident:
                continue
            try:
                self._start(key, pod)
            except (NetlabError, OSError) as exc:
                log.error("pod %s: cannot start workload: %s", key, exc)
                self.to_report[key] = str(exc)
                continue
            self.served[key] = ident
            self.to_report[key] = None
        self._report(wanted)

    def _report(self, wanted: dict[str, Obj]) -> None:
        """Write, in one commit, what happened to the pods started or failed since the
        last report: Running, or failing with the error. Only those pods are looked at:
        a pass over every pod of a node, on every change, was most of a runtime's CPU
        in a large bring-up."""
        updates = []
        for key, error in list(self.to_report.items()):
            pod = wanted.get(key)
            if pod is not None:
                # The informer's pod with a status of its own: the change edits it.
                pod = self._change(error)({**pod, "status": copy.deepcopy(pod["status"])})
            if pod is None:  # gone, or it already says so
                del self.to_report[key]
            else:
                updates.append((pod, self._change(error)))
        try:
            self.objects.update_all(updates)
        except NetlabError as exc:
            log.warning("reporting pod status: %s; retrying", exc)
            return
        for pod, _ in updates:
            self.to_report.pop(pod_key(pod), None)

    @staticmethod
    def _change(error: str | None) -> Callable[[Obj], Obj | None]:
        if error is not None:
            return lambda pod: containers_failed(pod, error)
        return containers_started

    def _start(self, key: str, pod: Obj) -> None:
        meta = pod["metadata"]
        netns_name = pod_netns_name(self.config.lab, meta["namespace"], meta["name"])
        if is_dns_pod(pod):
            known = [(kind, obj) for (kind, _, _), obj in list(self.informer.cache.items())]
            self.dns.add(key, netns_name, pod["status"]["podIP"], known)
            log.info("serving DNS for %s", key)
            return
        plan = plan_for_pod(pod["spec"].get("containers") or [])
        self.apps.add_pod(key, netns_name, pod["spec"].get("hostname") or meta["name"],
                          plan.http_ports, plan.udp_ports, mode=plan.mode)
        log.info("serving %s on tcp %s udp %s", key, plan.http_ports, plan.udp_ports)

    def run(self, stop: threading.Event) -> None:
        self.informer.start()
        while not stop.wait(REPORT_RETRY_SECONDS):
            if self.to_report:
                with self.lock:
                    self._report(self._node_pods()[0])
        self.informer.stop()
        self.dns.close()
        self.apps.close()
