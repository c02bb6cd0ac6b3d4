"""The scheduler: bind each pending pod to a node, or say why none fits.

Filters, in kube-scheduler's order, with its wording (people search for these
messages): a cordoned node ("node(s) were unschedulable"), taints the pod does not
tolerate ("node(s) had untolerated taint {key: value}"), spec.nodeSelector ("node(s)
didn't match Pod's node affinity/selector"). A node that is not Ready, or has no pod
subnet yet (its network is not up), carries the node.kubernetes.io/not-ready taint
as the node lifecycle controller would put it there. The control-plane node's
NoSchedule taint thus keeps workloads off it unless they tolerate it.

Scoring spreads: fewest pods of the same owner (the replicas of one ReplicaSet end up
on different workers), then fewest pods overall, then the node name, so results are
reproducible. Everything pending is decided in one pass and bound in one commit;
a burst of 300 new pods costs one write.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from netlab.api.selectors import matches_map
from netlab.control.meta import Obj, controller_uid, ns_name, set_condition
from netlab.control.nodeipam import pod_cidr_of
from netlab.control.pods import is_terminating, node_of
from netlab.control.view import View, Writer

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
_FINISHED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Decision:
    """Where a pod goes (node), or why it cannot go anywhere (message)."""

    pod: Obj
    node: str | None
    message: str = ""


def node_ready(node: Obj) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def effective_taints(node: Obj) -> list[Obj]:
    """spec.taints, plus not-ready for a node that cannot run pods yet."""
    taints = list(node.get("spec", {}).get("taints") or [])
    if not node_ready(node) or not pod_cidr_of(node):
        taints.append(NOT_READY_TAINT)
    return taints


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator") == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def misfit(pod: Obj, node: Obj) -> str | None:
    """Why the pod cannot run on the node (kube-scheduler's words), or None if it can."""
    tolerations = pod.get("spec", {}).get("tolerations") or []
    if node.get("spec", {}).get("unschedulable") and not any(
            tolerates(t, {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"})
            for t in tolerations):
        return "node(s) were unschedulable"
    for taint in effective_taints(node):
        if taint.get("effect") in _BLOCKING_EFFECTS and not any(
                tolerates(t, taint) for t in tolerations):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    selector = pod.get("spec", {}).get("nodeSelector")
    if selector and not matches_map(selector, node.get("metadata", {}).get("labels")):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    """kube-scheduler's FitError text, preemption postscript included."""
    if total == 0:
        return "no nodes available to schedule pods"
    histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    return (f"0/{total} nodes are available: {histogram}. preemption: 0/{total} nodes are "
            f"available: {total} Preemption is not helpful for scheduling.")


def _occupies(pod: Obj) -> bool:
    return bool(node_of(pod)) and pod.get("status", {}).get("phase") not in _FINISHED


def schedule(pending: Iterable[Obj], nodes: Iterable[Obj], bound: Iterable[Obj]) -> list[Decision]:
    """Decide for every pending pod, oldest first, counting this pass's own placements."""
    nodes = sorted(nodes, key=lambda n: n["metadata"]["name"])
    per_node: Counter[str] = Counter()
    per_owner: Counter[tuple[str | None, str]] = Counter()
    for pod in bound:
        if _occupies(pod):
            per_node[node_of(pod)] += 1
            per_owner[controller_uid(pod), node_of(pod)] += 1
    decisions = []
    order = sorted(pending, key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                           p["metadata"]["name"]))
    for pod in order:
        owner = controller_uid(pod)
        reasons: Counter[str] = Counter()
        fits = []
        for node in nodes:
            reason = misfit(pod, node)
            if reason is None:
                fits.append(node["metadata"]["name"])
            else:
                reasons[reason] += 1
        if not fits:
            decisions.append(Decision(pod, None, unschedulable_message(len(nodes), reasons)))
            continue
        best = min(fits, key=lambda n: (per_owner[owner, n] if owner else 0, per_node[n], n))
        per_node[best] += 1
        per_owner[owner, best] += 1
        decisions.append(Decision(pod, best))
    return decisions


def bound_to(pod: Obj, node: str) -> Obj:
    status = dict(pod.get("status") or {})
    status["conditions"] = list(status.get("conditions") or [])
    set_condition(status, {"type": "PodScheduled", "status": "True", "lastProbeTime": None})
    status.setdefault("phase", "Pending")
    return {**pod, "spec": {**pod.get("spec", {}), "nodeName": node}, "status": status}


def marked_unschedulable(pod: Obj, message: str) -> Obj | None:
    """The pod with PodScheduled=False/Unschedulable, or None if it already says so."""
    status = dict(pod.get("status") or {})
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"),
               None)
    if old and old.get("status") == "False" and old.get("message") == message:
        return None
    status["conditions"] = list(status.get("conditions") or [])
    set_condition(status, {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                           "reason": "Unschedulable", "message": message})
    status.setdefault("phase", "Pending")
    return {**pod, "status": status}


def is_pending(pod: Obj) -> bool:
    spec = pod.get("spec", {})
    return (not node_of(pod) and not is_terminating(pod)
            and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME)


def sync(writer: Writer, view: View) -> None:
    pending = [p for p in view.pods.values() if is_pending(p) and not writer.was_touched(p)]
    if not pending:
        return
    decisions = schedule(pending, view.nodes.values(),
                         (p for p in view.pods.values() if node_of(p)))
    binds = [bound_to(d.pod, d.node) for d in decisions if d.node]
    if binds and not writer.commit(f"bind {len(binds)} pods", update=binds):
        binds = [pod for pod in binds if writer.commit("bind pod", update=[pod])]
    if binds:
        spread = Counter(node_of(p) for p in binds)
        log.info("bound %d pods (%s)", len(binds),
                 ", ".join(f"{n}: {c}" for n, c in sorted(spread.items())))
    refusals = [(d, marked_unschedulable(d.pod, d.message)) for d in decisions if not d.node]
    refusals = [(d, pod) for d, pod in refusals if pod is not None]
    if refusals and writer.commit("unschedulable pods", update=[pod for _, pod in refusals]):
        for d, _ in refusals:
            log.info("pod %s/%s unschedulable: %s", *ns_name(d.pod), d.message)
