"""PodSpec: containers, ports and probes, validated and defaulted like the API server.

Shared by Pods and by a Deployment's pod template. What netlab acts on is the
networking part: container ports (named ports are what a Service's targetPort
refers to), the readiness probe (it decides whether a pod is an endpoint),
command/args (they choose what the built-in netexec app serves), and placement
(nodeName, nodeSelector, hostNetwork). The rest is accepted and noted.
"""

from __future__ import annotations

from typing import Any

from netlab.api import names
from netlab.api.selectors import check_labels
from netlab.api.validation import Checker, is_int
from netlab.api.yamlsrc import FieldPath

PROTOCOLS = ("TCP", "UDP", "SCTP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
HTTP_SCHEMES = ("HTTP", "HTTPS")

# Probe timing defaults (the API server fills these in when a field is 0 or absent).
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "timeoutSeconds": 1, "periodSeconds": 10,
                  "successThreshold": 1, "failureThreshold": 3}

_POD_SPEC_KNOWN = ("containers", "restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy",
                   "nodeSelector", "nodeName", "hostNetwork", "hostname", "subdomain")
_POD_SPEC_IGNORED = (
    "volumes", "initContainers", "ephemeralContainers", "activeDeadlineSeconds",
    "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "hostPID", "hostIPC",
    "shareProcessNamespace", "securityContext", "imagePullSecrets", "affinity", "schedulerName",
    "tolerations", "hostAliases", "priorityClassName", "priority", "dnsConfig", "readinessGates",
    "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
    "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates",
    "resourceClaims", "resources")
_CONTAINER_KNOWN = ("name", "image", "command", "args", "ports", "readinessProbe")
_READINESS_ONLY = "ignored (netlab acts on readinessProbe only)"
_CONTAINER_IGNORED = {
    **{key: "ignored (netlab does not implement it)" for key in (
        "workingDir", "envFrom", "env", "resources", "resizePolicy", "restartPolicy",
        "volumeMounts", "volumeDevices", "lifecycle", "terminationMessagePath",
        "terminationMessagePolicy", "securityContext", "stdin", "stdinOnce", "tty")},
    "imagePullPolicy": "ignored (netlab pulls no images)",
    "livenessProbe": _READINESS_ONLY,
    "startupProbe": _READINESS_ONLY,
}
_PORT_KNOWN = ("containerPort", "protocol", "name")
_PORT_IGNORED = ("hostPort", "hostIP")
_PROBE_KNOWN = (*PROBE_HANDLERS, *PROBE_DEFAULTS)
_PROBE_IGNORED = ("terminationGracePeriodSeconds",)


