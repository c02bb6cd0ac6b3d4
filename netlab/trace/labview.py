"""The lab as a trace sees it: machines, pods, Services and slices, read once.

Pure data, built from the lab's metadata (lab.json), its ClusterConfig and the
store's objects, so the simulator, the live assembler, the graph and their unit
tests all start from the same picture. `load_view` is the only function that
touches a running lab.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.control.pods import is_ready
from netlab.node.cni import host_veth_name
from netlab.node.podfiles import pod_netns_name

UNDERLAY_BRIDGE = "br-underlay"
BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"


@dataclass(frozen=True)
class Machine:
    """A node or `ext`: a namespace with eth0 on the underlay."""

    name: str
    address: str
    netns: str
    underlay_port: str  # its veth's name on the underlay bridge
    pod_cidr: str | None = None  # None for ext
    vtep_mac: str | None = None
    role: str = "worker"

    @property
    def is_node(self) -> bool:
        return self.pod_cidr is not None

    @property
    def bridge_address(self) -> str | None:
        """cni0's address: the first host of the node's pod subnet."""
        return str(ipaddress.ip_network(self.pod_cidr)[1]) if self.pod_cidr else None

    @property
    def vtep_address(self) -> str | None:
        """flannel.1's address: the network address of the node's pod subnet, as /32."""
        return str(ipaddress.ip_network(self.pod_cidr).network_address) if self.pod_cidr \
            else None


@dataclass(frozen=True)
class Listener:
    proto: str  # tcp | udp
    port: int


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    ip: str
    node: str
    netns: str
    host_veth: str
    uid: str
    listeners: frozenset[Listener] = frozenset()
    ready: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def listens(self, proto: str, port: int) -> bool:
        return Listener(proto, port) in self.listeners


@dataclass
class LabView:
    name: str
    config: ClusterConfig
    machines: dict[str, Machine]  # nodes and ext, by name
    underlay_cidr: str
    underlay_gateway: str
    underlay_netns: str
    pods: dict[str, PodView] = field(default_factory=dict)  # "ns/name"
    services: list[dict[str, Any]] = field(default_factory=list)
    endpointslices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nodes(self) -> list[Machine]:
        return [m for m in self.machines.values() if m.is_node]

    @property
    def vxlan_device(self) -> str:
        return f"flannel.{self.config.vxlan_vni}"

    # lookups ------------------------------------------------------------------------
    def machine_by_ip(self, ip: str) -> Machine | None:
        return next((m for m in self.machines.values() if m.address == ip), None)

    def node_for_pod_ip(self, ip: str) -> Machine | None:
        addr = ipaddress.ip_address(ip)
        return next((m for m in self.nodes
                     if addr in ipaddress.ip_network(m.pod_cidr or "0.0.0.0/32")), None)

    def pod_by_ip(self, ip: str) -> PodView | None:
        return next((p for p in self.pods.values() if p.ip == ip), None)

    def pod_by_netns(self, netns: str) -> PodView | None:
        return next((p for p in self.pods.values() if p.netns == netns), None)

    def machine_by_netns(self, netns: str) -> Machine | None:
        return next((m for m in self.machines.values() if m.netns == netns), None)

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services if s["metadata"]["name"] == name
                     and s["metadata"].get("namespace", "default") == namespace), None)

    def service_by_ip(self, ip: str) -> dict[str, Any] | None:
        return next((s for s in self.services if ip in _service_ips(s)), None)

    def slices_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return sorted((s for s in self.endpointslices
                       if s["metadata"].get("namespace", "default") == namespace
                       and (s["metadata"].get("labels") or {}).get(
                           "kubernetes.io/service-name") == name),
                      key=lambda s: s["metadata"]["name"])

    def endpoint_entry(self, namespace: str, service: str,
                       ip: str) -> tuple[str, int, dict[str, Any]] | None:
        """(slice name, index in the slice, the endpoint) of a Service's endpoint IP."""
        for eps in self.slices_of(namespace, service):
            for i, ep in enumerate(eps.get("endpoints") or []):
                if ip in ep.get("addresses", ()):
                    return eps["metadata"]["name"], i, ep
        return None

    def in_pod_network(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(self.config.pod_cidr)


def _service_ips(svc: dict[str, Any]) -> list[str]:
    spec = svc.get("spec") or {}
    ips = [spec.get("clusterIP")] + list(spec.get("clusterIPs") or [])
    ips += list(spec.get("externalIPs") or [])
    ips += [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get(
        "ingress") or []]
    return [ip for ip in ips if ip and ip != "None"]


def pod_listeners(pod: dict[str, Any]) -> frozenset[Listener]:
    """Where the pod's containers would listen, read from the spec as the runtime reads it."""
    from netlab.apps.container import plan_for_pod
    from netlab.dns.addon import is_dns_pod
    from netlab.errors import NetlabError

    if is_dns_pod(pod):
        return frozenset({Listener("udp", 53), Listener("tcp", 53)})
    try:
        plan = plan_for_pod((pod.get("spec") or {}).get("containers") or [])
    except NetlabError:
        return frozenset()
    return frozenset({Listener("tcp", p) for p in plan.http_ports}
                     | {Listener("udp", p) for p in plan.udp_ports})


def build_view(info: dict[str, Any], config: ClusterConfig,
               objects: list[dict[str, Any]]) -> LabView:
    """The view from lab.json's content, the cluster config and the store's objects."""
    lab = info["name"]
    node_objs = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Node"}
    machines: dict[str, Machine] = {}
    for i, n in enumerate(info["nodes"]):
        obj = node_objs.get(n["name"], {})
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        vtep = None
        if annotations.get(BACKEND_DATA):
            vtep = json.loads(annotations[BACKEND_DATA]).get("VtepMAC")
        machines[n["name"]] = Machine(n["name"], n["address"], n["netns"], f"port{i + 1}",
                                      (obj.get("spec") or {}).get("podCIDR"), vtep,
                                      n.get("role", "worker"))
    ext = info["ext"]
    machines["ext"] = Machine("ext", ext["address"], ext["netns"],
                              f"port{len(info['nodes']) + 1}")
    view = LabView(lab, config, machines, info["underlay"]["cidr"],
                   info["underlay"]["gateway"], f"nl-{lab}-underlay")
    for pod in objects:
        if pod.get("kind") != "Pod":
            continue
        meta, status = pod["metadata"], pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if not status.get("podIP") or not node or meta.get("deletionTimestamp"):
            continue
        ns = meta.get("namespace", "default")
        view.pods[f"{ns}/{meta['name']}"] = PodView(
            ns, meta["name"], status["podIP"], node, pod_netns_name(lab, ns, meta["name"]),
            host_veth_name(meta.get("uid", "")), meta.get("uid", ""), pod_listeners(pod),
            is_ready(pod))
    view.services = [o for o in objects if o.get("kind") == "Service"]
    view.endpointslices = [o for o in objects if o.get("kind") == "EndpointSlice"]
    return view


def load_view(lab: Any) -> LabView:
    """The view of a RunningLab (netlab.lab.session) as it is now."""
    objects: list[dict[str, Any]] = []
    for kind in ("Node", "Pod", "Service", "EndpointSlice"):
        objects += lab.objects.list(kind, None)[0]
    return build_view(lab.info, lab.config, objects)

