"""The Deployment controller: one ReplicaSet per pod template, rolled over like Kubernetes.

The current template's ReplicaSet is `<deployment>-<pod-template-hash>`; the hash is
an FNV-32a of the template turned into 10 or fewer characters by apimachinery's
SafeEncodeString, so names look like `web-7c9d8b5f4d`. (Kubernetes hashes Go's
spew dump of the template, which we cannot reproduce, so the values differ from a
real cluster's; the shape and the rules do not.)

A template change creates a new ReplicaSet and moves replicas over with the
RollingUpdate arithmetic of kube-controller-manager (maxSurge rounded up,
maxUnavailable rounded down, 25% each by default; one step per pass: scale the new
set up if the surge allows, else scale old sets down as far as availability
allows). Recreate scales the old sets to zero first. Status (replicas, ready,
available, updated, conditions Available/Progressing) is summed from the
ReplicaSets, which the ReplicaSet controller keeps current.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netlab.control.meta import Obj, controller_reference, labels_of, safe_encode, set_condition
from netlab.control.view import View, Writer

log = logging.getLogger(__name__)

TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
DEFAULT_SURGE = DEFAULT_UNAVAILABLE = "25%"
DEFAULT_HISTORY_LIMIT = 10


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """pod-template-hash: a new value for every template (and every collision bump)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    return safe_encode(str(fnv32a(data)))


def _scaled(value: Any, total: int, round_up: bool, default: str) -> int:
    """An int-or-percent (maxSurge "25%") against total; malformed values count as default."""
    if value is None:
        value = default
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value)
    if text.endswith("%") and text[:-1].isdigit():
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    if text.isdigit():
        return int(text)
    return _scaled(default, total, round_up, default)


def is_recreate(deploy: Obj) -> bool:
    return (deploy["spec"].get("strategy") or {}).get("type") == "Recreate"


def fenceposts(deploy: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers of pods; never both zero."""
    if is_recreate(deploy):
        return 0, 0
    replicas = deploy["spec"].get("replicas", 1)
    rolling = (deploy["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge"), replicas, True, DEFAULT_SURGE)
    unavailable = _scaled(rolling.get("maxUnavailable"), replicas, False, DEFAULT_UNAVAILABLE)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deploy: Obj) -> int:
    replicas = deploy["spec"].get("replicas", 1)
    if is_recreate(deploy) or replicas == 0:
        return 0
    return min(fenceposts(deploy)[1], replicas)


def revision_of(obj: Obj) -> int:
    value = (obj["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(value) if value.isdigit() else 0


def _created(rs: Obj) -> tuple[str, str]:
    return rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]


def new_replicaset(deploy: Obj, pod_hash: str, revision: int, replicas: int) -> Obj:
    """The ReplicaSet for the deployment's current template (not yet stored)."""
    spec = deploy["spec"]
    template = copy.deepcopy(spec.get("template", {}))
    template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH_LABEL] = pod_hash
    selector = copy.deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[TEMPLATE_HASH_LABEL] = pod_hash
    surge, _ = fenceposts(deploy)
    want = spec.get("replicas", 1)
    meta = {"name": f"{deploy['metadata']['name']}-{pod_hash}",
            "namespace": deploy["metadata"].get("namespace", "default"),
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {DESIRED_REPLICAS: str(want), MAX_REPLICAS: str(want + surge),
                            REVISION: str(revision)},
            "ownerReferences": [controller_reference(deploy)]}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": {"replicas": replicas, "selector": selector, "template": template},
            "status": {"replicas": 0}}


@dataclass
class DeploymentPlan:
    """ReplicaSets to create, rescale and prune, and the Deployment's new status."""

    create: Obj | None = None
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    deployment: Obj | None = None  # None: status and annotations unchanged


def _scale_new(counts: dict[str, int], new: str, replicas: int, surge: int) -> bool:
    """reconcileNewReplicaSet: True if the new set was resized."""
    current = counts[new]
    if current == replicas:
        return False
    if current > replicas:
        counts[new] = replicas
        return True
    room = replicas + surge - sum(counts.values())
    if room <= 0:
        return False
    counts[new] = current + min(room, replicas - current)
    return True