def check_pod_spec(ck: Checker, spec: dict, path: FieldPath) -> None:
    """Validate and default a PodSpec in place."""
    ck.fields(spec, path, _POD_SPEC_KNOWN, _POD_SPEC_IGNORED)
    containers = ck.sequence(spec, "containers", path, required=True)
    container_names: set[str] = set()
    port_names: set[str] = set()
    for i, container in enumerate(containers or []):
        here = (*path, "containers", i)
        if not isinstance(container, dict):
            ck.invalid(here, container, "must be a mapping (a container)")
            continue
        _check_container(ck, container, here, port_names)
        name = container.get("name")
        if isinstance(name, str) and name:
            if name in container_names:
                ck.duplicate((*here, "name"), name)
            container_names.add(name)

    ck.choice(spec, "restartPolicy", path, RESTART_POLICIES, default="Always")
    dns_policy = ck.choice(spec, "dnsPolicy", path, DNS_POLICIES, default="ClusterFirst")
    if dns_policy == "None" and spec.get("dnsConfig") is None:
        ck.required((*path, "dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None")
    grace = ck.integer(spec, "terminationGracePeriodSeconds", path)
    if grace is None:
        spec.setdefault("terminationGracePeriodSeconds", 30)
    elif grace < 0:
        ck.invalid((*path, "terminationGracePeriodSeconds"), grace,
                   "must be greater than or equal to 0")
    check_labels(ck, spec, "nodeSelector", path)
    node_name = ck.string(spec, "nodeName", path)
    if node_name:
        ck.names((*path, "nodeName"), node_name, names.dns1123_subdomain(node_name))
    ck.boolean(spec, "hostNetwork", path)
    for key in ("hostname", "subdomain"):
        value = ck.string(spec, key, path)
        if value:
            ck.names((*path, key), value, names.dns1123_label(value))


def _check_container(ck: Checker, container: dict, path: FieldPath,
                     port_names: set[str]) -> None:
    ck.fields(container, path, _CONTAINER_KNOWN, _CONTAINER_IGNORED)
    name = ck.string(container, "name", path, required=True)
    if name is not None:
        ck.names((*path, "name"), name, names.dns1123_label(name))
    ck.string(container, "image", path, required=True)
    ck.string_list(container, "command", path)
    ck.string_list(container, "args", path)
    for i, port in enumerate(ck.sequence(container, "ports", path) or []):
        _check_container_port(ck, port, (*path, "ports", i), port_names)
    check_probe(ck, container, "readinessProbe", path)
    check_probe(ck, container, "livenessProbe", path)
    check_probe(ck, container, "startupProbe", path)


def _check_container_port(ck: Checker, port: Any, path: FieldPath, port_names: set[str]) -> None:
    if not isinstance(port, dict):
        ck.invalid(path, port, "must be a mapping with containerPort")
        return
    ck.fields(port, path, _PORT_KNOWN, _PORT_IGNORED)
    if port.get("containerPort") is None:
        ck.required((*path, "containerPort"))
    else:
        ck.port_number((*path, "containerPort"), port["containerPort"])
    ck.choice(port, "protocol", path, PROTOCOLS, default="TCP")
    name = ck.string(port, "name", path)
    if name is not None and ck.names((*path, "name"), name, names.port_name(name)):
        if name in port_names:
            ck.duplicate((*path, "name"), name)
        port_names.add(name)


def check_port_ref(ck: Checker, obj: dict, key: str, path: FieldPath, required: bool) -> None:
    """An IntOrString port: a number 1..65535, or the name of a container port.

    A quoted number ("8080") is a name to the API server, and not a valid one.
    """
    value = obj.get(key)
    if value is None:
        if required:
            ck.required((*path, key))
    elif isinstance(value, str):
        ck.names((*path, key), value, names.port_name(value))
    elif is_int(value):
        ck.port_number((*path, key), value)
    else:
        ck.invalid((*path, key), value, "must be a port number or a port name")


def check_probe(ck: Checker, container: dict, key: str, path: FieldPath) -> None:
    """Validate and default one probe: exactly one handler, timings defaulted."""
    probe = ck.mapping(container, key, path)
    if probe is None:
        return
    here = (*path, key)
    ck.fields(probe, here, _PROBE_KNOWN, _PROBE_IGNORED)
    handlers = [h for h in PROBE_HANDLERS if probe.get(h) is not None]
    if not handlers:
        ck.required(here, "must specify a handler type")
    for extra in handlers[1:]:
        ck.forbidden((*here, extra), "may not specify more than 1 handler type")
    if handlers:
        _check_handler(ck, probe, handlers[0], here)
    for field, default in PROBE_DEFAULTS.items():
        value = ck.integer(probe, field, here)
        if value is None:
            if probe.get(field) is None:
                probe[field] = default
        elif value < 0:
            ck.invalid((*here, field), value, "must be greater than or equal to 0")
        elif value == 0:
            probe[field] = default
    if key != "readinessProbe" and probe.get("successThreshold") not in (None, 1):
        ck.invalid((*here, "successThreshold"), probe["successThreshold"], "must be 1")


def _check_handler(ck: Checker, probe: dict, handler: str, path: FieldPath) -> None:
    action = ck.mapping(probe, handler, path)
    if action is None:
        return
    here = (*path, handler)
    if handler == "httpGet":
        ck.fields(action, here, ("path", "port", "host", "scheme", "httpHeaders"))
        check_port_ref(ck, action, "port", here, required=True)
        if ck.string(action, "path", here) is None and action.get("path") is None:
            action["path"] = "/"
        ck.choice(action, "scheme", here, HTTP_SCHEMES, default="HTTP")
        ck.string(action, "host", here)
        ck.sequence(action, "httpHeaders", here)
    elif handler == "tcpSocket":
        ck.fields(action, here, ("port", "host"))
        check_port_ref(ck, action, "port", here, required=True)
        ck.string(action, "host", here)
    elif handler == "exec":
        ck.fields(action, here, ("command",))
        ck.string_list(action, "command", here, required=True)
    else:
        ck.fields(action, here, ("port", "service"))
        if action.get("port") is None:
            ck.required((*here, "port"))
        else:
            ck.port_number((*here, "port"), action["port"])
        ck.string(action, "service", here)
