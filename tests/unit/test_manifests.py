"""Manifests are validated and defaulted as kube-apiserver would, with errors that point
at the file, the line and the field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from netlab.api.keys import as_list, key_for, kind_info, kind_of_key, prefix_for
from netlab.api.objects import SUPPORTED_KINDS, load_manifests, parse_manifests, validate_object
from netlab.api.yamlsrc import parse_documents
from netlab.errors import LocatedError, ManifestError, NetlabError

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def parse(text: str) -> list:
    return parse_manifests(textwrap.dedent(text), "app.yaml")


def error_of(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse(text)
    return info.value


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: c
      image: agnhost
"""


def pod_with(container_extra: str = "", spec_extra: str = "") -> str:
    text = POD + textwrap.indent(textwrap.dedent(container_extra), " " * 6)
    return text + textwrap.indent(textwrap.dedent(spec_extra), "  ")


def service(spec: str) -> str:
    return "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  ")


# -- YAML layer ----------------------------------------------------------------------


def test_yaml_keeps_the_line_of_every_key_and_list_item():
    doc = parse_documents("a: 1\nb:\n  - x\n  - y: 2\n", "f.yaml")[0]
    assert doc.line_of(("b", 1, "y")) == 4
    assert doc.line_of(("b", 0)) == 3
    assert doc.line_of(("b", 1, "missing")) == 4


def test_yaml_syntax_error_names_file_and_line():
    err = error_of("apiVersion: v1\nkind: [Pod\n")
    assert err.file == "app.yaml" and err.line is not None and "invalid YAML" in err.reason


def test_duplicate_keys_are_rejected_with_both_lines():
    err = error_of("apiVersion: v1\nkind: Pod\nkind: Service\n")
    assert (err.line, err.field) == (3, "kind")
    assert "first on line 2" in err.reason


def test_a_document_that_is_not_a_mapping_is_rejected():
    err = error_of(POD + "---\n- just\n- a list\n")
    assert err.line == 10 and "document 2 is a list" in err.reason


def test_unsupported_tags_and_recursive_aliases_are_rejected():
    assert "unsupported YAML tag" in error_of("a: !!python/name:os.system x\n").reason
    assert "recursive alias" in error_of("a: &x [*x]\n").reason


def test_alias_bombs_are_cut_off():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 10)}]")
    assert "too large" in error_of("\n".join(lines) + "\n").reason


def test_empty_documents_are_skipped_like_kubectl_does():
    assert [o.name for o in parse("---\n" + POD + "---\n---\n")] == ["p"]


def test_timestamps_stay_strings():
    objs = parse(POD + "  nodeSelector: {day: 2024-01-01}\n")
    assert objs[0].obj["spec"]["nodeSelector"] == {"day": "2024-01-01"}


# -- kinds and metadata ------------------------------------------------------------------


def test_unknown_kind_names_the_kind_and_lists_supported_ones():
    err = error_of("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\n")
    assert err.field == "kind" and err.line == 2
    assert '"StatefulSet"' in err.reason
    for kind in SUPPORTED_KINDS:
        assert kind in err.reason


def test_kinds_the_control_plane_owns_are_refused_with_a_reason():
    err = error_of("apiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\n")
    assert "creates Endpoints objects itself" in err.reason


def test_wrong_api_version_is_reported_like_the_api_server():
    err = error_of("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: x}\n")
    assert err.field == "apiVersion"
    assert 'no matches for kind "Deployment" in version "extensions/v1beta1"' in err.reason


def test_missing_kind_and_api_version():
    err = error_of("metadata: {name: x}\n")
    assert err.field == "kind" and "kind not set" in err.reason
    assert "apiVersion not set" in str(err)


