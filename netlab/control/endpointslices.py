"""The EndpointSlice controller, and the v1 Endpoints it mirrors, as in kube-controller-manager.

For each Service with a selector: the pods it selects that have an IP become
endpoints, with the conditions proxies act on (ready: Ready and not terminating;
serving: Ready; terminating: deletionTimestamp set; publishNotReadyAddresses makes
every endpoint ready), nodeName, the node's zone and a targetRef. Ports are
resolved per pod (a named targetPort is looked up among the pod's containerPorts
by name and protocol), so pods that resolve to different ports land in different
slices, and a pod without the named port lands in a slice without that port, as
the real controller groups endpoints by port set. At most 100 endpoints per
slice; slices are `<service>-<5 random>`. A Service that selects nothing gets one
empty placeholder slice (kubectl shows `<unset>`).

Churn is kept low, as proxies resync on every slice write: an endpoint stays in the
slice it is in; new ones fill existing slices before new slices are made; a slice
is written only when its content changed.

Services without a selector are left alone: their slices and Endpoints are the
user's. The v1 Endpoints object (addresses / notReadyAddresses per port set,
terminating pods left out) carries endpointslice.kubernetes.io/skip-mirror, which
is also how we recognise the ones we manage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netlab.api.selectors import matches_map
from netlab.control.meta import Obj, controller_reference, generated_name, labels_of, ns_name
from netlab.control.pods import is_ready, is_terminating, node_of
from netlab.control.view import NsName, View, Writer
from netlab.errors import StoreError

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
_FINISHED = ("Succeeded", "Failed")


def manages(service: Obj) -> bool:
    """Does this controller own the Service's endpoints (it has a selector)?

    A selector that is not a map (only possible for an object written past
    validation) selects nothing, so it cannot break the passes over other Services.
    """
    spec = service.get("spec")
    return isinstance(spec, dict) and isinstance(spec.get("selector"), dict) \
        and bool(spec["selector"]) and spec.get("type") != "ExternalName"


def is_ours(obj: Obj) -> bool:
    labels = labels_of(obj)
    if obj["kind"] == "Endpoints":
        return labels.get(SKIP_MIRROR_LABEL) == "true"
    return labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME


def selected_pods(service: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """Pods the Service selects that can be endpoints (have an IP, not finished)."""
    selector = service["spec"].get("selector")
    return sorted((p for p in pods
                   if p.get("status", {}).get("podIP")
                   and p.get("status", {}).get("phase") not in _FINISHED
                   and matches_map(selector, labels_of(p))),
                  key=lambda p: p["metadata"]["name"])


def resolve_port(pod: Obj, service_port: Obj) -> int | None:
    """podutil.FindPort: the container port a Service port's targetPort means in this pod."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return port.get("containerPort")
    return None


def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    """The slice ports this pod serves, in Service port order ("name" always present)."""
    ports = []
    for service_port in service["spec"].get("ports") or []:
        number = resolve_port(pod, service_port)
        if number is None:
            continue
        port = {"name": service_port.get("name", ""), "port": number,
                "protocol": service_port.get("protocol", "TCP")}
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    return ports


def _hostname(service: Obj, pod: Obj) -> str | None:
    spec = pod.get("spec", {})
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        return spec["hostname"]
    return None


def pod_endpoint(service: Obj, pod: Obj, nodes: Mapping[str, Obj]) -> Obj:
    """podToEndpoint: one slice endpoint for a pod."""
    serving = is_ready(pod)
    terminating = is_terminating(pod)
    ready = bool(service["spec"].get("publishNotReadyAddresses")) or (serving and not terminating)
    namespace, name = ns_name(pod)
    endpoint: Obj = {"addresses": [pod["status"]["podIP"]],
                     "conditions": {"ready": ready, "serving": serving,
                                    "terminating": terminating}}
    if hostname := _hostname(service, pod):
        endpoint["hostname"] = hostname
    endpoint["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": name,
                             "uid": pod["metadata"].get("uid", "")}
    endpoint["nodeName"] = node_of(pod)
    zone = labels_of(nodes.get(node_of(pod)) or {"metadata": {}}).get(ZONE_LABEL)
    if zone:
        endpoint["zone"] = zone
    return endpoint


def _port_key(ports: list[Obj]) -> str:
    return json.dumps(ports, sort_keys=True)


