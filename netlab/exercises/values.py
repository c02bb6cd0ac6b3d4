"""`${...}` in an exercise's steps: values read from the running lab when the step runs.

Pod IPs, ClusterIPs and a peer's VTEP MAC are only known once the lab runs (and
change when a pod is re-created), so steps name them instead of writing them:

    ${pod.client.ip}  ${pod.client.node}  ${pod.client.veth}  ${pod.client.netns}
    ${svc.hostnames.ip}      (a namespace as ${svc.kube-system/kube-dns.ip})
    ${node.worker-2.ip}  ${node.worker-2.pod_cidr}  ${node.worker-2.flannel_ip}
    ${node.worker-2.vtep_mac}  ${node.worker-2.netns}
    ${lab.name}  ${lab.dns_ip}  ${lab.underlay_mtu}  ${lab.overlay_mtu}
    ${saved.NAME}            (a value a `save` step kept)

Each is looked up when the step runs, in the store (pods, Services, Nodes) or the
lab's description; a name that does not resolve is an error naming the step.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from netlab.exercises.model import ExerciseError
from netlab.lab.session import RunningLab
from netlab.node.cni import host_veth_name

PATTERN = re.compile(r"\$\{([^}]*)\}")


class LabValues:
    """Resolves `${...}` against one running lab; `saved` holds what `save` steps kept."""

    def __init__(self, lab: RunningLab, saved: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.saved = saved if saved is not None else {}

    def resolve(self, value: Any, where: str = "") -> Any:
        """`value` with every `${...}` in its strings replaced (lists and mappings too)."""
        if isinstance(value, str):
            return PATTERN.sub(lambda m: self.lookup(m.group(1), where), value)
        if isinstance(value, list):
            return [self.resolve(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, where) for k, v in value.items()}
        return value

    def lookup(self, expression: str, where: str = "") -> str:
        kind, _, rest = expression.strip().partition(".")
        try:
            if kind == "saved":
                return self.saved[rest]
            if kind == "lab":
                return self._lab(rest)
            name, _, attribute = rest.rpartition(".")
            readers: dict[str, Callable[[str, str], str]] = {
                "pod": self._pod, "svc": self._service, "node": self._node}
            if kind not in readers or not name:
                raise KeyError(expression)
            return readers[kind](name, attribute)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            detail = f": {exc.args[0]}" if isinstance(exc, ValueError) else ""
            raise ExerciseError(f"${{{expression}}} does not resolve in lab "
                                f"{self.lab.name}{detail}", file=where or None) from None

    # -- readers ---------------------------------------------------------------------

    def _lab(self, attribute: str) -> str:
        config = self.lab.config
        values = {"name": self.lab.name, "dns_ip": config.dns_cluster_ip,
                  "underlay_mtu": str(config.underlay_mtu), "overlay_mtu": str(config.pod_mtu),
                  "pod_cidr": config.pod_cidr, "service_cidr": config.service_cidr}
        return values[attribute]

    def _pod(self, name: str, attribute: str) -> str:
        namespace, _, pod_name = name.rpartition("/")
        pod = self.lab.objects.get("Pod", namespace or "default", pod_name)
        if pod is None:
            raise ValueError(f"no pod {namespace or 'default'}/{pod_name}")
        status = pod.get("status") or {}
        if attribute == "veth":
            return host_veth_name(pod["metadata"]["uid"])
        if attribute == "netns":
            return self.lab.netns(pod_name, namespace or "default")
        values = {"ip": status.get("podIP"), "node": pod["spec"].get("nodeName"),
                  "uid": pod["metadata"].get("uid")}
        if not values.get(attribute):
            raise ValueError(f"pod {pod_name} has no {attribute} (yet)")
        return str(values[attribute])

    def _service(self, name: str, attribute: str) -> str:
        namespace, _, svc_name = name.rpartition("/")
        svc = self.lab.objects.get("Service", namespace or "default", svc_name)
        if svc is None:
            raise ValueError(f"no Service {namespace or 'default'}/{svc_name}")
        if attribute != "ip":
            raise KeyError(attribute)
        return str(svc["spec"]["clusterIP"])

    def _node(self, name: str, attribute: str) -> str:
        node = self.lab.objects.get("Node", None, name)
        if node is None:
            raise ValueError(f"no node {name}")
        cidr = node["spec"].get("podCIDR", "")
        annotations = node["metadata"].get("annotations") or {}
        if attribute == "ip":
            return self.lab.node_ip(name)
        if attribute == "netns":
            return self.lab.netns(name)
        if attribute == "pod_cidr":
            return cidr
        if attribute == "flannel_ip":  # the peer subnet's .0, on its flannel.1
            return str(ipaddress.ip_network(cidr).network_address)
        if attribute == "vtep_mac":
            data = json.loads(annotations["flannel.alpha.coreos.com/backend-data"])
            return str(data["VtepMAC"])
        raise KeyError(attribute)
