"""List-then-watch loops with a local cache, like client-go's informers.

A component says which kinds it cares about and gets a cache plus a callback per
batch of changes. After a compaction, or a store outage, the informer relists and
reports the difference, so the callback sees a consistent stream either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from netlab.errors import StoreError
from netlab.store.base import CompactedError
from netlab.store.objects import FieldSelector, Obj, ObjectEvent, Objects

log = logging.getLogger(__name__)

CacheKey = tuple[str, str | None, str]  # kind, namespace, name


def well_formed(obj: object) -> bool:
    """Enough shape to cache an object; anything else in the store is skipped, not fatal."""
    return (isinstance(obj, dict) and isinstance(obj.get("metadata"), dict)
            and isinstance(obj["metadata"].get("name"), str))


def cache_key(kind: str, obj: Obj) -> CacheKey:
    meta = obj.get("metadata", {})
    return kind, meta.get("namespace"), meta.get("name", "")


class Informer:
    """Keeps `cache` in step with the store for some kinds and reports each batch.

    With `fields`, only the objects that match are cached and reported, as a watch
    with a field selector reports them: ADDED when an object starts matching,
    DELETED when it stops.
    """

    def __init__(self, objects: Objects, kinds: Sequence[str],
                 on_batch: Callable[[list[ObjectEvent]], None], *,
                 poll_timeout: float = 0.5, fields: FieldSelector | None = None) -> None:
        self.objects = objects
        self.kinds = list(kinds)
        self.on_batch = on_batch
        self.poll_timeout = poll_timeout
        self.fields = fields
        self.cache: dict[CacheKey, Obj] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.listed_at: dict[str, int] = {}  # kind -> revision of its last list
        self.stopping = threading.Event()
        self.revision = 0

    def _relist(self) -> list[ObjectEvent]:
        """Full list; events that turn the old cache into the new one.

        Each kind is one list, each at its own revision (writes land in between, the
        more so on etcd, one request per list). The watch then starts after the
        oldest of them, and `_apply` drops what a kind's list already showed: starting
        after the newest would lose the changes to the kinds listed before it.
        """
        fresh: dict[CacheKey, Obj] = {}
        listed_at: dict[str, int] = {}
        for kind in self.kinds:
            items, listed_at[kind] = (self.objects.list(kind) if self.fields is None
                                      else self.objects.list(kind, fields=self.fields))
            for obj in items:
                if well_formed(obj):
                    fresh[cache_key(kind, obj)] = obj
                else:
                    log.warning("skipping a malformed %s in the store", kind)
        events = []
        revision = max(listed_at.values(), default=0)
        for key, obj in fresh.items():
            old = self.cache.get(key)
            if old is None:
                events.append(ObjectEvent("ADDED", key[0], obj, revision))
            elif old.get("metadata", {}).get("resourceVersion") != \
                    obj["metadata"].get("resourceVersion"):
                events.append(ObjectEvent("MODIFIED", key[0], obj, revision))
        for key, obj in self.cache.items():
            if key not in fresh:
                events.append(ObjectEvent("DELETED", key[0], obj, revision))
        with self._lock:
            self.cache = fresh
        self.revision = min(listed_at.values(), default=0)
        self.listed_at = listed_at
        return events

    def _apply(self, events: list[ObjectEvent]) -> list[ObjectEvent]:
        """Update the cache; returns the events that were applied (malformed ones dropped)."""
        applied = []
        for ev in events:
            if ev.revision <= self.listed_at.get(ev.kind, 0):
                continue  # that kind's list already had it
            if not well_formed(ev.obj):
                log.warning("skipping a malformed %s in the store", ev.kind)
                continue
            key = cache_key(ev.kind, ev.obj)
            if self.fields is not None:
                selected = self._selected(ev, key)
                if selected is None:
                    continue
                ev = selected
            applied.append(ev)
            with self._lock:
                if ev.type == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = ev.obj
            self.revision = max(self.revision, ev.revision)
        return applied

    def _selected(self, ev: ObjectEvent, key: CacheKey) -> ObjectEvent | None:
        """The event as a watch with the field selector reports it, or None."""
        assert self.fields is not None
        cached = self.cache.get(key)
        if ev.type == "DELETED":
            return ev if cached is not None else None
        if self.fields.matches(ev.obj):
            return ev if cached is not None else ObjectEvent("ADDED", ev.kind, ev.obj,
                                                             ev.revision)
        if cached is not None:  # it stopped matching: gone from this watch
            return ObjectEvent("DELETED", ev.kind, cached, ev.revision)
        return None

    def _store_lost_history(self) -> bool:
        """Whether the store is behind what this cache saw: a new etcd, not a restarted one."""
        return self.objects.store.revision() < self.revision

    def run(self) -> None:
        """Loop until stop(); survives store errors by backing off and resuming.

        After an outage the watch resumes from the last revision seen, as client-go's
        reflector does, so nothing is relisted and no callback sees a burst of
        unchanged objects; a compacted revision, or a store that lost its history,
        means a relist.
        """
        backoff = 0.2
        listed = False
        while not self.stopping.is_set():
            try:
                if not listed or self._store_lost_history():
                    self.on_batch(self._relist())
                    listed = True
                    self.synced.set()
                for batch in self.objects.watch(self.kinds, self.revision + 1,
                                                poll_timeout=self.poll_timeout,
                                                fields=self.fields):
                    if self.stopping.is_set():
                        return
                    if batch:
                        applied = self._apply(batch)
                        if applied:
                            self.on_batch(applied)
                    backoff = 0.2
            except CompactedError:
                log.info("watch compacted; relisting")
                listed = False
            except StoreError as exc:
                log.warning("store unavailable (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"informer-{'-'.join(self.kinds)}",
                                  daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stopping.set()

    def items(self, kind: str) -> list[Obj]:
        """The cached objects of a kind; safe from any thread (the cache is swapped, and
        mutated only under the lock)."""
        with self._lock:
            return [obj for (k, _, _), obj in self.cache.items() if k == kind]
