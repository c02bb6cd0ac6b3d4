"""`kubectl describe` for Services, Pods, Nodes and EndpointSlices: objects in, text out.

Field names, their order, the `<none>`/`<unset>` spellings and the alignment are
kubectl's (k8s.io/kubectl/pkg/describe, 1.31), so what a learner reads in the lab
is what a cluster shows. Only what the lab does not model is left out: events
(always `<none>`), volumes, resource requests (pods request nothing, so the node's
pod table shows zeros) and the node's lease and capacity sections.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from typing import Any

from netlab.cli.render import age
from netlab.cli.tabwriter import align

Obj = Mapping[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class _Writer:
    """kubectl's PrefixWriter: two spaces per level, tabs separate cells."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, level: int, text: str) -> None:
        self.lines.append("  " * level + text)

    def multiline(self, title: str, items: list[str]) -> None:
        """`Labels:` and friends: one item per line, continuation lines in the value column."""
        if not items:
            self(0, f"{title}:\t<none>")
            return
        self(0, f"{title}:\t{items[0]}")
        for item in items[1:]:
            self(0, f"\t{item}")

    def text(self) -> str:
        return align("\n".join(self.lines)) + "\n"


def _time(stamp: str | None) -> str:
    """RFC 3339 from the store as Go's time.RFC1123Z, as describe prints times."""
    if not stamp:
        return "<unknown>"
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return when.strftime("%a, %d %b %Y %H:%M:%S %z")


def _labels(obj: Obj) -> list[str]:
    labels = obj.get("metadata", {}).get("labels") or {}
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def _annotations(obj: Obj) -> list[str]:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return [f"{k}: {v}" for k, v in sorted(annotations.items()) if k != LAST_APPLIED]


def _head(w: _Writer, obj: Obj, namespaced: bool = True) -> None:
    meta = obj["metadata"]
    w(0, f"Name:\t{meta['name']}")
    if namespaced:
        w(0, f"Namespace:\t{meta.get('namespace', 'default')}")


def _events(w: _Writer) -> None:
    w(0, "Events:\t<none>")


# -- Service -------------------------------------------------------------------------


def _endpoints(slices: Iterable[Obj], port_name: str) -> str:
    """formatEndpointSlices: ready `ip:port` of one Service port, at most three shown."""
    slices = list(slices)
    if not slices:
        return "<none>"
    shown: list[str] = []
    count = 0
    for eps in slices:
        ready = [e for e in eps.get("endpoints") or []
                 if (e.get("conditions") or {}).get("ready") is not False]
        for port in eps.get("ports") or []:
            if (port.get("name") or "") != port_name:
                continue
            count += len(ready)
            for endpoint in ready:
                if len(shown) == 3:
                    break
                shown.extend(f"{a}:{port.get('port')}" for a in endpoint.get("addresses") or [])
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if count > 3 else text


