"""Informers through an etcd outage: resume from the last revision, relist only when needed.

After a restart of the same etcd (its data kept), a watch from the last revision seen
misses nothing, so the informer resumes without relisting: components see only what
changed. A new etcd that lost the history is behind the cache, and is relisted.
"""

from __future__ import annotations

import tempfile
import time

import pytest

from netlab.store import open_store
from netlab.store.etcd_server import LocalEtcd, etcd_binary
from netlab.store.informer import Informer
from netlab.store.objects import Objects

pytestmark = pytest.mark.skipif(etcd_binary() is None,
                                reason="etcd is not installed (scripts/install installs it)")


def _pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "netexec"}]}}


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Recorder:
    """An informer whose batches and relists are counted."""

    def __init__(self, objects: Objects) -> None:
        self.seen: list[tuple[str, str]] = []
        self.informer = Informer(objects, ["Pod"], lambda batch: self.seen.extend(
            (e.type, e.obj["metadata"]["name"]) for e in batch), poll_timeout=0.1)
        self.relists = 0
        relist = self.informer._relist

        def counted():  # type: ignore[no-untyped-def]
            self.relists += 1
            return relist()
        self.informer._relist = counted  # type: ignore[method-assign]

    def names(self) -> set[str]:
        return {name for (_, _, name) in self.informer.cache}


def test_informer_resumes_after_an_etcd_restart_without_relisting():
    with LocalEtcd() as member:
        objects = Objects(open_store(member.url))
        objects.create(_pod("before"))
        rec = Recorder(objects)
        rec.informer.start()
        try:
            assert rec.informer.synced.wait(10)
            member.kill()
            time.sleep(0.5)  # the watch breaks; the informer backs off
            member.start()
            Objects(open_store(member.url)).create(_pod("after"))
            _wait(lambda: rec.names() == {"before", "after"})
            assert rec.seen == [("ADDED", "before"), ("ADDED", "after")]
            assert rec.relists == 1
        finally:
            rec.informer.stop()


def test_informer_relists_a_new_etcd_that_lost_the_history():
    first = LocalEtcd()
    first.start()
    try:
        objects = Objects(open_store(first.url))
        for i in range(5):
            objects.create(_pod(f"old-{i}"))
        rec = Recorder(objects)
        rec.informer.start()
        assert rec.informer.synced.wait(10)
        first.remove()  # its data is gone: a new member comes up on the same address
        fresh = LocalEtcd(data_dir=tempfile.mkdtemp(prefix="netlab-etcd-"),
                          client_port=first.client_port, peer_port=first.peer_port)
        fresh.start()
        try:
            Objects(open_store(fresh.url)).create(_pod("new"))
            _wait(lambda: rec.names() == {"new"})
            assert rec.relists == 2
            assert ("DELETED", "old-0") in rec.seen and ("ADDED", "new") in rec.seen
        finally:
            rec.informer.stop()
            fresh.remove()
    finally:
        first.remove()
