"""The object store: etcd-like list/watch with revisions (sqlite embedded, etcd later)."""

from __future__ import annotations

from netlab.errors import StoreError
from netlab.store.base import CompactedError, Delete, Event, KeyValue, Put, Store

__all__ = ["CompactedError", "Delete", "Event", "KeyValue", "Put", "Store", "open_store"]


def open_store(url: str) -> Store:
    """Open a store by URL: `sqlite:///abs/path.db` (or a plain path)."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
    elif "://" in url:
        raise StoreError(f"unsupported store URL {url!r}: use sqlite:///path")
    else:
        path = url
    from netlab.store.sqlite import SqliteStore

    return SqliteStore(path)
