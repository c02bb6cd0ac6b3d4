"""Everything the steps look at, read once from a running lab.

The store is read once, at the start, so every step judges the same picture
(the kernel is read by the steps themselves, when they run). `source` is the
pod traffic is sent from: the one the user named with `--from`, or the one
facts.choose_source picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.check import facts
from netlab.check.model import DEFAULT_TIMEOUT
from netlab.errors import NetlabError
from netlab.lab.state import StateDir
from netlab.node.cni import host_veth_name
from netlab.node.podfiles import pod_netns_name
from netlab.proxy.model import LABEL_SERVICE_NAME

Obj = dict[str, Any]


@dataclass(frozen=True)
class NodeRef:
    name: str
    address: str
    netns: str | None  # None: the node is no namespace on this host (a VM)


@dataclass
class SvcContext:
    namespace: str
    name: str
    service: Obj | None
    pods: list[Obj]  # every pod of the lab
    slices: list[Obj]  # the Service's EndpointSlices
    nodes: list[NodeRef]
    ext_netns: str
    config: ClusterConfig
    lab: str
    state: StateDir
    source: Obj | None = None
    timeout: float = DEFAULT_TIMEOUT  # per connection or datagram

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def svc(self) -> Obj:
        """The Service; steps after `service` run only when it exists."""
        if self.service is None:
            raise NetlabError(f"no Service {self.ref}")
        return self.service

    def netns_of(self, pod: Obj) -> str:
        meta = pod["metadata"]
        return pod_netns_name(self.lab, meta.get("namespace", "default"), meta["name"])

    def pod_by_key(self, key: str) -> Obj | None:
        return next((p for p in self.pods if facts.key(p) == key), None)

    def node(self, name: str) -> NodeRef | None:
        return next((n for n in self.nodes if n.name == name), None)

    @staticmethod
    def host_port(pod: Obj) -> str:
        """The pod's veth on its node's cni0 (named from the pod's UID by the CNI plugin)."""
        return host_veth_name(pod["metadata"].get("uid", ""))


def split_ref(ref: str, namespace: str = "default") -> tuple[str, str]:
    """`[ns/]name` -> (ns, name)."""
    ns, _, name = ref.rpartition("/")
    if not name:
        raise NetlabError(f"say which Service: [namespace/]name, not {ref!r}")
    return ns or namespace, name


def load_context(lab: Any, ref: str, namespace: str = "default",
                 source: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> SvcContext:
    """Read a RunningLab (netlab.lab.session) for a check of Service `[ns/]name`."""
    ns, name = split_ref(ref, namespace)
    pods = lab.objects.list("Pod", None)[0]
    slices = [s for s in lab.objects.list("EndpointSlice", ns)[0]
              if (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == name]
    info = lab.info
    nodes = [NodeRef(n["name"], n["address"], n.get("netns")) for n in info["nodes"]]
    ctx = SvcContext(ns, name, lab.objects.get("Service", ns, name), pods, slices, nodes,
                     info["ext"]["netns"], lab.config, lab.name, lab.state, timeout=timeout)
    if source is not None:
        src_ns, src_name = split_ref(source, namespace)
        pod = ctx.pod_by_key(f"{src_ns}/{src_name}")
        if pod is None:
            raise NetlabError(f"--from {source}: no pod {src_ns}/{src_name}")
        if not facts.usable(pod):
            raise NetlabError(f"--from {source}: pod {src_ns}/{src_name} is not running "
                              "with an IP")
        ctx.source = pod
    elif ctx.service is not None:
        ctx.source = facts.choose_source(ctx.service, pods)
    return ctx
