"""Where objects live in the store: kube-apiserver's etcd key layout, and the kinds.

We use the real layout (`/registry/pods/<ns>/<name>`, Services under
`/registry/services/specs/`, Nodes under the historical `/registry/minions/`) so
that `etcdctl get --prefix /registry/pods/` in the etcd-backed lab shows what it
shows in a kubeadm cluster, and so flannel's `/coreos.com/network/...` keys sit
beside them as they do in a real flannel deployment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netlab.errors import NetlabError

REGISTRY = "/registry"
FLANNEL_PREFIX = "/coreos.com/network"
FLANNEL_CONFIG_KEY = f"{FLANNEL_PREFIX}/config"
FLANNEL_SUBNETS_PREFIX = f"{FLANNEL_PREFIX}/subnets/"
FLANNEL_PUBLIC_IP_ANNOTATION = "flannel.alpha.coreos.com/public-ip"


def overlay_annotated(node: Mapping[str, Any]) -> bool:
    """Whether the node's flannel has set up its overlay: it annotates the Node then."""
    return FLANNEL_PUBLIC_IP_ANNOTATION in (node.get("metadata", {}).get("annotations") or {})


@dataclass(frozen=True)
class KindInfo:
    """One resource type: its names on the command line, in manifests, and in the store."""

    kind: str
    resource: str
    api_version: str
    namespaced: bool
    registry: str
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name kubectl accepts for it: plural, singular, short names."""
        return (self.resource, self.singular, *self.short_names)


KINDS: dict[str, KindInfo] = {info.kind: info for info in (
    KindInfo("Namespace", "namespaces", "v1", False, "namespaces", ("ns",)),
    KindInfo("Node", "nodes", "v1", False, "minions", ("no",)),
    KindInfo("Pod", "pods", "v1", True, "pods", ("po",)),
    KindInfo("Service", "services", "v1", True, "services/specs", ("svc",)),
    KindInfo("Endpoints", "endpoints", "v1", True, "services/endpoints", ("ep",)),
    KindInfo("EndpointSlice", "endpointslices", "discovery.k8s.io/v1", True, "endpointslices"),
    KindInfo("Deployment", "deployments", "apps/v1", True, "deployments", ("deploy",)),
    KindInfo("ReplicaSet", "replicasets", "apps/v1", True, "replicasets", ("rs",)),
)}

_BY_ALIAS = {alias: info for info in KINDS.values() for alias in (info.kind.lower(),
                                                                   *info.aliases)}


def kind_info(name: str) -> KindInfo:
    """Resolve what a user typed (`po`, `pods`, `Pod`, `svc`, `deploy`...) to a kind.

    Raises NetlabError with kubectl's wording when nothing matches.
    """
    info = KINDS.get(name) or _BY_ALIAS.get(name.lower())
    if info is None:
        raise NetlabError(f'the server doesn\'t have a resource type "{name}"')
    return info


def prefix_for(kind: str, namespace: str | None = None) -> str:
    """Key prefix for listing or watching a kind, in one namespace or all of them.

    Always ends with '/', so namespace "web" does not also match "web-2". A
    namespace given for a cluster-scoped kind is ignored, as kubectl ignores it.
    """
    info = kind_info(kind)
    if info.namespaced and namespace:
        return f"{REGISTRY}/{info.registry}/{namespace}/"
    return f"{REGISTRY}/{info.registry}/"


def key_for(kind_or_obj: str | Mapping[str, Any], namespace: str | None = None,
            name: str | None = None) -> str:
    """The key of one object: `key_for("Pod", "default", "web-1")` or `key_for(obj)`.

    Namespaced kinds need a namespace; a namespace given for a cluster-scoped kind
    is ignored.
    """
    if isinstance(kind_or_obj, Mapping):
        return key_of(kind_or_obj)
    info = kind_info(kind_or_obj)
    if not name:
        raise ValueError(f"{info.kind} key needs a name")
    if info.namespaced:
        if not namespace:
            raise ValueError(f"{info.kind} {name!r} needs a namespace")
        return f"{REGISTRY}/{info.registry}/{namespace}/{name}"
    return f"{REGISTRY}/{info.registry}/{name}"


def key_of(obj: Mapping[str, Any]) -> str:
    """The key of a (validated) object dict, from its kind, namespace and name."""
    meta = obj.get("metadata") or {}
    return key_for(obj["kind"], meta.get("namespace"), meta.get("name"))


_BY_REGISTRY = sorted(KINDS.values(), key=lambda info: len(info.registry), reverse=True)


def kind_of_key(store_key: str) -> KindInfo | None:
    """Which kind a `/registry/...` key holds (None for other keys, e.g. flannel's)."""
    for info in _BY_REGISTRY:
        if store_key.startswith(f"{REGISTRY}/{info.registry}/"):
            return info
    return None


def subnet_key(subnet: str | ipaddress.IPv4Network) -> str:
    """`10.244.1.0/24` -> `/coreos.com/network/subnets/10.244.1.0-24` (flannel's lease key)."""
    network = ipaddress.IPv4Network(subnet)
    return f"{FLANNEL_SUBNETS_PREFIX}{network.network_address}-{network.prefixlen}"


def subnet_of_key(lease_key: str) -> str:
    """The inverse of `subnet_key`: `.../subnets/10.244.1.0-24` -> `10.244.1.0/24`."""
    if not lease_key.startswith(FLANNEL_SUBNETS_PREFIX):
        raise ValueError(f"not a flannel subnet key: {lease_key!r}")
    address, _, length = lease_key.removeprefix(FLANNEL_SUBNETS_PREFIX).rpartition("-")
    return str(ipaddress.IPv4Network(f"{address}/{length}"))


def as_list(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Objects wrapped the way `kubectl get -o yaml` prints several: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items),
            "metadata": {"resourceVersion": ""}}
