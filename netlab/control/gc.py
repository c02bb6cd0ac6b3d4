"""Garbage collection: what outlived its owner or its node goes, as in Kubernetes.

Following ownerReferences (background propagation): a ReplicaSet whose Deployment
is gone is deleted, then, on a later pass, the pods of a ReplicaSet that is gone are
deleted gracefully (their agents tear them down). Before deleting, the owner is
looked up in the store itself, as the real garbage collector does, so a view that
does not yet show a new owner deletes nothing.

Pod GC (kube-controller-manager's podgc): pods bound to a Node that no longer
exists are removed after a 40 s quarantine, since no agent will ever finish them;
terminating ones at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from netlab.control.meta import Obj, controller_of, ns_name
from netlab.control.pods import is_terminating, marked_for_deletion, node_of
from netlab.control.view import View, Writer
from netlab.store.objects import Objects

log = logging.getLogger(__name__)

ORPHAN_NODE_QUARANTINE = 40.0


def owner_alive(objects: Objects, obj: Obj) -> bool:
    """Does the controller owner named in obj's ownerReferences exist (same uid)?"""
    ref = controller_of(obj)
    if ref is None:
        return True
    namespace, _ = ns_name(obj)
    owner = objects.get(ref["kind"], namespace, ref["name"])
    return owner is not None and owner["metadata"].get("uid") == ref.get("uid")


def orphans(view: View) -> tuple[list[Obj], list[Obj]]:
    """ReplicaSets and pods whose controller owner is not in the view."""
    deployments = {d["metadata"]["uid"] for d in view.deployments.values()}
    replicasets = {rs["metadata"]["uid"] for rs in view.replicasets.values()}
    lost_rs = [rs for rs in view.replicasets.values()
               if (ref := controller_of(rs)) and ref.get("kind") == "Deployment"
               and ref.get("uid") not in deployments]
    lost_pods = [p for p in view.pods.values()
                 if (ref := controller_of(p)) and ref.get("kind") == "ReplicaSet"
                 and ref.get("uid") not in replicasets and not is_terminating(p)]
    return lost_rs, lost_pods


class GarbageCollector:
    """Owner-based cleanup plus podgc; remembers since when each missing node is missing."""

    def __init__(self, objects: Objects, clock: Callable[[], float] = time.monotonic) -> None:
        self.objects = objects
        self.clock = clock
        self.missing_since: dict[str, float] = {}

    def sync(self, writer: Writer, view: View) -> None:
        lost_rs, lost_pods = orphans(view)
        for rs in lost_rs:
            if not owner_alive(self.objects, rs) and writer.commit("gc", delete=[rs]):
                log.info("replicaset %s/%s: owner gone, deleted", *ns_name(rs))
        by_owner: dict[str, list[Obj]] = {}
        for pod in lost_pods:
            by_owner.setdefault(controller_of(pod)["uid"], []).append(pod)
        nodes = frozenset(view.nodes)
        for pods in by_owner.values():
            if owner_alive(self.objects, pods[0]):
                continue
            marked = [marked_for_deletion(p) for p in pods if node_of(p) in nodes]
            removed = [p for p in pods if node_of(p) not in nodes]
            if writer.commit("gc", update=marked, delete=removed):
                log.info("replicaset %s gone: deleting its %d pods",
                         controller_of(pods[0])["name"], len(pods))
        self._collect_nodeless(writer, view)

    def _collect_nodeless(self, writer: Writer, view: View) -> None:
        now = self.clock()
        stranded: dict[str, list[Obj]] = {}
        for pod in view.pods.values():
            node = node_of(pod)
            if node and node not in view.nodes:
                stranded.setdefault(node, []).append(pod)
        self.missing_since = {n: self.missing_since.get(n, now) for n in stranded}
        for node, pods in stranded.items():
            expired = now - self.missing_since[node] >= ORPHAN_NODE_QUARANTINE
            doomed = [p for p in pods if expired or is_terminating(p)]
            if doomed and self.objects.get("Node", None, node) is None and writer.commit(
                    f"podgc {node}", delete=doomed):
                log.info("node %s is gone: deleted %d of its pods", node, len(doomed))