def test_metadata_is_defaulted_like_the_api_server():
    obj = parse(POD)[0].obj
    meta = obj["metadata"]
    assert meta["namespace"] == "default" and meta["labels"] == {} and meta["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert list(obj) == ["apiVersion", "kind", "metadata", "spec"]


def test_namespace_may_be_given_or_left_empty():
    assert parse(POD.replace("  name: p\n", "  name: p\n  namespace: ''\n"))[0].namespace == (
        "default")
    assert parse(POD.replace("  name: p\n", "  name: p\n  namespace: demo\n"))[0].key == (
        "/registry/pods/demo/p")
    err = error_of(POD.replace("  name: p\n", "  name: p\n  namespace: Demo\n"))
    assert err.field == "metadata.namespace" and err.line == 5


def test_system_metadata_from_a_copied_object_is_replaced_with_a_note():
    loaded = parse(POD.replace("  name: p\n", "  name: p\n  uid: old\n  resourceVersion: '7'\n"))
    assert loaded[0].obj["metadata"]["uid"] != "old"
    assert "resourceVersion" not in loaded[0].obj["metadata"]
    assert any("metadata.uid" in n and "set by netlab" in n for n in loaded[0].notes)


def test_generate_name_makes_a_name():
    obj = parse(POD.replace("name: p", "generateName: web-"))[0].obj
    assert re.fullmatch(r"web-[a-z0-9]{5}", obj["metadata"]["name"])


def test_missing_name_is_required():
    err = error_of(POD.replace("  name: p\n", "  labels: {a: b}\n"))
    assert err.field == "metadata.name" and "Required value" in err.reason


@pytest.mark.parametrize(("kind", "api", "name", "limit_msg"), [
    ("Namespace", "v1", "Demo", "RFC 1123 label"),
    ("Namespace", "v1", "a" * 64, "no more than 63"),
    ("Service", "v1", "1web", "DNS-1035 label"),
    ("Pod", "v1", "web_1", "RFC 1123 subdomain"),
    ("Deployment", "apps/v1", "x" * 254, "no more than 253"),
])
def test_names_follow_the_kind_rules(kind, api, name, limit_msg):
    err = error_of(f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n")
    assert err.field == "metadata.name" and err.line == 4 and limit_msg in err.reason


def test_pod_names_may_have_dots_and_service_names_may_not():
    assert parse(POD.replace("name: p", "name: web.v1"))[0].name == "web.v1"
    err = error_of(service("ports: [{port: 80}]").replace("name: web", "name: web.v1"))
    assert err.field == "metadata.name"


def test_namespace_gets_its_name_label_and_is_active():
    obj = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")[0].obj
    assert obj["metadata"]["labels"] == {"kubernetes.io/metadata.name": "demo"}
    assert obj["status"] == {"phase": "Active"} and "namespace" not in obj["metadata"]


def test_namespace_on_a_cluster_scoped_object_is_dropped_with_a_note():
    loaded = parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, namespace: x}\n")
    assert "namespace" not in loaded[0].obj["metadata"]
    assert any("metadata.namespace" in note for note in loaded[0].notes)


@pytest.mark.parametrize(("labels", "field", "message"), [
    ("{app: yes}", "metadata.labels.app", "must be a string"),
    ("{'bad key!': x}", "metadata.labels.bad key!", "name part must consist"),
    ("{app: 'has space'}", "metadata.labels.app", "a valid label must be"),
    ("{'Example.com/app': x}", "metadata.labels.Example.com/app", "prefix part"),
    ("{app: " + "v" * 64 + "}", "metadata.labels.app", "no more than 63"),
])
def test_label_syntax_is_checked(labels, field, message):
    err = error_of(POD.replace("  name: p\n", f"  name: p\n  labels: {labels}\n"))
    assert err.field == field and message in err.reason and err.line == 5


def test_every_problem_is_reported_at_once():
    err = error_of(pod_with("ports: [{containerPort: 0}, {containerPort: 70000}]\n"))
    assert err.field == "spec.containers[0].ports[0].containerPort"
    assert "spec.containers[0].ports[1].containerPort" in str(err)


def test_the_same_object_twice_is_rejected():
    err = error_of(POD + "---\n" + POD)
    assert err.line == 10 and "Duplicate value: Pod default/p" in err.reason
    assert "app.yaml:1" in err.reason


# -- Pod ---------------------------------------------------------------------------------


def test_container_port_range_is_worded_like_the_api_server():
    err = error_of(pod_with("ports: [{containerPort: 0}]\n"))
    assert str(err) == ("app.yaml:9: spec.containers[0].ports[0].containerPort: "
                        "Invalid value: 0: must be between 1 and 65535, inclusive")


def test_containers_are_required_with_name_and_image():
    err = error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n")
    assert err.field == "spec.containers" and err.reason == "Required value"
    err = error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
                   "  containers:\n    - name: c\n")
    assert err.field == "spec.containers[0].image" and err.line == 6


