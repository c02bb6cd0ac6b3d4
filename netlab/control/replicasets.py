"""The ReplicaSet controller: keep spec.replicas pods alive, report how many are ready.

Pods are named `<replicaset>-<5 random>` and carry the template's labels
(pod-template-hash included) and an ownerReference, as in Kubernetes. Too few
active pods (a pod was deleted, or the set scaled up) -> create the difference in
one commit; too many -> delete the ones kube-controller-manager would pick first
(unscheduled, pending, not ready, crowded on one node, ready most recently, most
restarts, newest). The ReplicaSet itself is rewritten in the same commit,
guarded by its resourceVersion: a pass working from a view that does not yet show
its previous creations fails instead of creating the pods a second time.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from netlab.control.meta import (
    Obj,
    condition,
    controller_reference,
    generated_name,
    labels_of,
    ns_name,
)
from netlab.control.pods import is_active, is_ready, marked_for_deletion, needs_agent, node_of
from netlab.control.view import View, Writer

log = logging.getLogger(__name__)

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass
class ReplicaSetPlan:
    """Pods to create and delete, and the ReplicaSet with its new status."""

    create: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    replicaset: Obj | None = None  # None: status unchanged and no pod changes


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _restarts(pod: Obj) -> int:
    return sum(c.get("restartCount", 0)
               for c in pod.get("status", {}).get("containerStatuses") or [])


def deletion_order(pods: Iterable[Obj]) -> list[Obj]:
    """Active pods, the first to delete first (controller.ActivePodsWithRanks)."""
    pods = list(pods)
    crowd = Counter(node_of(p) for p in pods if node_of(p))

    def rank(pod: Obj) -> tuple:
        ready = is_ready(pod)
        ready_since = _epoch((condition(pod, "Ready") or {}).get("lastTransitionTime"))
        return (bool(node_of(pod)),
                _PHASE_RANK.get(pod.get("status", {}).get("phase", "Pending"), 0),
                ready,
                -crowd[node_of(pod)] if node_of(pod) else 0,
                -ready_since if ready else 0.0,
                -_restarts(pod),
                -_epoch(pod["metadata"].get("creationTimestamp")),
                pod["metadata"]["name"])

    return sorted(pods, key=rank)


def new_pod(rs: Obj, taken: set[str]) -> Obj:
    """A pod from the ReplicaSet's template, with a name not in taken (which it joins)."""
    namespace, rs_name = ns_name(rs)
    template = rs["spec"].get("template", {})
    template_meta = template.get("metadata", {})
    name = generated_name(f"{rs_name}-")
    while name in taken:
        name = generated_name(f"{rs_name}-")
    taken.add(name)
    meta: Obj = {"name": name, "generateName": f"{rs_name}-", "namespace": namespace,
                 "labels": dict(template_meta.get("labels") or {}),
                 "ownerReferences": [controller_reference(rs)]}
    if template_meta.get("annotations"):
        meta["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": copy.deepcopy(template.get("spec", {})), "status": {"phase": "Pending"}}


def replicaset_status(rs: Obj, active: list[Obj]) -> Obj:
    """ReplicaSetStatus over the active pods (zero counts omitted, as the API omits them)."""
    template_labels = labels_of(rs["spec"].get("template", {}))
    ready = sum(1 for p in active if is_ready(p))
    status: Obj = {"replicas": len(active),
                   "fullyLabeledReplicas": sum(
                       1 for p in active
                       if template_labels.items() <= labels_of(p).items()),
                   "readyReplicas": ready,
                   "availableReplicas": ready,
                   "observedGeneration": rs["metadata"].get("generation", 1)}
    return {k: v for k, v in status.items() if v or k == "replicas"}


def plan(rs: Obj, owned: Iterable[Obj], taken: set[str]) -> ReplicaSetPlan:
    """What to do about one ReplicaSet, given the pods it owns (terminating ones too)."""
    active = [p for p in owned if is_active(p)]
    diff = rs["spec"].get("replicas", 1) - len(active)
    result = ReplicaSetPlan()
    if diff > 0:
        result.create = [new_pod(rs, taken) for _ in range(diff)]
    elif diff < 0:
        result.delete = deletion_order(active)[:-diff]
    gone = {p["metadata"]["name"] for p in result.delete}
    remaining = [p for p in active if p["metadata"]["name"] not in gone] + result.create
    status = replicaset_status(rs, remaining)
    if result.create or result.delete or status != rs.get("status"):
        result.replicaset = {**rs, "status": status}
    return result


def sync(writer: Writer, view: View) -> None:
    nodes = frozenset(view.nodes)
    taken: dict[str, set[str]] = {}
    for (namespace, name), rs in sorted(view.replicasets.items()):
        if writer.was_touched(rs):
            continue  # rescaled this pass; act on it when the view shows the new spec
        if namespace not in taken:
            taken[namespace] = {p["metadata"]["name"]
                                for p in view.pods_by_namespace.get(namespace, [])}
        result = plan(rs, view.pods_by_owner.get(rs["metadata"]["uid"], []), taken[namespace])
        if result.replicaset is None:
            continue
        marked = [marked_for_deletion(p) for p in result.delete if needs_agent(p, nodes)]
        removed = [p for p in result.delete if not needs_agent(p, nodes)]
        ok = writer.commit(f"replicaset {namespace}/{name}", create=result.create,
                           update=[result.replicaset, *marked], delete=removed)
        if ok and result.create:
            log.info("replicaset %s/%s: created %d pods", namespace, name, len(result.create))
        if ok and result.delete:
            log.info("replicaset %s/%s: deleting %d pods (%s)", namespace, name,
                     len(result.delete), ", ".join(p["metadata"]["name"] for p in result.delete))
