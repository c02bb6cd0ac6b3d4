"""The node agent: kubelet, flannel and kube-proxy roles in one process, as k3s bundles them.

Wired here, each part testable alone: registration (the Node object), the overlay
(node/overlay.py, fed by subnet leases), pods (node/pods.py, fed by a Pod
informer), readiness probes (node/probes.py, on an asyncio loop) and, from the
services issue on, the proxy. The agent runs inside the node's network namespace.
Per-node settings (flannel's interface, kube-proxy off) come from the node's
config file, read at each start as k3s reads its config.yaml (node/agentconfig.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import Any

from pyroute2 import IPRoute

from netlab.api import keys
from netlab.api.cluster import ClusterConfig
from netlab.api.meta import now_rfc3339
from netlab.errors import NetlabError
from netlab.kernel.rtnl import Rtnl
from netlab.lab.state import StateDir
from netlab.node import agentconfig, hostnet
from netlab.node.cni import BridgeNetwork
from netlab.node.ipam import HostLocalIPAM
from netlab.node.overlay import Lease, Overlay, network_config
from netlab.node.pods import PodManager, PodSandbox, readiness_probe
from netlab.node.probes import Prober, ProbeTarget
from netlab.proxy.iptables.kernel import IptablesKernel
from netlab.proxy.modes import new_proxier_for
from netlab.proxy.proxier import Proxier
from netlab.store import CompactedError, open_store
from netlab.store.informer import Informer
from netlab.store.objects import (
    AlreadyExistsError,
    FieldSelector,
    Obj,
    ObjectEvent,
    Objects,
)
from netlab.store.retry import retry_store

log = logging.getLogger(__name__)

PROXY_KINDS = ("Service", "EndpointSlice", "Node")
PROXY_METRICS_PORT = 10249
PROXY_HEALTHZ_PORT = 10256
RECONCILE_RETRY_SECONDS = 2.0
# While probes are still pending, readiness changes are gathered for up to this long
# after the previous commit, so that a bring-up writes one commit per burst of
# results (each commit wakes every watcher of the store), not one per few pods.
READINESS_BATCH_SECONDS = 0.1

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
        self.pod_snapshots: queue.Queue[list[Obj]] = queue.Queue()
        self.readiness: queue.Queue[tuple[str, bool]] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.prober = Prober(self._readiness_changed)
        self.pods: PodManager | None = None
        # kubelet's pod watch: this node's pods only (spec.nodeName), so a node does not
        # decode every pod of the cluster.
        self.pod_informer = Informer(self.objects, ["Pod"], self._pods_changed,
                                     fields=FieldSelector("spec.nodeName", node))
        # One lock file per node: the node's iptables writers (flannel, kube-proxy)
        # serialise on it, and nodes of one host do not wait for each other.
        self.lock_file = os.path.join(state.node_dir(node), "xtables.lock")
        os.makedirs(state.node_dir(node), exist_ok=True)
        self.iptables = IptablesKernel(None, lock_file=self.lock_file)
        self.proxy: Proxier | None = None
        self.proxy_informer: Informer | None = None

    # registration and overlay -------------------------------------------------------
    def register(self) -> str:
        """Create or refresh the Node; wait for the control plane to give it a podCIDR."""
        wanted = node_object(self.node, self.address, self.role)

        def create_or_refresh() -> None:
            try:
                self.objects.create(wanted)
            except AlreadyExistsError:
                self.objects.mutate("Node", None, self.node,
                                    lambda cur: {**cur, "status": wanted["status"]})

        # On a machine the agent may start before etcd, or while it restarts.
        retry_store(create_or_refresh, "registering the node", self.stop)
        while not self.stop.is_set():
            node = retry_store(lambda: self.objects.get("Node", None, self.node),
                               "reading the node", self.stop)
            cidr = (node or {}).get("spec", {}).get("podCIDR")
            if cidr:
                return cidr
            time.sleep(0.05)
        raise NetlabError("stopped before a podCIDR was assigned")

    def start_overlay(self, pod_cidr: str,
                      settings: agentconfig.AgentSettings | None = None) -> Overlay:
        iface, public_ip = self.iface, self.address
        if settings is not None and settings.flannel_iface is not None:
            # flannel's --iface: the overlay's endpoint is that interface's address,
            # whatever address kubelet registered the node with.
            iface, public_ip = hostnet.choose_interface(hostnet.host_addresses(),
                                                        iface=settings.flannel_iface)
            log.info("flannel-iface %s: overlay endpoint %s", iface, public_ip)
        ipr = IPRoute()
        overlay = Overlay(ipr, self.iptables, self.config, public_ip, iface)
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
            ann[keys.FLANNEL_PUBLIC_IP_ANNOTATION] = lease.public_ip
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
            except NetlabError as exc:  # the store is away: the entries stay as they are
                log.warning("overlay: %s; retrying", exc)
                time.sleep(1)

    # pods ---------------------------------------------------------------------------
    def start_pods(self, pod_cidr: str) -> None:
        bridge = BridgeNetwork(Rtnl(), pod_cidr, self.config.pod_mtu)
        bridge.ensure_bridge()
        ipam = HostLocalIPAM(f"{self.state.node_dir(self.node)}/cni/networks/cbr0", pod_cidr)
        self.pods = PodManager(self.objects, self.state, self.config, self.node, self.address,
                               bridge, ipam, self._sandbox_ready, self._sandbox_gone)
        threading.Thread(target=self.loop.run_forever, name="probes", daemon=True).start()
        self.pod_informer.start()
        threading.Thread(target=self._pod_worker, name="pods", daemon=True).start()
        threading.Thread(target=self._readiness_writer, name="readiness", daemon=True).start()

    def _pods_changed(self, _events: list[ObjectEvent]) -> None:
        """On the informer's thread, the only one that may read its cache while it changes."""
        self.pod_snapshots.put(self.pod_informer.items("Pod"))

    def _latest_pods(self, retry: list[Obj] | None = None,
                     retry_at: float | None = None) -> list[Obj] | None:
        """The newest snapshot of the pods (bursts coalesce into one); None once stopping.

        With `retry`, that snapshot again at `retry_at` (monotonic) if nothing newer
        comes: a snapshot whose reconcile failed (the store went away midway), or
        one with a terminating pod whose workloads exit then. The pods it holds
        would otherwise wait for an unrelated change, as kubelet's periodic resync
        prevents.
        """
        while not self.stop.is_set():
            try:
                pods = self.pod_snapshots.get(timeout=0.5)
            except queue.Empty:
                if retry_at is not None and time.monotonic() >= retry_at:
                    return retry
                continue
            while not self.pod_snapshots.empty():
                pods = self.pod_snapshots.get_nowait()
            return pods
        return None

    def _pod_worker(self) -> None:
        """Adopt what survived a restart, then reconcile on every change.

        An unexpected error stops the agent, so the supervisor restarts it (a kubelet
        restart) instead of leaving a node that silently ignores its pods.
        """
        assert self.pods is not None
        pods = self._latest_pods()
        try:
            if pods is not None:
                self.pods.adopt_existing(pods)
                self.pods.remove_orphans()
            while pods is not None:
                try:
                    self.pods.reconcile(pods)
                    again_at = self.pods.next_stop()
                except NetlabError as exc:
                    log.error("pod reconcile: %s; retrying", exc)
                    again_at = time.monotonic() + RECONCILE_RETRY_SECONDS
                pods = self._latest_pods(pods, again_at)
        except Exception:
            log.exception("pod worker failed; stopping the agent")
            self.stop.set()

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
        self.readiness.put((key, ready))  # on the probe loop: never block it on the store

    def _readiness_writer(self) -> None:
        """Write Ready changes in batches: a burst of first successes is one commit.

        The last pending probe's result is written at once: nothing is held back
        once no probe is left to wait for.
        """
        assert self.pods is not None
        changes: dict[str, bool] = {}
        last_commit = 0.0
        while not self.stop.is_set():
            try:
                key, ready = self.readiness.get(timeout=0.5)
                changes[key] = ready
            except queue.Empty:
                if not changes:
                    continue
            gather_until = last_commit + READINESS_BATCH_SECONDS
            while self.prober.unready and (left := gather_until - time.monotonic()) > 0:
                try:
                    key, ready = self.readiness.get(timeout=left)
                    changes[key] = ready
                except queue.Empty:
                    break
            while not self.readiness.empty():
                key, ready = self.readiness.get_nowait()
                changes[key] = ready
            try:
                self.pods.publish_readiness(changes)
                changes = {}
                last_commit = time.monotonic()
            except NetlabError as exc:  # keep the changes; newer ones overwrite them
                log.error("pod readiness: %s; retrying", exc)
                self.stop.wait(0.5)

    # lifecycle ----------------------------------------------------------------------
    # proxy --------------------------------------------------------------------------
    def start_proxy(self) -> None:
        """kube-proxy's role: Services and EndpointSlices (and this Node) into rules."""
        proxier = new_proxier_for(self.config.proxy_mode, None, self.node, [self.address],
                                  service_cidrs=(self.config.service_cidr,),
                                  ipvs_scheduler=self.config.ipvs_scheduler,
                                  cluster_cidr=self.config.pod_cidr,
                                  min_sync_period=self.config.min_sync_period,
                                  sync_period=self.config.sync_period,
                                  lock_file=self.lock_file)
        synced: set[str] = set()

        def on_batch(events: list[ObjectEvent]) -> None:
            for ev in events:
                if ev.kind != "Node" or ev.obj["metadata"].get("name") == self.node:
                    proxier.on_event(ev.kind, ev.type, ev.obj)
            if not synced:  # the first batch is the initial list
                synced.update(PROXY_KINDS)
                for kind in ("Service", "EndpointSlice"):
                    proxier.on_synced(kind)

        informer = Informer(self.objects, list(PROXY_KINDS), on_batch)
        informer.start()
        proxier.start()
        proxier.serve(metrics_address=(self.address, PROXY_METRICS_PORT),
                      healthz_address=("0.0.0.0", PROXY_HEALTHZ_PORT))
        self.proxy = proxier
        self.proxy_informer = informer

    # lifecycle ----------------------------------------------------------------------
    def run_until(self, stop: threading.Event) -> None:
        """run(), ended by `stop` (the process's SIGTERM) as well as by its own."""
        threading.Thread(target=lambda: (stop.wait(), self.stop.set()), daemon=True).start()
        self.run()

    def run(self) -> None:
        settings = agentconfig.load(agentconfig.config_path(self.state.node_dir(self.node)))
        pod_cidr = self.register()
        log.info("node %s registered with podCIDR %s", self.node, pod_cidr)
        self.start_overlay(pod_cidr, settings)
        self.start_pods(pod_cidr)
        if settings.disable_kube_proxy:
            log.warning("kube-proxy is disabled by %s (disable-kube-proxy): its rules stay "
                        "as they are", agentconfig.config_path(self.state.node_dir(self.node)))
        else:
            self.start_proxy()
        log.info("agent running")
        self.stop.wait()
        self.pod_informer.stop()
        if self.proxy_informer is not None:
            self.proxy_informer.stop()
        if self.proxy is not None:
            self.proxy.stop()  # the rules stay, as when kube-proxy exits
        self.loop.call_soon_threadsafe(self.loop.stop)