def test_container_names_are_unique_labels():
    err = error_of(POD + "    - name: c\n      image: x\n")
    assert err.field == "spec.containers[1].name" and "Duplicate value" in err.reason


@pytest.mark.parametrize(("port", "field", "message"), [
    ("{containerPort: 80, protocol: ICMP}", "protocol", 'Unsupported value: "ICMP"'),
    ("{containerPort: 80, name: HTTP}", "name", "alpha-numeric characters"),
    ("{containerPort: 80, name: a-very-long-port-name}", "name", "no more than 15"),
    ("{containerPort: 80, name: '8080'}", "name", "at least one letter"),
    ("{containerPort: 80, name: web--x}", "name", "consecutive hyphens"),
    ("{containerPort: '80'}", "containerPort", "must be between 1 and 65535"),
    ("{name: http}", "containerPort", "Required value"),
])
def test_container_port_rules(port, field, message):
    err = error_of(pod_with(f"ports: [{port}]\n"))
    assert err.field == f"spec.containers[0].ports[0].{field}" and message in err.reason


def test_container_port_names_are_unique_in_the_pod():
    err = error_of(pod_with("ports: [{containerPort: 80, name: http}]\n") +
                   "    - name: d\n      image: x\n"
                   "      ports: [{containerPort: 81, name: http}]\n")
    assert err.field == "spec.containers[1].ports[0].name" and "Duplicate" in err.reason