def desired_groups(service: Obj, pods: Iterable[Obj],
                   nodes: Mapping[str, Obj]) -> dict[str, tuple[list[Obj], list[Obj]]]:
    """Endpoints grouped by port set: port key -> (ports, endpoints)."""
    groups: dict[str, tuple[list[Obj], list[Obj]]] = {}
    for pod in pods:
        ports = endpoint_ports(service, pod)
        groups.setdefault(_port_key(ports), (ports, []))[1].append(
            pod_endpoint(service, pod, nodes))
    return groups


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {k: v for k, v in labels_of(service).items()
              if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)}
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if service["spec"].get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def _built(service: Obj, base: Obj | None, ports: list[Obj], endpoints: list[Obj]) -> Obj:
    """A slice with this content: base's identity (an update) or a new generated name."""
    namespace, name = ns_name(service)
    meta = dict(base["metadata"]) if base else {"name": generated_name(f"{name}-"),
                                                "generateName": f"{name}-",
                                                "namespace": namespace}
    meta["labels"] = slice_labels(service)
    meta["ownerReferences"] = [controller_reference(service)]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports}


def _content(eps: Obj) -> tuple:
    meta = eps["metadata"]
    return (meta.get("labels"), meta.get("ownerReferences"), eps.get("addressType"),
            eps.get("endpoints") or [], eps.get("ports") or [])


def _endpoint_id(endpoint: Obj) -> tuple[str, tuple[str, ...]]:
    return (endpoint.get("targetRef") or {}).get("uid", ""), tuple(endpoint["addresses"])


@dataclass
class SlicePlan:
    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


def plan_slices(service: Obj, existing: Iterable[Obj],
                groups: Mapping[str, tuple[list[Obj], list[Obj]]],
                limit: int = MAX_ENDPOINTS_PER_SLICE) -> SlicePlan:
    """Turn the service's current slices into the desired groups with the fewest writes."""
    existing = sorted(existing, key=lambda s: s["metadata"]["name"])
    result = SlicePlan()
    if not groups:
        return _placeholder(service, existing)
    wanted = {key: {_endpoint_id(ep): ep for ep in eps} for key, (_, eps) in groups.items()}
    kept: list[tuple[Obj, str, list[Obj]]] = []
    for eps_slice in existing:
        key = _port_key(eps_slice.get("ports") or [])
        if key not in wanted:
            result.delete.append(eps_slice)
            continue
        still = [wanted[key].pop(_endpoint_id(ep)) for ep in eps_slice.get("endpoints") or []
                 if _endpoint_id(ep) in wanted[key]]
        kept.append((eps_slice, key, still))
    for key, rest in wanted.items():
        leftovers = list(rest.values())
        for _, slice_key, endpoints in kept:
            if slice_key == key and leftovers:
                room = max(limit - len(endpoints), 0)
                endpoints.extend(leftovers[:room])
                leftovers = leftovers[room:]
        for start in range(0, len(leftovers), limit):
            result.create.append(_built(service, None, groups[key][0],
                                        leftovers[start:start + limit]))
    for eps_slice, key, endpoints in kept:
        if not endpoints:
            result.delete.append(eps_slice)
            continue
        new = _built(service, eps_slice, groups[key][0], endpoints)
        if _content(new) != _content(eps_slice):
            result.update.append(new)
    return result


def _placeholder(service: Obj, existing: list[Obj]) -> SlicePlan:
    """No endpoints at all: exactly one empty slice, reusing an empty one if there is one."""
    result = SlicePlan()
    empty = next((s for s in existing if not s.get("endpoints") and not s.get("ports")), None)
    result.delete = [s for s in existing if s is not empty]
    new = _built(service, empty, [], [])
    if empty is None:
        result.create.append(new)
    elif _content(new) != _content(empty):
        result.update.append(new)
    return result