def _scale_old(counts: dict[str, int], olds: list[str], new: str, available: Mapping[str, int],
               replicas: int, unavailable: int) -> None:
    """reconcileOldReplicaSets: drop unhealthy old pods, then old pods availability allows."""
    if not any(counts[o] for o in olds):
        return
    min_available = replicas - unavailable
    new_unavailable = counts[new] - available.get(new, 0)
    budget = sum(counts.values()) - min_available - new_unavailable
    if budget <= 0:
        return
    for name in olds:
        unhealthy = counts[name] - available.get(name, 0)
        if budget <= 0 or unhealthy <= 0:
            continue
        cut = min(budget, unhealthy)
        counts[name] -= cut
        budget -= cut
    spare = sum(available.values()) - min_available
    for name in olds:
        if spare <= 0:
            break
        cut = min(counts[name], spare)
        counts[name] -= cut
        spare -= cut


def deployment_status(deploy: Obj, replicasets: Iterable[Obj], new: Obj | None,
                      created: bool) -> Obj:
    """DeploymentStatus summed over the ReplicaSets (their planned spec, current status)."""
    replicasets = list(replicasets)
    want = deploy["spec"].get("replicas", 1)

    def total(key: str) -> int:
        return sum(rs.get("status", {}).get(key, 0) for rs in replicasets)

    available = total("availableReplicas")
    spec_total = sum(rs["spec"].get("replicas", 0) for rs in replicasets)
    old_status = deploy.get("status") or {}
    counts = {"observedGeneration": deploy["metadata"].get("generation", 1),
              "replicas": total("replicas"),
              "updatedReplicas": (new or {}).get("status", {}).get("replicas", 0),
              "readyReplicas": total("readyReplicas"),
              "availableReplicas": available,
              "unavailableReplicas": max(spec_total - available, 0),
              "collisionCount": old_status.get("collisionCount", 0)}
    status: Obj = {k: v for k, v in counts.items() if v or k == "observedGeneration"}
    status["conditions"] = [c for c in old_status.get("conditions") or []
                            if c.get("type") in ("Available", "Progressing")]
    if available >= want - max_unavailable(deploy):
        set_condition(status, {"type": "Available", "status": "True",
                               "reason": "MinimumReplicasAvailable",
                               "message": "Deployment has minimum availability."},
                      update_time=True)
    else:
        set_condition(status, {"type": "Available", "status": "False",
                               "reason": "MinimumReplicasUnavailable",
                               "message": "Deployment does not have minimum availability."},
                      update_time=True)
    name = new["metadata"]["name"] if new else None
    if created:
        reason, message = "NewReplicaSetCreated", f'Created new replica set "{name}"'
    elif new is not None and status.get("updatedReplicas", 0) == want == status.get(
            "replicas", 0) == available:
        reason = "NewReplicaSetAvailable"
        message = f'ReplicaSet "{name}" has successfully progressed.'
    elif new is not None:
        reason, message = "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.'
    else:
        reason = "ReplicaSetUpdated"
        message = f'Deployment "{deploy["metadata"]["name"]}" is progressing.'
    set_condition(status, {"type": "Progressing", "status": "True", "reason": reason,
                           "message": message}, update_time=True)
    status["conditions"].sort(key=lambda c: c["type"])  # Available, then Progressing
    return status


def _rescaled(rs: Obj, replicas: int, deploy: Obj, revision: int | None) -> Obj:
    """The ReplicaSet with new replicas and the annotations a rescale sets."""
    want = deploy["spec"].get("replicas", 1)
    annotations = {**(rs["metadata"].get("annotations") or {}), DESIRED_REPLICAS: str(want),
                   MAX_REPLICAS: str(want + fenceposts(deploy)[0])}
    if revision is not None:
        annotations[REVISION] = str(revision)
    meta = {**rs["metadata"], "annotations": annotations}
    if replicas != rs["spec"].get("replicas"):
        meta["generation"] = meta.get("generation", 1) + 1
    return {**rs, "metadata": meta, "spec": {**rs["spec"], "replicas": replicas}}


