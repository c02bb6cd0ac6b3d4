"""The node agent: kubelet, flannel and kube-proxy roles in one process, as k3s bundles them.

Wired here, each part testable alone: registration (the Node object), the overlay
(node/overlay.py, fed by subnet leases), pods (node/pods.py, fed by a Pod
informer), readiness probes (node/probes.py, on an asyncio loop) and, from the
services issue on, the proxy. The agent runs inside the node's network namespace.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any

from pyroute2 import IPRoute

from netlab.api import keys
from netlab.api.cluster import ClusterConfig
from netlab.api.meta import now_rfc3339
from netlab.errors import NetlabError
from netlab.lab.state import StateDir
from netlab.node.cni import BridgeNetwork
from netlab.node.ipam import HostLocalIPAM
from netlab.node.overlay import Lease, Overlay, network_config
from netlab.node.pods import PodManager, PodSandbox, readiness_probe, set_ready
from netlab.node.probes import Prober, ProbeTarget
from netlab.store import CompactedError, open_store
from netlab.store.informer import Informer
from netlab.store.objects import AlreadyExistsError, Obj, Objects

log = logging.getLogger(__name__)

CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node_object(name: str, address: str, role: str) -> Obj:
    """The Node kubelet registers (status.addresses as kubectl shows them)."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64"}
    spec: dict[str, Any] = {}
    if role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
        spec["taints"] = [CONTROL_PLANE_TAINT]
    now = now_rfc3339()
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {}},
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": address},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": "v1.31.0-netlab", "kubeProxyVersion": "v1.31.0",
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "netlab://0.1"},
        },
    }


class Agent:
    def __init__(self, store_url: str, state: StateDir, config: ClusterConfig, node: str,
                 address: str, role: str, iface: str = "eth0") -> None:
        self.store = open_store(store_url)
        self.objects = Objects(self.store)
        self.state = state
        self.config = config
        self.node = node
        self.address = address
        self.role = role
        self.iface = iface
        self.stop = threading.Event()
        self.pod_batches: queue.Queue[None] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.prober = Prober(self._readiness_changed)
        self.pods: PodManager | None = None
        self.pod_informer = Informer(self.objects, ["Pod"], lambda _e: self.pod_batches.put(None))

    # registration and overlay -------------------------------------------------------
    def register(self) -> str:
        """Create or refresh the Node; wait for the control plane to give it a podCIDR."""
        wanted = node_object(self.node, self.address, self.role)
        try:
            self.objects.create(wanted)
        except AlreadyExistsError:
            self.objects.mutate("Node", None, self.node,
                                lambda cur: {**cur, "status": wanted["status"]})
        while not self.stop.is_set():
            node = self.objects.get("Node", None, self.node)
            cidr = (node or {}).get("spec", {}).get("podCIDR")
            if cidr:
                return cidr
            time.sleep(0.05)
        raise NetlabError("stopped before a podCIDR was assigned")

    def start_overlay(self, pod_cidr: str) -> Overlay:
        ipr = IPRoute()
        overlay = Overlay(ipr, self.config, self.address, self.iface)
        lease = overlay.setup(pod_cidr, self.state.node_dir(self.node))
        if self.store.get(keys.FLANNEL_CONFIG_KEY) is None:
            self.store.put(keys.FLANNEL_CONFIG_KEY, network_config(self.config))
        self.store.put(keys.subnet_key(pod_cidr), lease.to_value())
        self._annotate_node(lease)
        threading.Thread(target=self._watch_leases, args=(overlay,), name="leases",
                         daemon=True).start()
        return overlay

    def _annotate_node(self, lease: Lease) -> None:
        """What flannel's kube subnet manager records on the Node, for people who look."""
        def change(node: Obj) -> Obj:
            ann = node["metadata"].setdefault("annotations", {})
            ann["flannel.alpha.coreos.com/backend-type"] = lease.backend_type
            ann["flannel.alpha.coreos.com/public-ip"] = lease.public_ip
            ann["flannel.alpha.coreos.com/kube-subnet-manager"] = "false"
            if lease.backend_type == "vxlan":
                ann["flannel.alpha.coreos.com/backend-data"] = (
                    f'{{"VNI":{lease.vni},"VtepMAC":"{lease.vtep_mac}"}}')
            return node
        self.objects.mutate("Node", None, self.node, change)

    def _watch_leases(self, overlay: Overlay) -> None:
        while not self.stop.is_set():
            try:
                items, rev = self.store.list(keys.FLANNEL_SUBNETS_PREFIX)
                current = {keys.subnet_of_key(kv.key) for kv in items}
                for subnet in list(overlay.peers):
                    if subnet not in current:
                        overlay.remove_peer(subnet)
                for kv in items:
                    overlay.apply_peer(Lease.from_value(keys.subnet_of_key(kv.key), kv.value))
                for batch in self.store.watch([keys.FLANNEL_SUBNETS_PREFIX], rev + 1,
                                              poll_timeout=0.5):
                    if self.stop.is_set():
                        return
                    for ev in batch:
                        subnet = keys.subnet_of_key(ev.key)
                        if ev.type == "DELETE":
                            overlay.remove_peer(subnet)
                        elif ev.value:
                            overlay.apply_peer(Lease.from_value(subnet, ev.value))
            except CompactedError:
                continue
            except NetlabError as exc:
                log.error("overlay: %s; retrying", exc)
                time.sleep(1)

    # pods ---------------------------------------------------------------------------
    def start_pods(self, pod_cidr: str) -> None:
        bridge = BridgeNetwork(IPRoute(), pod_cidr, self.config.pod_mtu)
        bridge.ensure_bridge()
        ipam = HostLocalIPAM(f"{self.state.node_dir(self.node)}/cni/networks/cbr0", pod_cidr)
        self.pods = PodManager(self.objects, self.state, self.config, self.node, self.address,
                               bridge, ipam, self._sandbox_ready, self._sandbox_gone)
        threading.Thread(target=self.loop.run_forever, name="probes", daemon=True).start()
        self.pod_informer.start()
        self.pod_informer.synced.wait()
        self.pods.adopt_existing(self.pod_informer.items("Pod"))
        self.pods.remove_orphans()
        threading.Thread(target=self._pod_worker, name="pods", daemon=True).start()

    def _pod_worker(self) -> None:
        assert self.pods is not None
        while not self.stop.is_set():
            try:
                self.pod_batches.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self.pod_batches.empty():  # coalesce bursts into one pass
                self.pod_batches.get_nowait()
            try:
                self.pods.reconcile(self.pod_informer.items("Pod"))
            except NetlabError as exc:
                log.error("pod reconcile: %s", exc)

    def _sandbox_ready(self, sandbox: PodSandbox, pod: Obj) -> None:
        probe = readiness_probe(pod)
        if probe is None:
            return
        target = ProbeTarget(sandbox.key, sandbox.ip, sandbox.netns, probe,
                             pod["spec"].get("containers") or [])
        self.loop.call_soon_threadsafe(self.prober.add, target)

    def _sandbox_gone(self, key: str) -> None:
        self.loop.call_soon_threadsafe(self.prober.remove, key)

    def _readiness_changed(self, key: str, ready: bool) -> None:
        namespace, name = key.split("/", 1)
        threading.Thread(target=self.objects.mutate, daemon=True,
                         args=("Pod", namespace, name, lambda p: set_ready(p, ready))).start()

    # lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        pod_cidr = self.register()
        log.info("node %s registered with podCIDR %s", self.node, pod_cidr)
        self.start_overlay(pod_cidr)
        self.start_pods(pod_cidr)
        log.info("agent running")
        self.stop.wait()
        self.pod_informer.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