def describe_service(svc: Obj, slices: Iterable[Obj]) -> str:
    """`kubectl describe service`; `slices` are the Service's EndpointSlices."""
    slices = sorted(slices, key=lambda s: s["metadata"]["name"])
    spec = svc.get("spec") or {}
    w = _Writer()
    _head(w, svc)
    w.multiline("Labels", _labels(svc))
    w.multiline("Annotations", _annotations(svc))
    selector = spec.get("selector") or {}
    w(0, "Selector:\t" + (",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                          or "<none>"))
    w(0, f"Type:\t{spec.get('type', 'ClusterIP')}")
    if spec.get("ipFamilyPolicy"):
        w(0, f"IP Family Policy:\t{spec['ipFamilyPolicy']}")
    w(0, "IP Families:\t" + (",".join(spec.get("ipFamilies") or []) or "<none>"))
    w(0, f"IP:\t{spec.get('clusterIP', '')}")
    w(0, "IPs:\t" + (",".join(spec.get("clusterIPs") or []) or "<none>"))
    if spec.get("externalIPs"):
        w(0, "External IPs:\t" + ",".join(spec["externalIPs"]))
    if spec.get("externalName"):
        w(0, f"External Name:\t{spec['externalName']}")
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        w(0, "LoadBalancer Ingress:\t" + ", ".join(i.get("ip") or i.get("hostname", "")
                                                   for i in ingress))
    for port in spec.get("ports") or []:
        name = port.get("name") or "<unset>"
        protocol = port.get("protocol", "TCP")
        w(0, f"Port:\t{name}\t{port['port']}/{protocol}")
        w(0, f"TargetPort:\t{port.get('targetPort', port['port'])}/{protocol}")
        if port.get("nodePort"):
            w(0, f"NodePort:\t{name}\t{port['nodePort']}/{protocol}")
        w(0, f"Endpoints:\t{_endpoints(slices, port.get('name') or '')}")
    w(0, f"Session Affinity:\t{spec.get('sessionAffinity', 'None')}")
    if spec.get("externalTrafficPolicy"):
        w(0, f"External Traffic Policy:\t{spec['externalTrafficPolicy']}")
    if spec.get("internalTrafficPolicy"):
        w(0, f"Internal Traffic Policy:\t{spec['internalTrafficPolicy']}")
    if spec.get("healthCheckNodePort"):
        w(0, f"HealthCheck NodePort:\t{spec['healthCheckNodePort']}")
    _events(w)
    return w.text()


# -- EndpointSlice -------------------------------------------------------------------


def describe_endpointslice(eps: Obj) -> str:
    """`kubectl describe endpointslice`."""
    w = _Writer()
    _head(w, eps)
    w.multiline("Labels", _labels(eps))
    w.multiline("Annotations", _annotations(eps))
    w(0, f"AddressType:\t{eps.get('addressType', 'IPv4')}")
    ports = eps.get("ports") or []
    if not ports:
        w(0, "Ports: <unset>")
    else:
        w(0, "Ports:")
        w(1, "Name\tPort\tProtocol")
        w(1, "----\t----\t--------")
        for port in ports:
            number = port.get("port")
            w(1, f"{port.get('name') or '<unset>'}\t"
                 f"{'<unset>' if number is None else number}\t{port.get('protocol', 'TCP')}")
    endpoints = eps.get("endpoints") or []
    if not endpoints:
        w(0, "Endpoints: <none>")
    else:
        w(0, "Endpoints:")
        for endpoint in endpoints:
            w(1, "- Addresses:\t" + (", ".join(endpoint.get("addresses") or []) or "<none>"))
            w(2, "Conditions:")
            ready = (endpoint.get("conditions") or {}).get("ready")
            w(3, "Ready:\t" + ("<unset>" if ready is None else str(ready).lower()))
            w(2, f"Hostname:\t{endpoint.get('hostname', '<unset>')}")
            ref = endpoint.get("targetRef")
            if ref:
                w(2, f"TargetRef:\t{ref.get('kind')}/{ref.get('name')}")
            w(2, f"NodeName:\t{endpoint.get('nodeName', '<unset>')}")
            w(2, f"Zone:\t{endpoint.get('zone', '<unset>')}")
    _events(w)
    return w.text()


# -- Pod -----------------------------------------------------------------------------


def _probe(probe: Obj) -> str:
    """describe's DescribeProbe, with the API's defaults for unset numbers."""
    attrs = (f"delay={probe.get('initialDelaySeconds', 0)}s "
             f"timeout={probe.get('timeoutSeconds', 1)}s "
             f"period={probe.get('periodSeconds', 10)}s "
             f"#success={probe.get('successThreshold', 1)} "
             f"#failure={probe.get('failureThreshold', 3)}")
    if "exec" in probe:
        return f"exec [{' '.join(probe['exec'].get('command') or [])}] {attrs}"
    if "httpGet" in probe:
        get = probe["httpGet"]
        scheme = str(get.get("scheme", "HTTP")).lower()
        return f"http-get {scheme}://{get.get('host', '')}:{get.get('port')}" \
               f"{get.get('path', '')} {attrs}"
    if "tcpSocket" in probe:
        sock = probe["tcpSocket"]
        return f"tcp-socket {sock.get('host', '')}:{sock.get('port')} {attrs}"
    if "grpc" in probe:
        return f"grpc <pod>:{probe['grpc'].get('port')} {probe['grpc'].get('service', '')} " \
               f"{attrs}"
    return f"unknown {attrs}"


def _container(w: _Writer, container: Obj, status: Obj) -> None:
    w(1, f"{container['name']}:")
    w(2, f"Container ID:\t{status.get('containerID', '')}")
    w(2, f"Image:\t{container.get('image', '')}")
    w(2, f"Image ID:\t{status.get('imageID', '')}")
    ports = container.get("ports") or []
    numbers = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in ports)
    hosts = ", ".join(f"{p.get('hostPort', 0)}/{p.get('protocol', 'TCP')}" for p in ports)
    w(2, ("Ports:\t" if "," in numbers else "Port:\t") + (numbers or "<none>"))
    w(2, ("Host Ports:\t" if "," in hosts else "Host Port:\t") + (hosts or "<none>"))
    for title, field in (("Command", "command"), ("Args", "args")):
        if container.get(field):
            w(2, f"{title}:")
            for arg in container[field]:
                w(3, str(arg))
    state = status.get("state") or {}
    if "running" in state:
        w(2, "State:\tRunning")
        w(3, f"Started:\t{_time(state['running'].get('startedAt'))}")
    elif "terminated" in state:
        done = state["terminated"]
        w(2, "State:\tTerminated")
        if done.get("reason"):
            w(3, f"Reason:\t{done['reason']}")
        w(3, f"Exit Code:\t{done.get('exitCode', 0)}")
        w(3, f"Started:\t{_time(done.get('startedAt'))}")
        w(3, f"Finished:\t{_time(done.get('finishedAt'))}")
    else:
        w(2, "State:\tWaiting")
        reason = (state.get("waiting") or {}).get("reason")
        if reason:
            w(3, f"Reason:\t{reason}")
    w(2, f"Ready:\t{'True' if status.get('ready') else 'False'}")
    w(2, f"Restart Count:\t{status.get('restartCount', 0)}")
    for title, field in (("Liveness", "livenessProbe"), ("Readiness", "readinessProbe"),
                         ("Startup", "startupProbe")):
        if container.get(field):
            w(2, f"{title}:\t{_probe(container[field])}")
    env = container.get("env") or []
    if not env:
        w(2, "Environment:\t<none>")
    else:
        w(2, "Environment:")
        for var in env:
            w(3, f"{var.get('name')}:\t{var.get('value', '')}")
    w(2, "Mounts:\t<none>")


def _toleration(t: Obj) -> str:
    text = t.get("key", "")
    if t.get("value"):
        text += f"={t['value']}"
    if t.get("effect"):
        text += f":{t['effect']}"
    if t.get("operator") == "Exists" and not t.get("value"):
        text += " op=Exists" if text else "op=Exists"
    if t.get("tolerationSeconds") is not None:
        text += f" for {t['tolerationSeconds']}s"
    return text


def describe_pod(pod: Obj) -> str:
    """`kubectl describe pod`."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    meta = pod["metadata"]
    w = _Writer()
    _head(w, pod)
    w(0, f"Priority:\t{spec.get('priority', 0)}")
    w(0, f"Service Account:\t{spec.get('serviceAccountName', 'default')}")
    node = spec.get("nodeName")
    w(0, "Node:\t" + (f"{node}/{status.get('hostIP', '')}" if node else "<none>"))
    if status.get("startTime"):
        w(0, f"Start Time:\t{_time(status['startTime'])}")
    w.multiline("Labels", _labels(pod))
    w.multiline("Annotations", _annotations(pod))
    if meta.get("deletionTimestamp"):
        w(0, "Status:\tTerminating")
        w(0, f"Termination Grace Period:\t{spec.get('terminationGracePeriodSeconds', 30)}s")
    else:
        w(0, f"Status:\t{status.get('phase', 'Pending')}")
    w(0, f"IP:\t{status.get('podIP', '')}")
    ips = status.get("podIPs") or []
    if ips:
        w(0, "IPs:")
        for ip in ips:
            w(1, f"IP:\t{ip.get('ip')}")
    else:
        w(0, "IPs:\t<none>")
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if owner:
        w(0, f"Controlled By:\t{owner['kind']}/{owner['name']}")
    w(0, "Containers:")
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    for container in spec.get("containers") or []:
        _container(w, container, statuses.get(container["name"], {}))
    conditions = status.get("conditions") or []
    if conditions:
        w(0, "Conditions:")
        w(1, "Type\tStatus")
        for condition in conditions:
            w(1, f"{condition.get('type')} \t{condition.get('status')} ")
    w(0, "Volumes:\t<none>")
    w(0, f"QoS Class:\t{status.get('qosClass', 'BestEffort')}")
    selector = spec.get("nodeSelector") or {}
    w.multiline("Node-Selectors", [f"{k}={v}" for k, v in sorted(selector.items())])
    w.multiline("Tolerations", [_toleration(t) for t in spec.get("tolerations") or []])
    _events(w)
    return w.text()


# -- Node ----------------------------------------------------------------------------


def _roles(node: Obj) -> str:
    labels = node.get("metadata", {}).get("labels") or {}
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def describe_node(node: Obj, pods: Iterable[Obj]) -> str:
    """`kubectl describe node`; `pods` are every pod (those bound to this node are listed)."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    name = node["metadata"]["name"]
    w = _Writer()
    _head(w, node, namespaced=False)
    w(0, f"Roles:\t{_roles(node)}")
    w.multiline("Labels", _labels(node))
    w.multiline("Annotations", _annotations(node))
    w(0, f"CreationTimestamp:\t{_time(node['metadata'].get('creationTimestamp'))}")
    taints = [f"{t['key']}" + (f"={t['value']}" if t.get("value") else "") + f":{t['effect']}"
              for t in spec.get("taints") or []]
    w.multiline("Taints", taints)
    w(0, f"Unschedulable:\t{'true' if spec.get('unschedulable') else 'false'}")
    w(0, "Conditions:")
    w(1, "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage")
    w(1, "----\t------\t-----------------\t------------------\t------\t-------")
    for c in status.get("conditions") or []:
        w(1, f"{c.get('type')} \t{c.get('status')} \t{_time(c.get('lastHeartbeatTime'))} \t"
             f"{_time(c.get('lastTransitionTime'))} \t{c.get('reason', '')} \t"
             f"{c.get('message', '')}")
    w(0, "Addresses:")
    for address in status.get("addresses") or []:
        w(1, f"{address.get('type')}:\t{address.get('address')}")
    info = status.get("nodeInfo") or {}
    w(0, "System Info:")
    for title, field in (("Machine ID", "machineID"), ("System UUID", "systemUUID"),
                         ("Boot ID", "bootID")):
        w(1, f"{title}:\t{info.get(field, '')}")
    w(1, f"Kernel Version:\t{info.get('kernelVersion') or os.uname().release}")
    for title, field in (("OS Image", "osImage"), ("Operating System", "operatingSystem"),
                         ("Architecture", "architecture"),
                         ("Container Runtime Version", "containerRuntimeVersion"),
                         ("Kubelet Version", "kubeletVersion"),
                         ("Kube-Proxy Version", "kubeProxyVersion")):
        w(1, f"{title}:\t{info.get(field, '')}")
    w(0, f"PodCIDR:\t{spec.get('podCIDR', '')}")
    w(0, "PodCIDRs:\t" + ",".join(spec.get("podCIDRs") or []))
    here = [p for p in pods if (p.get("spec") or {}).get("nodeName") == name
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    w(0, f"Non-terminated Pods:\t({len(here)} in total)")
    w(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge")
    w(1, "---------\t----\t\t------------\t----------\t---------------\t-------------\t---")
    for pod in sorted(here, key=lambda p: (p["metadata"].get("namespace", ""),
                                           p["metadata"]["name"])):
        w(1, f"{pod['metadata'].get('namespace', 'default')}\t{pod['metadata']['name']}\t\t"
             f"0 (0%)\t0 (0%)\t0 (0%)\t0 (0%)\t{age(dict(pod))}")
    _events(w)
    return w.text()
