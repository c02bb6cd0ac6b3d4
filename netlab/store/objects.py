"""Kubernetes objects over the store: the small part of the API server the lab needs.

Objects stay Kubernetes-shaped dicts. The client fills what the API server fills
(uid, creationTimestamp, resourceVersion from the store revision), does optimistic
concurrency on resourceVersion, and turns store events into ADDED/MODIFIED/DELETED
watch events, so the control plane and agents read like Kubernetes controllers.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from netlab.api import keys
from netlab.api.meta import now_rfc3339
from netlab.errors import ConflictError
from netlab.store.base import Delete, KeyValue, Member, Put, Store

WatchType = Literal["ADDED", "MODIFIED", "DELETED"]
Obj = dict[str, Any]


@dataclass(frozen=True)
class ObjectEvent:
    type: WatchType
    kind: str
    obj: Obj
    revision: int


@dataclass(frozen=True)
class FieldSelector:
    """`path=value` over an object's fields, as kubelet lists and watches its own pods
    (`spec.nodeName=NODE`) instead of every pod of the cluster."""

    path: str  # dotted, e.g. "spec.nodeName"
    value: str

    def matches(self, obj: Obj) -> bool:
        current: Any = obj
        for part in self.path.split("."):
            if not isinstance(current, dict):
                return False
            current = current.get(part)
        return current == self.value

    @property
    def member(self) -> Member:
        """What the store is told: the last field and its value (a hint, see Store.list)."""
        return self.path.rsplit(".", 1)[-1], self.value


class NotFoundError(ConflictError):
    """The object does not exist (the API server's 404)."""


class AlreadyExistsError(ConflictError):
    """An object with that name exists (the API server's 409 AlreadyExists)."""


def _stamp(obj: Any, revision: int) -> Any:
    """Set metadata.resourceVersion where the value has the shape for it (bad values pass)."""
    if isinstance(obj, dict) and isinstance(obj.setdefault("metadata", {}), dict):
        obj["metadata"]["resourceVersion"] = str(revision)
    return obj


def _with_version(kv: KeyValue) -> Obj:
    return _stamp(kv.value, kv.mod_revision)


def _stored(obj: Obj) -> Obj:
    """The value written: resourceVersion is derived from the revision, never stored.

    A shallow copy without it is enough: a store serialises the value while it commits
    and keeps no reference to it. (Deep copies here were a tenth of the control plane's
    CPU while it wrote the status of a few hundred pods.)
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "resourceVersion" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}


def _version_of(obj: Obj) -> int | None:
    version = obj.get("metadata", {}).get("resourceVersion")
    return int(version) if version else None


class Objects:
    """get/list/create/update/delete/watch of Kubernetes objects in a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        kv = self.store.get(keys.key_for(kind, namespace, name))
        return None if kv is None else _with_version(kv)

    def list(self, kind: str, namespace: str | None = None, *,
             fields: FieldSelector | None = None) -> tuple[list[Obj], int]:
        items, rev = self.store.list(keys.prefix_for(kind, namespace),
                                     member=fields.member if fields else None)
        return [_with_version(kv) for kv in items
                if fields is None or fields.matches(kv.value)], rev

    def create(self, obj: Obj) -> Obj:
        return self.create_many([obj])[0]

    def create_many(self, objs: Sequence[Obj]) -> list[Obj]:
        """Create every object in one atomic commit (all or none)."""
        prepared = [self._prepare_new(obj) for obj in objs]
        try:
            self.store.commit([Put(keys.key_of(o), _stored(o), expect_revision=0)
                               for o in prepared])
        except ConflictError as exc:
            raise AlreadyExistsError(f"already exists: {exc}") from exc
        return prepared

    @staticmethod
    def _prepare_new(obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        info = keys.kind_info(obj["kind"])
        if info.namespaced:
            meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        meta.setdefault("generation", 1)
        return obj

    def update(self, obj: Obj) -> Obj:
        """Replace the object; if it carries a resourceVersion, only if that is current."""
        key = keys.key_of(obj)
        version = obj.get("metadata", {}).get("resourceVersion")
        expect = int(version) if version else None
        if expect is None and self.store.get(key) is None:
            raise NotFoundError(f"{obj['kind']} {obj['metadata']['name']} not found")
        rev = self.store.put(key, _stored(obj), expect_revision=expect)
        out = copy.deepcopy(obj)
        out["metadata"]["resourceVersion"] = str(rev)
        return out

    def mutate(self, kind: str, namespace: str | None, name: str,
               change: Callable[[Obj], Obj | None], *, attempts: int = 10) -> Obj | None:
        """Read-modify-write with retry on conflict; change returns None to skip writing.

        Returns the written object, or None if the object is gone or change declined.
        """
        for _ in range(attempts):
            current = self.get(kind, namespace, name)
            if current is None:
                return None
            updated = change(copy.deepcopy(current))
            if updated is None:
                return None
            try:
                return self.update(updated)
            except ConflictError:
                continue
        raise ConflictError(f"{kind} {namespace}/{name}: too many concurrent updates")

    def update_all(self, changes: Sequence[tuple[Obj, Callable[[Obj], Obj | None]]]) -> None:
        """Write objects already changed, each paired with the change that made it, in
        one CAS commit; if another writer got to one of them first, apply each change
        again to its current object, one by one (`mutate`).

        For status written in bursts (a node's pods at bring-up): one commit keeps the
        store and every watcher from seeing hundreds of single-object writes.
        """
        if not changes:
            return
        try:
            self.transact(update=[obj for obj, _ in changes])
        except ConflictError:
            for obj, change in changes:
                meta = obj["metadata"]
                self.mutate(obj["kind"], meta.get("namespace"), meta["name"], change)

    def write_many(self, objs: Iterable[Obj]) -> int:
        """Unconditional batch write (controllers publishing status for many objects)."""
        return self.store.commit([Put(keys.key_of(o), _stored(o)) for o in objs])

    def transact(self, *, create: Sequence[Obj] = (), update: Sequence[Obj] = (),
                 delete: Sequence[Obj] = ()) -> int:
        """Create, replace and delete objects in one atomic commit; returns its revision.

        Updates and deletes of objects that carry a resourceVersion apply only if it is
        still current, and creates only if the name is free, so a controller that acted
        on a stale view fails as a whole (ConflictError) instead of acting twice.
        """
        ops: list[Put | Delete] = [
            Put(keys.key_of(o), _stored(o), expect_revision=0)
            for o in map(self._prepare_new, create)]
        ops += [Put(keys.key_of(o), _stored(o), expect_revision=_version_of(o)) for o in update]
        ops += [Delete(keys.key_of(o), expect_revision=_version_of(o)) for o in delete]
        return self.store.commit(ops)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        key = keys.key_for(kind, namespace, name)
        if self.store.get(key) is None:
            return False
        self.store.commit([Delete(key)])
        return True

    def delete_many(self, refs: Iterable[tuple[str, str | None, str]]) -> int:
        return self.store.commit([Delete(keys.key_for(*ref)) for ref in refs])

    def watch(self, kinds: Sequence[str], start_revision: int, *, poll_timeout: float = 1.0,
              fields: FieldSelector | None = None) -> Iterator[list[ObjectEvent]]:
        """Batches of watch events for the kinds (empty batches when idle).

        With `fields`, events of objects that neither match nor matched before may be
        left out; the rest come as they are (the informer turns them into what a
        selected watch reports).
        """
        prefixes = [keys.prefix_for(k) for k in kinds]
        for batch in self.store.watch(prefixes, start_revision, poll_timeout=poll_timeout,
                                      member=fields.member if fields else None):
            events = []
            for ev in batch:
                info = keys.kind_of_key(ev.key)
                if info is None:
                    continue
                if ev.type == "DELETE":
                    obj = _stamp(ev.prev_value or {}, ev.revision)
                    events.append(ObjectEvent("DELETED", info.kind, obj, ev.revision))
                else:
                    obj = _stamp(ev.value or {}, ev.revision)
                    kind = "ADDED" if ev.prev_json is None else "MODIFIED"
                    events.append(ObjectEvent(kind, info.kind, obj, ev.revision))
            yield events