def endpoints_object(service: Obj, pods: Iterable[Obj]) -> Obj:
    """The v1 Endpoints for the Service (terminating pods only with publishNotReadyAddresses)."""
    publish = bool(service["spec"].get("publishNotReadyAddresses"))
    has_ports = bool(service["spec"].get("ports"))
    subsets: dict[str, Obj] = {}
    for pod in pods:
        if is_terminating(pod) and not publish:
            continue
        ports = [{k: v for k, v in p.items() if k != "name" or v}
                 for p in endpoint_ports(service, pod)]
        if has_ports and not ports:
            continue
        namespace, name = ns_name(pod)
        address: Obj = {"ip": pod["status"]["podIP"]}
        if hostname := _hostname(service, pod):
            address["hostname"] = hostname
        address["nodeName"] = node_of(pod)
        address["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": name,
                                "uid": pod["metadata"].get("uid", "")}
        subset = subsets.setdefault(_port_key(ports), {"addresses": [], "notReadyAddresses": [],
                                                       "ports": ports})
        subset["addresses" if publish or is_ready(pod) else "notReadyAddresses"].append(address)
    namespace, name = ns_name(service)
    labels = {**labels_of(service), SKIP_MIRROR_LABEL: "true"}
    if service["spec"].get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    obj: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": namespace, "labels": labels}}
    packed = []
    for key in sorted(subsets):
        subset = subsets[key]
        for kind in ("addresses", "notReadyAddresses"):
            subset[kind].sort(key=lambda a: (a["ip"], a["targetRef"]["uid"]))
        packed.append({k: v for k, v in subset.items() if v})
    if packed:
        obj["subsets"] = packed
    return obj


def _rewritten(current: Obj, wanted: Obj) -> Obj:
    """current (identity, resourceVersion) with wanted's labels and subsets."""
    out = {k: v for k, v in current.items() if k != "subsets"}
    out["metadata"] = {**current["metadata"], "labels": wanted["metadata"]["labels"]}
    if "subsets" in wanted:
        out["subsets"] = wanted["subsets"]
    return out


def services_selecting(view: View, namespace: str,
                       label_sets: Iterable[Mapping[str, str]]) -> set[NsName]:
    """Services in namespace whose selector matches any of these label sets."""
    label_sets = list(label_sets)
    return {key for key, svc in view.services.items()
            if key[0] == namespace and manages(svc)
            and any(matches_map(svc["spec"]["selector"], labels) for labels in label_sets)}


def _managed_keys(view: View) -> set[NsName]:
    """Every Service this controller might have to act on, existing or not."""
    keys = {key for key, svc in view.services.items() if manages(svc)}
    keys |= {key for key, slices in view.slices_by_service.items()
             if any(is_ours(s) for s in slices)}
    keys |= {key for key, eps in view.endpoints.items() if is_ours(eps)}
    return keys


def sync_service(writer: Writer, view: View, key: NsName) -> bool:
    """Reconcile one Service's slices and Endpoints; False if the commit lost a race."""
    service = view.services.get(key)
    ours = [s for s in view.slices_by_service.get(key, []) if is_ours(s)]
    current = view.endpoints.get(key)
    if service is None or not manages(service):
        stale = ours + ([current] if current is not None and is_ours(current) else [])
        if not writer.commit(f"endpoints {key[0]}/{key[1]}", delete=stale):
            return False
        if stale:
            log.info("service %s/%s: removed %d endpoint objects", *key, len(stale))
        return True
    pods = selected_pods(service, view.pods_by_namespace.get(key[0], []))
    slices = plan_slices(service, ours, desired_groups(service, pods, view.nodes))
    wanted = endpoints_object(service, pods)
    create, update = list(slices.create), list(slices.update)
    if current is None:
        create.append(wanted)
    elif (wanted["metadata"]["labels"], wanted.get("subsets")) != (
            current["metadata"].get("labels"), current.get("subsets")) or slices.create:
        # Rewritten with every slice creation too: its resourceVersion then guards
        # against a stale pass creating the same slices twice.
        update.append(_rewritten(current, wanted))
    if not writer.commit(f"endpoints {key[0]}/{key[1]}", create=create, update=update,
                         delete=slices.delete):
        return False
    if slices.create or slices.update or slices.delete:
        ready = sum(1 for p in pods if is_ready(p) and not is_terminating(p))
        log.info("service %s/%s: %d endpoints (%d ready) in slices +%d ~%d -%d", *key,
                 len(pods), ready, len(slices.create), len(slices.update), len(slices.delete))
    return True


def sync(writer: Writer, view: View, services: set[NsName] | None = None) -> set[NsName]:
    """Reconcile the given Services (None: every one, and leftovers of deleted ones).

    Returns the Services whose write lost a race, to retry on the next pass.
    """
    keys = _managed_keys(view) if services is None else services
    failed: set[NsName] = set()
    for key in sorted(keys):
        if key == ("default", "kubernetes"):
            continue
        try:
            if not sync_service(writer, view, key):
                failed.add(key)
        except StoreError:
            raise
        except Exception:
            # One malformed Service (written straight into the store) must not stop
            # the Services after it; it is tried again at the next full resync.
            log.exception("service %s/%s: endpoints not synced", *key)
    return failed
