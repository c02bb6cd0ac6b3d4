"""Pod and Deployment: object-level rules on top of the shared PodSpec checks."""

from __future__ import annotations

import json

from netlab.api import names
from netlab.api.podspec import check_pod_spec
from netlab.api.selectors import check_label_selector, check_labels, matches
from netlab.api.validation import Checker

_DEPLOYMENT_SPEC_KNOWN = ("replicas", "selector", "template")
_DEPLOYMENT_SPEC_IGNORED = ("strategy", "minReadySeconds", "revisionHistoryLimit", "paused",
                            "progressDeadlineSeconds")
_TEMPLATE_META_KNOWN = ("labels", "annotations", "name", "namespace")
_TEMPLATE_META_IGNORED = ("creationTimestamp", "generateName", "finalizers", "ownerReferences")

POD_NAME = names.dns1123_subdomain
DEPLOYMENT_NAME = names.dns1123_subdomain


def check_pod(ck: Checker, obj: dict) -> None:
    """Pod.spec; status is the node's to write, so a given one is dropped."""
    spec = _spec(ck, obj)
    if spec is not None:
        check_pod_spec(ck, spec, ("spec",))


def check_deployment(ck: Checker, obj: dict) -> None:
    """Deployment.spec: replicas, a selector that selects its own template, the template."""
    spec = _spec(ck, obj)
    if spec is None:
        return
    path = ("spec",)
    ck.fields(spec, path, _DEPLOYMENT_SPEC_KNOWN, _DEPLOYMENT_SPEC_IGNORED)
    replicas = ck.integer(spec, "replicas", path)
    if replicas is None and spec.get("replicas") is None:
        spec["replicas"] = 1
    elif replicas is not None and replicas < 0:
        ck.invalid((*path, "replicas"), replicas, "must be greater than or equal to 0")

    selector = check_label_selector(ck, spec, "selector", path, required=True)
    if selector is not None and not selector.get("matchLabels") and not selector.get(
            "matchExpressions"):
        ck.invalid((*path, "selector"), selector, "empty selector is invalid for deployment")
        selector = None

    template = ck.mapping(spec, "template", path, required=True)
    if template is None:
        return
    tpath = (*path, "template")
    ck.fields(template, tpath, ("metadata", "spec"))
    meta = ck.mapping(template, "metadata", tpath)
    if meta is None and template.get("metadata") is None:
        meta = template["metadata"] = {}
    if meta is not None:
        mpath = (*tpath, "metadata")
        ck.fields(meta, mpath, _TEMPLATE_META_KNOWN, _TEMPLATE_META_IGNORED)
        labels = check_labels(ck, meta, "labels", mpath) if meta.get("labels") is not None else {}
        ck.string_map(meta, "annotations", mpath)
        if selector is not None and labels is not None and not matches(selector, labels):
            ck.problem((*mpath, "labels"), f"Invalid value: {go_map(labels)}: "
                       "`selector` does not match template `labels`")

    pod_spec = ck.mapping(template, "spec", tpath, required=True)
    if pod_spec is None:
        return
    check_pod_spec(ck, pod_spec, (*tpath, "spec"))
    policy = pod_spec.get("restartPolicy")
    if isinstance(policy, str) and policy != "Always":
        ck.unsupported((*tpath, "spec", "restartPolicy"), policy, ["Always"])


def _spec(ck: Checker, obj: dict) -> dict | None:
    if obj.get("status") is not None:
        ck.note(("status",), "ignored (status is written by netlab)")
    obj.pop("status", None)
    spec = ck.mapping(obj, "spec", ())
    if spec is None and obj.get("spec") is None:
        spec = obj["spec"] = {}
    return spec


def go_map(labels: dict[str, str]) -> str:
    """Labels as Go prints a map (%#v), the way the API server quotes template labels."""
    pairs = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(labels.items()))
    return "map[string]string{" + pairs + "}"