def test_protocol_defaults_to_tcp():
    obj = parse(pod_with("ports: [{containerPort: 80}]\n"))[0].obj
    assert obj["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"


def test_readiness_probe_timings_get_kubernetes_defaults():
    obj = parse(pod_with("readinessProbe: {httpGet: {port: 8080}}\n"))[0].obj
    probe = obj["spec"]["containers"][0]["readinessProbe"]
    assert probe == {"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                     "initialDelaySeconds": 0, "timeoutSeconds": 1, "periodSeconds": 10,
                     "successThreshold": 1, "failureThreshold": 3}


@pytest.mark.parametrize("handler", [
    "httpGet: {path: /healthz, port: http}", "tcpSocket: {port: 8080}",
    "exec: {command: [cat, /tmp/ready]}"])
def test_each_probe_handler_is_accepted(handler):
    parse(pod_with(f"readinessProbe: {{{handler}, periodSeconds: 2}}\n"))


@pytest.mark.parametrize(("probe", "field", "message"), [
    ("{periodSeconds: 5}", "readinessProbe", "must specify a handler type"),
    ("{httpGet: {port: 80}, tcpSocket: {port: 80}}", "readinessProbe.tcpSocket",
     "more than 1 handler"),
    ("{httpGet: {path: /}}", "readinessProbe.httpGet.port", "Required value"),
    ("{httpGet: {port: 0}}", "readinessProbe.httpGet.port", "between 1 and 65535"),
    ("{tcpSocket: {port: '8080'}}", "readinessProbe.tcpSocket.port", "at least one letter"),
    ("{exec: {}}", "readinessProbe.exec.command", "Required value"),
    ("{exec: {command: [1]}}", "readinessProbe.exec.command[0]", "must be a string"),
    ("{httpGet: {port: 80}, periodSeconds: -1}", "readinessProbe.periodSeconds",
     "greater than or equal to 0"),
    ("{httpGet: {port: 80, scheme: FTP}}", "readinessProbe.httpGet.scheme",
     'Unsupported value: "FTP"'),
])
def test_bad_probes_are_rejected(probe, field, message):
    err = error_of(pod_with(f"readinessProbe: {probe}\n"))
    assert err.field == f"spec.containers[0].{field}" and message in err.reason


def test_liveness_probe_success_threshold_must_be_one():
    err = error_of(pod_with("livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}\n"))
    assert err.field == "spec.containers[0].livenessProbe.successThreshold"


def test_harmless_fields_are_kept_and_noted_as_ignored():
    loaded = parse(pod_with("imagePullPolicy: Always\nresources: {limits: {cpu: 1}}\n"
                            "env: [{name: A, value: b}]\n",
                            "tolerations: [{operator: Exists}]\n"))[0]
    container = loaded.obj["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Always" and "tolerations" in loaded.obj["spec"]
    fields = " ".join(loaded.notes)
    for name in ("imagePullPolicy", "resources", "env", "spec.tolerations"):
        assert name in fields
    assert all("ignored" in note for note in loaded.notes)


def test_unknown_fields_are_dropped_with_a_note_naming_them():
    loaded = parse(pod_with("readinesProbe: {httpGet: {port: 80}}\n"))[0]
    assert "readinesProbe" not in loaded.obj["spec"]["containers"][0]
    assert loaded.notes == ("app.yaml:9: spec.containers[0].readinesProbe: "
                            "unknown field, dropped",)


def test_pod_placement_fields():
    obj = parse(POD + "  nodeName: worker-1\n  nodeSelector: {kubernetes.io/hostname: w}\n"
                "  hostNetwork: true\n")[0].obj
    assert obj["spec"]["nodeName"] == "worker-1" and obj["spec"]["hostNetwork"] is True
    err = error_of(POD + "  nodeName: Worker_1\n")
    assert err.field == "spec.nodeName"
    err = error_of(POD + "  hostNetwork: 'yes'\n")
    assert err.field == "spec.hostNetwork" and "boolean" in err.reason


def test_wrong_types_are_reported_not_crashed_on():
    err = error_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
                   "  containers: {name: c}\n")
    assert err.field == "spec.containers" and "must be a list" in err.reason
    err = error_of("apiVersion: v1\nkind: Pod\nmetadata: [p]\n")
    assert err.field == "metadata"


def test_status_in_a_manifest_is_dropped():
    loaded = parse(POD + "status: {phase: Running}\n")[0]
    assert "status" not in loaded.obj and any("status" in n for n in loaded.notes)


# -- Deployment ----------------------------------------------------------------------------


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      containers: [{name: c, image: agnhost}]
"""


def test_deployment_replicas_default_to_one():
    assert parse(DEPLOYMENT)[0].obj["spec"]["replicas"] == 1


def test_negative_replicas_are_rejected():
    err = error_of(DEPLOYMENT.replace("spec:\n  selector", "spec:\n  replicas: -1\n  selector"))
    assert err.field == "spec.replicas" and err.line == 5


def test_selector_must_match_template_labels_as_the_api_server_says():
    err = error_of(DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}"))
    assert err.field == "spec.template.metadata.labels" and err.line == 9
    assert err.reason == ('Invalid value: map[string]string{"app":"web", "tier":"front"}: '
                          "`selector` does not match template `labels`")


def test_selector_is_required_and_may_not_be_empty():
    err = error_of(DEPLOYMENT.replace("  selector:\n    matchLabels: {app: web}\n", ""))
    assert err.field == "spec.selector" and err.reason == "Required value"
    err = error_of(DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {}"))
    assert "empty selector is invalid for deployment" in err.reason


def test_selector_expressions_are_validated_and_matched():
    parse(DEPLOYMENT.replace("matchLabels: {app: web}",
                             "matchExpressions: [{key: tier, operator: In, values: [front]}]"))
    err = error_of(DEPLOYMENT.replace("matchLabels: {app: web}",
                                      "matchExpressions: [{key: tier, operator: Near}]"))
    assert err.field == "spec.selector.matchExpressions[0].operator"


def test_template_restart_policy_must_be_always():
    err = error_of(DEPLOYMENT.replace("      containers:", "      restartPolicy: Never\n"
                                      "      containers:"))
    assert err.field == "spec.template.spec.restartPolicy"


def test_template_errors_carry_the_full_dotted_path_and_line():
    text = DEPLOYMENT.replace("[{name: c, image: agnhost}]",
                              "\n        - name: c\n          image: agnhost\n"
                              "          ports:\n            - containerPort: 80\n"
                              "            - containerPort: 99999\n")
    err = error_of(text)
    assert err.field == "spec.template.spec.containers[0].ports[1].containerPort"
    assert err.line == 16


def test_strategy_is_accepted_and_noted():
    loaded = parse(DEPLOYMENT.replace("spec:\n  selector", "spec:\n  strategy: {type: Recreate}"
                                      "\n  selector"))[0]
    assert any("spec.strategy" in n for n in loaded.notes)


# -- Service ---------------------------------------------------------------------------------


def svc(spec: str) -> dict:
    return parse(service(spec))[0].obj


def svc_error(spec: str) -> ManifestError:
    return error_of(service(spec))


def test_service_defaults():
    obj = svc("selector: {app: web}\nports: [{port: 80}]\n")
    spec = obj["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster" and "externalTrafficPolicy" not in spec
    assert obj["status"] == {"loadBalancer": {}}


def test_service_port_range_is_worded_like_the_api_server():
    err = svc_error("ports: [{port: 0}]\n")
    assert str(err) == ("app.yaml:5: spec.ports[0].port: Invalid value: 0: "
                        "must be between 1 and 65535, inclusive")


def test_ports_need_names_when_there_are_several():
    err = svc_error("ports:\n  - {port: 80}\n  - {port: 81, name: b}\n")
    assert err.field == "spec.ports[0].name" and err.reason == "Required value"


def test_port_names_and_port_protocol_pairs_are_unique():
    err = svc_error("ports:\n  - {port: 80, name: a}\n  - {port: 81, name: a}\n")
    assert err.field == "spec.ports[1].name" and "Duplicate value" in err.reason
    err = svc_error("ports:\n  - {port: 80, name: a}\n  - {port: 80, name: b}\n")
    assert err.field == "spec.ports[1]" and '"80/TCP"' in err.reason
    svc("ports:\n  - {port: 53, name: a}\n  - {port: 53, name: b, protocol: UDP}\n")


def test_target_port_may_be_a_number_or_a_name():
    spec = svc("ports:\n  - {port: 80, name: a, targetPort: http}\n"
               "  - {port: 81, name: b, targetPort: 8081}\n")["spec"]
    assert [p["targetPort"] for p in spec["ports"]] == ["http", 8081]
    err = svc_error("ports: [{port: 80, targetPort: HTTP_1}]\n")
    assert err.field == "spec.ports[0].targetPort"


def test_node_port_only_for_node_port_and_load_balancer():
    err = svc_error("ports: [{port: 80, nodePort: 30080}]\n")
    assert err.field == "spec.ports[0].nodePort"
    assert err.reason == "Forbidden: may not be used when `type` is 'ClusterIP'"
    spec = svc("type: NodePort\nports: [{port: 80, nodePort: 30080}]\n")["spec"]
    assert spec["ports"][0]["nodePort"] == 30080 and spec["externalTrafficPolicy"] == "Cluster"


def test_load_balancer_is_noted_as_working_like_node_port():
    loaded = parse(service("type: LoadBalancer\nports: [{port: 80}]\n"))[0]
    assert any("spec.type" in n and "NodePort" in n for n in loaded.notes)


def test_unknown_service_type_lists_the_supported_ones():
    err = svc_error("type: Ingress\nports: [{port: 80}]\n")
    assert err.reason == ('Unsupported value: "Ingress": supported values: "ClusterIP", '
                          '"NodePort", "LoadBalancer", "ExternalName"')


def test_headless_service_needs_no_ports_and_only_type_cluster_ip():
    assert svc("clusterIP: None\nselector: {app: web}\n")["spec"]["clusterIP"] == "None"
    err = svc_error("type: NodePort\nclusterIP: None\nports: [{port: 80}]\n")
    assert err.field == "spec.clusterIP"


def test_ports_are_required_for_a_normal_service():
    err = svc_error("selector: {app: web}\n")
    assert err.field == "spec.ports" and err.reason == "Required value"


def test_cluster_ip_must_be_an_address():
    err = svc_error("clusterIP: 10.96.0.300\nports: [{port: 80}]\n")
    assert "must be empty, 'None', or a valid IP address" in err.reason


def test_external_name_service():
    spec = svc("type: ExternalName\nexternalName: example.com.\n")["spec"]
    assert "internalTrafficPolicy" not in spec and "ipFamilies" not in spec
    err = svc_error("type: ExternalName\n")
    assert err.field == "spec.externalName" and err.reason == "Required value"
    err = svc_error("type: ExternalName\nexternalName: Not_A_Name\n")
    assert err.field == "spec.externalName"


def test_client_ip_affinity_defaults_and_bounds():
    spec = svc("sessionAffinity: ClientIP\nports: [{port: 80}]\n")["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    err = svc_error("sessionAffinity: ClientIP\nsessionAffinityConfig:\n"
                    "  clientIP: {timeoutSeconds: 86401}\nports: [{port: 80}]\n")
    assert err.field == "spec.sessionAffinityConfig.clientIP.timeoutSeconds" and err.line == 7
    err = svc_error("sessionAffinity: Sticky\nports: [{port: 80}]\n")
    assert err.field == "spec.sessionAffinity"
    err = svc_error("sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n"
                    "ports: [{port: 80}]\n")
    assert "must not be set when session affinity is None" in err.reason


def test_traffic_policies():
    spec = svc("type: NodePort\nexternalTrafficPolicy: Local\ninternalTrafficPolicy: Local\n"
               "ports: [{port: 80}]\n")["spec"]
    assert spec["externalTrafficPolicy"] == "Local" and spec["internalTrafficPolicy"] == "Local"
    err = svc_error("externalTrafficPolicy: Local\nports: [{port: 80}]\n")
    assert err.field == "spec.externalTrafficPolicy"
    err = svc_error("type: NodePort\nexternalTrafficPolicy: Nearby\nports: [{port: 80}]\n")
    assert 'supported values: "Cluster", "Local"' in err.reason


def test_external_ips_and_publish_not_ready():
    spec = svc("externalIPs: [192.168.10.200]\npublishNotReadyAddresses: true\n"
               "ports: [{port: 80}]\n")["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster" and spec["publishNotReadyAddresses"]
    err = svc_error("externalIPs: [192.168.10.256]\nports: [{port: 80}]\n")
    assert err.field == "spec.externalIPs[0]" and "valid IP address" in err.reason
    err = svc_error("publishNotReadyAddresses: 1\nports: [{port: 80}]\n")
    assert err.field == "spec.publishNotReadyAddresses"


def test_service_selector_is_a_label_map():
    err = svc_error("selector: {app: [web]}\nports: [{port: 80}]\n")
    assert err.field == "spec.selector.app"
    assert "selector" not in svc("selector: {}\nports: [{port: 80}]\n")["spec"]


def test_dual_stack_is_refused():
    err = svc_error("ipFamilies: [IPv6]\nports: [{port: 80}]\n")
    assert "single-stack IPv4" in err.reason


# -- the Python entry point ------------------------------------------------------------------------


def test_validate_object_does_not_mutate_its_input():
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"ports": [{"port": 80}], "bogus": 1}}
    before = repr(obj)
    validated, notes = validate_object(obj, "script.py")
    assert repr(obj) == before and "bogus" not in validated["spec"] and notes


def test_validated_objects_validate_again_without_problems():
    for loaded in load_manifests(TOPOLOGIES / "demo"):
        again, notes = validate_object(loaded.obj, "again")
        assert again["spec"] == loaded.obj["spec"]
        assert all("by netlab" in n for n in notes)


@pytest.mark.parametrize("value", [None, [], "Pod", 3, {1: "x"}, {"kind": ("Pod",)}])
def test_validate_object_rejects_non_objects_with_a_manifest_error(value):
    with pytest.raises(ManifestError):
        validate_object(value, "script.py")


def test_validate_object_errors_have_no_line_but_name_the_source():
    with pytest.raises(ManifestError) as info:
        validate_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "x.py")
    assert str(info.value) == "x.py: spec.containers: Required value"


# -- files, folders, lists ---------------------------------------------------------------


def test_demo_manifests_load():
    loaded = load_manifests(TOPOLOGIES / "demo" / "web.yaml")
    assert [(o.kind, o.name) for o in loaded] == [("Deployment", "web"), ("Pod", "client")]
    assert all(not o.notes for o in loaded)
    deployment = loaded[0].obj
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.k8s.io/e2e-test-images/agnhost:2.47"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080,
                                                      "scheme": "HTTP"}
    services = load_manifests(TOPOLOGIES / "demo" / "web-svc.yaml")
    assert {o.obj["spec"]["type"] for o in services} == {"ClusterIP", "NodePort"}


def test_a_folder_loads_every_manifest_in_it(tmp_path):
    (tmp_path / "a.yaml").write_text(POD)
    (tmp_path / "b.yml").write_text(POD.replace("name: p", "name: q"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert [o.name for o in load_manifests(tmp_path)] == ["p", "q"]


def test_missing_and_undecodable_files_are_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        load_manifests(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ManifestError, match="UTF-8"):
        load_manifests(tmp_path / "bin.yaml")


def test_a_list_document_is_unpacked_and_errors_point_into_it():
    listed = "apiVersion: v1\nkind: List\nitems:\n" + textwrap.indent(
        "- " + POD.replace("\n", "\n  ").rstrip() + "\n", "  ")
    assert [o.name for o in parse(listed)] == ["p"]
    err = error_of(listed.replace("image: agnhost", "image: 5"))
    assert err.field == "spec.containers[0].image" and err.line == 11


# -- keys --------------------------------------------------------------------------------


def test_keys_follow_kube_apiserver_layout():
    assert key_for("Pod", "default", "web-1") == "/registry/pods/default/web-1"
    assert key_for("svc", "demo", "web") == "/registry/services/specs/demo/web"
    assert key_for("ep", "demo", "web") == "/registry/services/endpoints/demo/web"
    assert key_for("Node", None, "worker-1") == "/registry/minions/worker-1"
    assert key_for("Namespace", "ignored", "demo") == "/registry/namespaces/demo"
    obj = {"kind": "EndpointSlice", "metadata": {"namespace": "d", "name": "web-abc"}}
    assert key_for(obj) == "/registry/endpointslices/d/web-abc"
    assert prefix_for("deploy") == "/registry/deployments/"
    assert prefix_for("rs", "default") == "/registry/replicasets/default/"
    assert kind_of_key("/registry/services/endpoints/d/web").kind == "Endpoints"
    assert kind_of_key("/coreos.com/network/config") is None


def test_kind_lookup_accepts_kubectl_names():
    for name in ("po", "pods", "pod", "Pod"):
        assert kind_info(name).kind == "Pod"
    assert kind_info("endpointslice").api_version == "discovery.k8s.io/v1"
    assert kind_info("no").namespaced is False
    with pytest.raises(NetlabError, match='resource type "foo"'):
        kind_info("foo")


def test_as_list_has_kubectl_shape():
    assert as_list([{"a": 1}]) == {"apiVersion": "v1", "kind": "List", "items": [{"a": 1}],
                                   "metadata": {"resourceVersion": ""}}


def test_errors_are_located_errors():
    assert issubclass(ManifestError, LocatedError)
