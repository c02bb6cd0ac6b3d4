"""Pod state as controllers read it (ready, terminating, active) and how pods are deleted.

Deletion is graceful, as in Kubernetes: deleting a pod bound to a node only marks it
(metadata.deletionTimestamp); the node agent stops the pod, tears its network down
and then removes the object. Meanwhile the pod is `Terminating`: its endpoints turn
not-ready (terminating: true) so proxies drain it. A pod no agent will ever see
(unbound, or its node is gone) is removed at once. The CLI, the ReplicaSet
controller and the garbage collector all delete through here.
"""

from __future__ import annotations

from netlab.api.meta import now_rfc3339
from netlab.control.meta import Obj, condition
from netlab.errors import ConflictError
from netlab.store.objects import Objects

DEFAULT_GRACE_SECONDS = 30
_ATTEMPTS = 10
_FINISHED = ("Succeeded", "Failed")


def is_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def is_terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Counts toward a ReplicaSet's replicas: not terminating and not finished."""
    return not is_terminating(pod) and pod.get("status", {}).get("phase") not in _FINISHED


def node_of(pod: Obj) -> str:
    return pod.get("spec", {}).get("nodeName") or ""


def marked_for_deletion(pod: Obj) -> Obj:
    """The pod with deletionTimestamp set (a copy; a pod already marked comes back as is)."""
    if is_terminating(pod):
        return pod
    grace = pod.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    meta = {**pod["metadata"], "deletionTimestamp": now_rfc3339(),
            "deletionGracePeriodSeconds": grace}
    return {**pod, "metadata": meta}


def needs_agent(pod: Obj, node_names: set[str] | frozenset[str]) -> bool:
    """Whether a node agent owns this pod's teardown (bound to an existing node)."""
    return node_of(pod) in node_names


def request_pod_deletion(objects: Objects, namespace: str, name: str, *,
                         force: bool = False) -> bool:
    """Delete a pod the way the API server does; False if there was no such pod.

    A pod bound to an existing node is marked (graceful deletion, see module doc);
    otherwise, or with force (`kubectl delete --force --grace-period=0`), the object
    goes at once. Both are compare-and-swap on what was read, so a pod that gets
    bound meanwhile is not yanked from under its agent.
    """
    for _ in range(_ATTEMPTS):
        pod = objects.get("Pod", namespace, name)
        if pod is None:
            return False
        node = node_of(pod)
        graceful = not force and node and objects.get("Node", None, node) is not None
        if graceful and is_terminating(pod):
            return True
        try:
            if graceful:
                objects.transact(update=[marked_for_deletion(pod)])
            else:
                objects.transact(delete=[pod])
        except ConflictError:
            continue
        return True
    raise ConflictError(f"pod {namespace}/{name}: too many concurrent updates")
