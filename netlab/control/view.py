"""What one reconcile pass reads (a snapshot) and how it writes (atomic, compare-and-swap).

Controllers decide from a View and write through a Writer. Every write is guarded:
updates and deletes carry the resourceVersion they were decided on, creates need a
free name. A pass that decided on stale data therefore fails its commit instead of
acting twice (two copies of a pod, a CIDR given to two nodes); the next pass, on
fresher data, decides again. The Writer also remembers which objects it touched so
a later controller in the same pass leaves them to the next pass rather than
conflicting with a write it cannot see yet.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from netlab.api import keys
from netlab.control.meta import Obj, controller_uid, ns_name
from netlab.errors import ConflictError
from netlab.store.objects import Objects

log = logging.getLogger(__name__)

NsName = tuple[str, str]


@dataclass
class View:
    """Objects by kind: Nodes by name, namespaced kinds by (namespace, name)."""

    nodes: dict[str, Obj] = field(default_factory=dict)
    pods: dict[NsName, Obj] = field(default_factory=dict)
    deployments: dict[NsName, Obj] = field(default_factory=dict)
    replicasets: dict[NsName, Obj] = field(default_factory=dict)
    services: dict[NsName, Obj] = field(default_factory=dict)
    slices: dict[NsName, Obj] = field(default_factory=dict)
    endpoints: dict[NsName, Obj] = field(default_factory=dict)

    _FIELDS: ClassVar[dict[str, str]] = {"Node": "nodes", "Pod": "pods",
                                         "Deployment": "deployments",
                                         "ReplicaSet": "replicasets", "Service": "services",
                                         "EndpointSlice": "slices", "Endpoints": "endpoints"}
    KINDS: ClassVar[tuple[str, ...]] = tuple(_FIELDS)

    @classmethod
    def of(cls, objs: Iterable[Obj]) -> View:
        """A view holding these objects (tests build views this way)."""
        view = cls()
        for obj in objs:
            view.table(obj["kind"])[view.key(obj)] = obj
        return view

    @classmethod
    def from_tables(cls, tables: Mapping[str, Mapping]) -> View:
        """A view over copies of kind -> {key: object} tables (the manager's cache)."""
        return cls(**{cls._FIELDS[kind]: dict(table) for kind, table in tables.items()})

    def table(self, kind: str) -> dict:
        return getattr(self, self._FIELDS[kind])

    @staticmethod
    def key(obj: Obj) -> str | NsName:
        return obj["metadata"]["name"] if obj["kind"] == "Node" else ns_name(obj)

    @cached_property
    def pods_by_owner(self) -> dict[str, list[Obj]]:
        """Pods by the uid of their controller (the ReplicaSet that made them)."""
        index: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.pods.values():
            if uid := controller_uid(pod):
                index[uid].append(pod)
        return index

    @cached_property
    def replicasets_by_owner(self) -> dict[str, list[Obj]]:
        index: dict[str, list[Obj]] = defaultdict(list)
        for rs in self.replicasets.values():
            if uid := controller_uid(rs):
                index[uid].append(rs)
        return index

    @cached_property
    def pods_by_namespace(self) -> dict[str, list[Obj]]:
        index: dict[str, list[Obj]] = defaultdict(list)
        for (namespace, _), pod in self.pods.items():
            index[namespace].append(pod)
        return index

    @cached_property
    def slices_by_service(self) -> dict[NsName, list[Obj]]:
        index: dict[NsName, list[Obj]] = defaultdict(list)
        for (namespace, _), eps in self.slices.items():
            service = eps["metadata"].get("labels", {}).get("kubernetes.io/service-name")
            if service:
                index[namespace, service].append(eps)
        return index


class Writer:
    """Atomic guarded commits for one pass, remembering what was touched (see module doc)."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.touched: set[str] = set()
        self.revision = 0
        self.conflicts = 0

    def commit(self, what: str, *, create: Iterable[Obj] = (), update: Iterable[Obj] = (),
               delete: Iterable[Obj] = ()) -> bool:
        """One atomic commit; False (and nothing written) if it lost a race."""
        create, update, delete = list(create), list(update), list(delete)
        if not (create or update or delete):
            return True
        try:
            self.revision = self.objects.transact(create=create, update=update, delete=delete)
        except ConflictError as exc:
            self.conflicts += 1
            log.debug("%s: stale view, retrying next pass (%s)", what, exc)
            return False
        self.touched.update(keys.key_of(o) for o in (*create, *update, *delete))
        return True

    def was_touched(self, obj: Obj) -> bool:
        return keys.key_of(obj) in self.touched
