"""The embedded store keeps etcd's list/watch contract, within and across processes."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from netlab.errors import ConflictError
from netlab.store import CompactedError, Delete, Put, open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite://{tmp_path}/store.db")
    yield s
    s.close()


def test_each_write_bumps_one_global_revision(store):
    r1 = store.put("/registry/pods/default/a", {"n": 1})
    r2 = store.put("/registry/pods/default/b", {"n": 2})
    assert (r1, r2) == (1, 2)
    kv = store.get("/registry/pods/default/a")
    assert kv.value == {"n": 1} and kv.create_revision == kv.mod_revision == 1


def test_list_returns_prefix_in_key_order_with_snapshot_revision(store):
    store.put("/registry/pods/ns1/b", {})
    store.put("/registry/pods/ns1/a", {})
    store.put("/registry/pods/ns2/c", {})
    store.put("/registry/services/specs/ns1/s", {})
    items, rev = store.list("/registry/pods/ns1/")
    assert [kv.key for kv in items] == ["/registry/pods/ns1/a", "/registry/pods/ns1/b"]
    assert rev == 4


def test_expect_revision_is_compare_and_swap(store):
    rev = store.put("/k", {"v": 1}, expect_revision=0)
    with pytest.raises(ConflictError):
        store.put("/k", {"v": 2}, expect_revision=0)
    store.put("/k", {"v": 2}, expect_revision=rev)
    with pytest.raises(ConflictError):
        store.put("/k", {"v": 3}, expect_revision=rev)
    assert store.get("/k").value == {"v": 2}


def test_failed_commit_changes_nothing(store):
    store.put("/a", {"v": 1})
    with pytest.raises(ConflictError):
        store.commit([Put("/b", {"v": 1}), Put("/a", {"v": 9}, expect_revision=0)])
    assert store.get("/b") is None and store.get("/a").value == {"v": 1}
    assert store.revision() == 1


def test_watch_from_list_revision_sees_every_later_change_once(store):
    store.put("/registry/pods/default/a", {"v": 1})
    _, rev = store.list("/registry/pods/")
    watch = store.watch(["/registry/pods/"], rev + 1, poll_timeout=0.2)
    store.put("/registry/pods/default/a", {"v": 2})
    store.put("/registry/other", {"v": 0})
    store.commit([Delete("/registry/pods/default/a")])
    events = []
    while len(events) < 2:
        events.extend(next(watch))
    assert [(e.type, e.value, e.prev_value) for e in events] == [
        ("PUT", {"v": 2}, {"v": 1}), ("DELETE", None, {"v": 2})]


def test_idle_watch_yields_empty_batches_so_loops_can_stop(store):
    watch = store.watch(["/x/"], 1, poll_timeout=0.05)
    assert next(watch) == []


def test_watch_before_compaction_point_raises(store):
    for i in range(5):
        store.put("/k", {"i": i})
    store.compact(4)
    with pytest.raises(CompactedError):
        next(store.watch(["/k"], 2))
    assert next(store.watch(["/k"], 4, poll_timeout=0.05))[0].value == {"i": 3}


def _writer(url: str, start: int) -> None:
    s = open_store(url)
    for i in range(start, start + 50):
        s.put(f"/proc/{i}", {"i": i})
    s.close()


def test_concurrent_processes_get_distinct_revisions(tmp_path):
    url = f"sqlite://{tmp_path}/s.db"
    store = open_store(url)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    items, rev = store.list("/proc/")
    assert len(items) == 150 and rev == 150
    assert len({kv.mod_revision for kv in items}) == 150
    store.close()


def test_watch_in_another_thread_wakes_on_write(store):
    got = threading.Event()

    def watcher():
        for batch in store.watch(["/w/"], 1, poll_timeout=0.1):
            if batch:
                got.set()
                return

    t = threading.Thread(target=watcher)
    t.start()
    store.put("/w/1", {})
    t.join(5)
    assert got.is_set()
