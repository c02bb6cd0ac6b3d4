"""The object store: etcd-like list/watch with revisions (sqlite embedded, or etcd)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from netlab.errors import StoreError
from netlab.store.base import CompactedError, Delete, Event, KeyValue, Put, Store

__all__ = ["CompactedError", "Delete", "Event", "KeyValue", "Put", "Store", "etcd_url",
           "open_store"]


def etcd_url(endpoints: list[str], netns: str | None = None) -> str:
    """The store URL of an etcd cluster ("host:port" endpoints), reached from netns if given."""
    return f"etcd://{','.join(endpoints)}" + (f"?netns={netns}" if netns else "")


def open_store(url: str) -> Store:
    """Open a store by URL.

    `sqlite:///abs/path.db` (or a plain path): the embedded store.
    `etcd://host:2379[,host2:2379][?netns=NAME]`: an etcd cluster; with netns, the
    client's sockets are made in that network namespace (for callers outside the
    network the members listen on, such as the CLI of a lab whose etcd runs inside
    its control-plane node).
    """
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
    elif url.startswith("etcd://"):
        parts = urlsplit(url)
        endpoints = [e for e in parts.netloc.split(",") if e]
        if not endpoints or any(":" not in e for e in endpoints):
            raise StoreError(f"store URL {url!r}: give etcd endpoints as host:port[,host:port]")
        netns = parse_qs(parts.query).get("netns", [None])[0]
        from netlab.store.etcd import EtcdStore

        return EtcdStore(endpoints, netns=netns)
    elif "://" in url:
        raise StoreError(f"unsupported store URL {url!r}: use sqlite:///path or "
                         "etcd://host:port")
    else:
        path = url
    from netlab.store.sqlite import SqliteStore

    return SqliteStore(path)