def plan(deploy: Obj, owned: Iterable[Obj], names_taken: set[str],
         running: Mapping[str, int]) -> DeploymentPlan:
    """What to do for one Deployment.

    owned: its ReplicaSets; names_taken: every ReplicaSet name in the namespace;
    running: unfinished pods per ReplicaSet uid (Recreate waits for none).
    """
    spec = deploy["spec"]
    want = spec.get("replicas", 1)
    old_status = deploy.get("status") or {}
    pod_hash = template_hash(spec.get("template", {}), old_status.get("collisionCount"))
    owned = sorted(owned, key=_created)
    new = next((rs for rs in owned if labels_of(rs).get(TEMPLATE_HASH_LABEL) == pod_hash), None)
    olds = [rs for rs in owned if rs is not new]
    top_revision = max((revision_of(rs) for rs in olds), default=0)
    result = DeploymentPlan()
    counts = {rs["metadata"]["name"]: rs["spec"].get("replicas", 0) for rs in owned}
    old_names = [rs["metadata"]["name"] for rs in olds]
    old_running = any(running.get(rs["metadata"]["uid"], 0) for rs in olds)
    surge, _ = fenceposts(deploy)

    if new is None:
        name = f"{deploy['metadata']['name']}-{pod_hash}"
        if name in names_taken:  # hash collision with a set we do not own: rehash
            status = {**old_status, "collisionCount": old_status.get("collisionCount", 0) + 1}
            result.deployment = {**deploy, "status": status}
            return result
        if not is_recreate(deploy) or not (any(counts.values()) or old_running):
            new = result.create = new_replicaset(deploy, pod_hash, top_revision + 1, 0)
            counts[name] = 0

    if is_recreate(deploy):
        if any(counts[o] for o in old_names):
            counts.update(dict.fromkeys(old_names, 0))
        elif new is not None and not old_running:
            counts[new["metadata"]["name"]] = want
    elif new is not None:
        available = {rs["metadata"]["name"]: rs.get("status", {}).get("availableReplicas", 0)
                     for rs in owned}
        if not _scale_new(counts, new["metadata"]["name"], want, surge):
            _scale_old(counts, old_names, new["metadata"]["name"], available, want,
                       max_unavailable(deploy))

    if result.create is not None:
        result.create["spec"]["replicas"] = counts[result.create["metadata"]["name"]]
    planned: list[Obj] = []
    for rs in owned:
        name = rs["metadata"]["name"]
        revision = top_revision + 1 if rs is new and revision_of(rs) <= top_revision else None
        if counts[name] != rs["spec"].get("replicas", 0) or revision is not None:
            rs = _rescaled(rs, counts[name], deploy, revision)
            result.update.append(rs)
        planned.append(rs)
    planned_new = result.create
    if new is not None and result.create is None:
        planned_new = next(rs for rs in planned
                           if rs["metadata"]["name"] == new["metadata"]["name"])
    if result.create is not None:
        planned.append(result.create)

    limit = spec.get("revisionHistoryLimit", DEFAULT_HISTORY_LIMIT)
    idle = sorted((rs for rs in planned if rs is not planned_new
                   and rs["spec"].get("replicas", 0) == 0
                   and not rs.get("status", {}).get("replicas")), key=revision_of)
    updated_names = {rs["metadata"]["name"] for rs in result.update}
    result.delete = [rs for rs in idle[:max(len(idle) - limit, 0)]
                     if rs["metadata"]["name"] not in updated_names]

    status = deployment_status(deploy, planned, planned_new, result.create is not None)
    annotations = dict(deploy["metadata"].get("annotations") or {})
    if planned_new is not None and revision_of(planned_new):
        annotations[REVISION] = str(revision_of(planned_new))
    if status != old_status or annotations != (deploy["metadata"].get("annotations") or {}):
        result.deployment = {**deploy, "metadata": {**deploy["metadata"],
                                                    "annotations": annotations},
                             "status": status}
    return result


def sync(writer: Writer, view: View) -> None:
    taken: dict[str, set[str]] = {}
    for namespace, name in view.replicasets:
        taken.setdefault(namespace, set()).add(name)
    for (namespace, name), deploy in sorted(view.deployments.items()):
        owned = view.replicasets_by_owner.get(deploy["metadata"]["uid"], [])
        running = {rs["metadata"]["uid"]: len(view.pods_by_owner.get(rs["metadata"]["uid"], []))
                   for rs in owned}
        result = plan(deploy, owned, taken.get(namespace, set()), running)
        updates = [*result.update, *([result.deployment] if result.deployment else [])]
        if not writer.commit(f"deployment {namespace}/{name}",
                             create=[result.create] if result.create else [], update=updates,
                             delete=result.delete):
            continue
        if result.create:
            log.info("deployment %s/%s: created replicaset %s (%d replicas)", namespace, name,
                     result.create["metadata"]["name"], result.create["spec"]["replicas"])
        for rs in result.update:
            log.info("deployment %s/%s: scaled replicaset %s to %d", namespace, name,
                     rs["metadata"]["name"], rs["spec"]["replicas"])
        for rs in result.delete:
            log.info("deployment %s/%s: pruned old replicaset %s", namespace, name,
                     rs["metadata"]["name"])
