"""kubelet's pod lifecycle on one node: sandbox (netns + CNI), files, status, teardown.

The manager reconciles the pods bound to this node against what the node has: new
pods get a namespace, an address from host-local IPAM and the kubelet files;
deleted pods (or ones with a deletionTimestamp) are torn down, and a graceful
deletion is completed by removing the object, as kubelet does. Status for a whole
batch of pods is written with as few store commits as possible: one per quarter
second of a long pass, one per burst of readiness changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from netlab.api import keys
from netlab.api.cluster import ClusterConfig
from netlab.api.meta import now_rfc3339
from netlab.errors import ConflictError, NetlabError
from netlab.lab.state import StateDir
from netlab.node import podfiles
from netlab.node.cni import BridgeNetwork
from netlab.node.ipam import HostLocalIPAM
from netlab.node.termination import stop_delay
from netlab.store.base import Delete
from netlab.store.objects import Obj, Objects

log = logging.getLogger(__name__)

# A long pass publishes what it has made at this interval, so the runtime starts
# serving and the probes start probing while the rest of the sandboxes are made.
PUBLISH_INTERVAL = 0.25


@dataclass
class PodSandbox:
    key: str  # namespace/name
    uid: str
    netns: str
    ip: str


def pod_key(pod: Obj) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


def readiness_probe(pod: Obj) -> dict[str, Any] | None:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("readinessProbe"):
            return container["readinessProbe"]
    return None


def _condition(kind: str, status: bool, now: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if status else "False",
            "lastProbeTime": None, "lastTransitionTime": now}


def sandbox_status(pod: Obj, ip: str, host_ip: str) -> dict[str, Any]:
    """The status kubelet reports once the sandbox is up and before any container runs.

    The pod has its address (kubelet reports podIP from the sandbox) but is Pending,
    its containers waiting in ContainerCreating and not Ready: they start when the
    node's runtime serves them, which `containers_started` reports.
    """
    now = now_rfc3339()
    old = pod.get("status") or {}
    containers = pod.get("spec", {}).get("containers") or []
    return {
        "phase": "Pending",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": old.get("startTime") or now,
        "qosClass": "BestEffort",
        "conditions": [
            _condition("PodReadyToStartContainers", True, now),
            _condition("Initialized", True, now),
            _condition("Ready", False, now),
            _condition("ContainersReady", False, now),
            _condition("PodScheduled", True, now),
        ],
        "containerStatuses": [{
            "name": c.get("name", f"c{i}"), "image": c.get("image", ""), "imageID": "",
            "containerID": "", "ready": False, "started": False, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        } for i, c in enumerate(containers)],
    }


def containers_started(pod: Obj) -> Obj | None:
    """The pod with its containers running, or None if it already says so.

    Written by the node's runtime once the pod's workloads listen, as kubelet reports
    a container running once the runtime has started it. A pod without a readiness
    probe is Ready from then on; one with a probe becomes Ready when the probe
    first succeeds (the agent's prober), so its Ready condition is left alone.
    """
    status = pod.get("status") or {}
    if status.get("phase") == "Running":
        return None
    now = now_rfc3339()
    uid = pod["metadata"].get("uid", "")
    for cs in status.get("containerStatuses") or []:
        cs.update(containerID=f"netlab://{uid}/{cs['name']}", started=True,
                  state={"running": {"startedAt": now}})
    status["phase"] = "Running"
    if readiness_probe(pod) is None:
        set_ready(pod, True)
    return pod


def containers_failed(pod: Obj, message: str) -> Obj | None:
    """The pod with its waiting containers failing to start, or None if it already says so.

    Written by the runtime when it cannot serve a pod (a port another container of
    the pod holds, flags it cannot read), as kubelet reports RunContainerError; the
    pod stays Pending and not Ready, and `get pods` shows the reason.
    """
    status = pod.get("status") or {}
    waiting = {"reason": "RunContainerError", "message": message}
    changed = False
    for cs in status.get("containerStatuses") or []:
        if "waiting" in cs.get("state", {}) and cs["state"]["waiting"] != waiting:
            cs["state"] = {"waiting": dict(waiting)}
            changed = True
    return pod if changed else None


def set_ready(pod: Obj, ready: bool) -> Obj | None:
    """The pod with its Ready condition changed, or None if it already says so."""
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c["type"] == "Ready"), None)
    if current is None or (current["status"] == "True") == ready:
        return None
    now = now_rfc3339()
    for cond in conditions:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond.update(status="True" if ready else "False", lastTransitionTime=now)
    for cs in status.get("containerStatuses") or []:
        cs["ready"] = ready
    return pod


class PodManager:
    """Owns the sandboxes of this node's pods; call `reconcile` with the current pods."""

    def __init__(self, objects: Objects, state: StateDir, config: ClusterConfig,
                 node: str, host_ip: str, bridge: BridgeNetwork, ipam: HostLocalIPAM,
                 on_sandbox: Callable[[PodSandbox, Obj], None],
                 on_teardown: Callable[[str], None]) -> None:
        self.objects = objects
        self.state = state
        self.config = config
        self.node = node
        self.host_ip = host_ip
        self.bridge = bridge
        self.ipam = ipam
        self.on_sandbox = on_sandbox
        self.on_teardown = on_teardown
        self.sandboxes: dict[str, PodSandbox] = {}
        self.unpublished: set[str] = set()  # sandboxes whose status failed to commit
        # terminating pods whose workloads still serve (termination.py): key -> monotonic
        # time their sandbox may go
        self.stopping: dict[str, float] = {}

    def reconcile(self, pods: list[Obj]) -> None:
        mine = {pod_key(p): p for p in pods if p.get("spec", {}).get("nodeName") == self.node}
        gone = [k for k, sb in self.sandboxes.items()
                if k not in mine or mine[k]["metadata"].get("uid") != sb.uid]
        for key in gone:
            self._teardown(key)
        finishing = [p for p in mine.values() if p["metadata"].get("deletionTimestamp")
                     and self._workloads_stopped(p)]
        for pod in finishing:
            if pod_key(pod) in self.sandboxes:
                self._teardown(pod_key(pod))
            else:
                self._release_untracked(pod)
        if finishing:
            self._remove_objects(finishing)
        self._retry_unpublished(mine)
        started: list[tuple[Obj, PodSandbox]] = []
        publish_at = time.monotonic() + PUBLISH_INTERVAL
        for key, pod in mine.items():
            if pod["metadata"].get("deletionTimestamp") or key in self.sandboxes:
                continue
            try:
                sandbox = self._setup(pod)
            except NetlabError as exc:
                log.error("pod %s: sandbox failed: %s", key, exc)
                continue
            started.append((pod, sandbox))
            if time.monotonic() >= publish_at:
                self._started(started)
                started, publish_at = [], time.monotonic() + PUBLISH_INTERVAL
        self._started(started)

    def _workloads_stopped(self, pod: Obj) -> bool:
        """Whether a terminating pod's sandbox may go: its workloads have exited."""
        key = pod_key(pod)
        if key not in self.sandboxes:
            return True
        now = time.monotonic()
        if self.stopping.setdefault(key, now + stop_delay(pod)) > now:
            return False
        del self.stopping[key]
        return True

    def next_stop(self) -> float | None:
        """When the next terminating pod's workloads exit (monotonic): reconcile again then."""
        live = [at for key, at in self.stopping.items() if key in self.sandboxes]
        return min(live) if live else None

    def _started(self, started: list[tuple[Obj, PodSandbox]]) -> None:
        """Report sandboxes that are up: status in one commit, then probes start.

        If the commit fails (the store went away), the sandboxes are remembered and
        reported by the next reconcile, which the agent retries.
        """
        if started:
            try:
                self._publish(started)
            except NetlabError:
                self.unpublished.update(sandbox.key for _, sandbox in started)
                raise
        for pod, sandbox in started:
            self.on_sandbox(sandbox, pod)

    def _retry_unpublished(self, mine: Mapping[str, Obj]) -> None:
        keys = [k for k in self.unpublished if k in self.sandboxes and k in mine]
        self.unpublished = set()
        self._started([(mine[k], self.sandboxes[k]) for k in keys])

    def _setup(self, pod: Obj) -> PodSandbox:
        meta = pod["metadata"]
        key = pod_key(pod)
        netns_name = podfiles.pod_netns_name(self.config.lab, meta.get("namespace", "default"),
                                             meta["name"])
        allocation = self.ipam.allocate(meta["uid"])
        self.state.record("netns", name=netns_name, node=self.node)
        self.bridge.attach(netns_name, meta["uid"], allocation.ip)
        self.state.record("etcnetns", name=netns_name)
        hostname = pod.get("spec", {}).get("hostname") or meta["name"]
        podfiles.write_pod_files(netns_name, {
            "resolv.conf": self._resolv_conf(pod),
            "hosts": podfiles.hosts_file(allocation.ip, hostname),
            "hostname": hostname + "\n",
        })
        sandbox = PodSandbox(key, meta["uid"], netns_name, allocation.ip)
        self.sandboxes[key] = sandbox
        return sandbox

    def _resolv_conf(self, pod: Obj) -> str:
        """kubelet's resolv.conf for the pod's dnsPolicy and dnsConfig."""
        spec = pod.get("spec", {})
        host = podfiles.read_host_resolv_conf() if spec.get("dnsPolicy") == "Default" else ""
        return podfiles.pod_resolv_conf(spec, pod["metadata"].get("namespace", "default"),
                                        self.config.cluster_domain,
                                        self.config.dns_cluster_ip, host)

    def _publish(self, started: list[tuple[Obj, PodSandbox]]) -> None:
        """Write the sandboxes' status (address, Pending) for a batch in one commit."""
        changes = []
        for pod, sandbox in started:
            if pod.get("status", {}).get("podIP") == sandbox.ip:
                continue
            status = sandbox_status(pod, sandbox.ip, self.host_ip)
            # A shallow copy: the pod is the informer's, and transact copies what it stores.
            changes.append(({**pod, "status": status},
                            lambda cur, s=status: {**cur, "status": s}))
        self.objects.update_all(changes)

    def publish_readiness(self, changes: Mapping[str, bool]) -> None:
        """Write the Ready condition of many pods (key -> ready) in one commit: probes
        decide in bursts at bring-up."""
        updates = []
        for key, ready in changes.items():
            namespace, name = key.split("/", 1)
            pod = self.objects.get("Pod", namespace, name)
            if pod is not None and set_ready(pod, ready) is not None:
                updates.append((pod, lambda cur, r=ready: set_ready(cur, r)))
        self.objects.update_all(updates)

    def _teardown(self, key: str) -> None:
        sandbox = self.sandboxes.pop(key, None)
        self.stopping.pop(key, None)
        if sandbox is None:
            return
        self.on_teardown(key)
        self.bridge.detach(sandbox.netns)
        podfiles.remove_pod_files(sandbox.netns)
        self.ipam.release(sandbox.uid)
        log.info("pod %s torn down", key)

    def _release_untracked(self, pod: Obj) -> None:
        """CNI DEL for a sandbox this agent does not track: by its name, idempotently.

        The object is removed right after, so nothing may stay behind it.
        """
        meta = pod["metadata"]
        name = podfiles.pod_netns_name(self.config.lab, meta.get("namespace", "default"),
                                       meta["name"])
        self.on_teardown(pod_key(pod))
        self.bridge.detach(name)
        podfiles.remove_pod_files(name)
        self.ipam.release(meta.get("uid", ""))

    def _remove_objects(self, pods: list[Obj]) -> None:
        """Finish graceful deletions: the object goes once its sandbox is gone."""
        ops = [Delete(keys.key_of(p), expect_revision=int(p["metadata"]["resourceVersion"]))
               for p in pods]
        try:
            self.objects.store.commit(ops)
        except ConflictError:
            for p in pods:
                self.objects.delete("Pod", p["metadata"]["namespace"], p["metadata"]["name"])

    def adopt_existing(self, pods: list[Obj]) -> None:
        """After an agent restart: take back sandboxes that still exist, keep their IPs."""
        for pod in pods:
            meta = pod["metadata"]
            ip = pod.get("status", {}).get("podIP")
            if pod.get("spec", {}).get("nodeName") != self.node or not ip:
                continue
            allocation = self.ipam.get(meta["uid"])
            if allocation is None or allocation.ip != ip:
                continue
            netns_name = podfiles.pod_netns_name(self.config.lab, meta["namespace"],
                                                 meta["name"])
            try:
                self.bridge.attach(netns_name, meta["uid"], ip)
            except NetlabError as exc:
                log.warning("pod %s: could not adopt sandbox: %s", pod_key(pod), exc)
                continue
            sandbox = PodSandbox(pod_key(pod), meta["uid"], netns_name, ip)
            self.sandboxes[sandbox.key] = sandbox
            self.on_sandbox(sandbox, pod)

    def remove_orphans(self) -> None:
        """Namespaces this node recorded for pods that no longer exist."""
        live = {sb.netns for sb in self.sandboxes.values()}
        live_uids = {sb.uid for sb in self.sandboxes.values()}
        for rec in self.state.records("netns"):
            if rec.get("node") == self.node and rec["name"] not in live:
                self.bridge.detach(rec["name"])
                podfiles.remove_pod_files(rec["name"])
        for allocation in self.ipam.allocations():
            if allocation.container_id not in live_uids:
                self.ipam.release(allocation.container_id)

