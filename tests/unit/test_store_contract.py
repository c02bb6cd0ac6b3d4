"""Both store backends keep etcd's list/watch contract, within and across processes.

Every test runs on the embedded sqlite store and on a throw-away etcd (skipped where
the etcd binary is missing; scripts/install puts it there). Revisions are compared
relative to the store's revision when the test starts: a fresh etcd is at 1, and
the etcd member is shared by the session, so only the differences are the contract.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from netlab.errors import ConflictError, StoreError
from netlab.store import CompactedError, Delete, Put, open_store
from netlab.store.etcd_server import LocalEtcd, etcd_binary


@pytest.fixture(scope="session")
def etcd_member():
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (scripts/install installs etcd-server)")
    with LocalEtcd() as member:
        yield member


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/store.db"
    member = request.getfixturevalue("etcd_member")
    with open_store(member.url) as s:  # each test starts from an empty keyspace
        s.commit([Delete(kv.key) for kv in s.list("")[0]])
    return member.url


def _first_events(watch, timeout: float = 5.0):
    """The first non-empty batch: etcd replays history within ~100 ms, not at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if batch := next(watch):
            return batch
    raise AssertionError("no events")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def test_each_write_bumps_one_global_revision(store):
    base = store.revision()
    r1 = store.put("/registry/pods/default/a", {"n": 1})
    r2 = store.put("/registry/pods/default/b", {"n": 2})
    assert (r1, r2) == (base + 1, base + 2)
    kv = store.get("/registry/pods/default/a")
    assert kv.value == {"n": 1} and kv.create_revision == kv.mod_revision == r1


def test_list_returns_prefix_in_key_order_with_snapshot_revision(store):
    base = store.revision()
    store.put("/registry/pods/ns1/b", {})
    store.put("/registry/pods/ns1/a", {})
    store.put("/registry/pods/ns2/c", {})
    store.put("/registry/services/specs/ns1/s", {})
    items, rev = store.list("/registry/pods/ns1/")
    assert [kv.key for kv in items] == ["/registry/pods/ns1/a", "/registry/pods/ns1/b"]
    assert rev == base + 4


def test_expect_revision_is_compare_and_swap(store):
    rev = store.put("/k", {"v": 1}, expect_revision=0)
    with pytest.raises(ConflictError):
        store.put("/k", {"v": 2}, expect_revision=0)
    store.put("/k", {"v": 2}, expect_revision=rev)
    with pytest.raises(ConflictError):
        store.put("/k", {"v": 3}, expect_revision=rev)
    assert store.get("/k").value == {"v": 2}


def test_conflict_names_the_key_and_the_revision_found(store):
    rev = store.put("/k", {"v": 1})
    with pytest.raises(ConflictError, match=rf"/k: expected revision 0, found {rev}"):
        store.commit([Put("/other", {}), Put("/k", {"v": 2}, expect_revision=0)])


def test_failed_commit_changes_nothing(store):
    rev = store.put("/a", {"v": 1})
    with pytest.raises(ConflictError):
        store.commit([Put("/b", {"v": 1}), Put("/a", {"v": 9}, expect_revision=0)])
    assert store.get("/b") is None and store.get("/a").value == {"v": 1}
    assert store.revision() == rev


def test_delete_with_expected_revision_is_compare_and_delete(store):
    rev = store.put("/k", {"v": 1})
    with pytest.raises(ConflictError):
        store.delete("/k", expect_revision=rev - 1)
    store.delete("/k", expect_revision=rev)
    assert store.get("/k") is None


def test_deleting_a_missing_key_writes_nothing(store):
    rev = store.put("/k", {})
    assert store.delete("/missing") == rev == store.revision()


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


def test_watch_on_several_prefixes_keeps_revision_order_and_skips_others(store):
    start = store.revision() + 1
    store.put("/registry/services/specs/default/s", {"n": 1})
    store.put("/registry/pods/default/p", {"n": 2})
    store.put("/registry/leases/x", {"n": 0})
    store.put("/registry/services/specs/default/s", {"n": 3})
    watch = store.watch(["/registry/pods/", "/registry/services/specs/"], start,
                        poll_timeout=0.2)
    events = []
    while len(events) < 3:
        events.extend(next(watch))
    assert [e.value["n"] for e in events] == [1, 2, 3]
    assert [e.revision for e in events] == sorted(e.revision for e in events)


def test_idle_watch_yields_empty_batches_so_loops_can_stop(store):
    watch = store.watch(["/x/"], store.revision() + 1, poll_timeout=0.05)
    assert next(watch) == []


def test_watch_before_compaction_point_raises(store):
    base = store.revision()
    for i in range(5):
        store.put("/k", {"i": i})
    store.compact(base + 4)
    with pytest.raises(CompactedError):
        next(store.watch(["/k"], base + 2))
    assert _first_events(store.watch(["/k"], base + 4, poll_timeout=0.05))[0].value == {"i": 3}


def test_compacting_an_older_revision_again_is_harmless(store):
    base = store.revision()
    for i in range(3):
        store.put("/k", {"i": i})
    store.compact(base + 3)
    store.compact(base + 2)
    with pytest.raises(CompactedError):
        next(store.watch(["/k"], base + 2))


def _writer(url: str, start: int) -> None:
    s = open_store(url)
    for i in range(start, start + 50):
        s.put(f"/proc/{i}", {"i": i})
    s.close()


def test_concurrent_processes_get_distinct_revisions(store_url):
    store = open_store(store_url)
    base = store.revision()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    items, rev = store.list("/proc/")
    assert len(items) == 150 and rev == base + 150
    assert len({kv.mod_revision for kv in items}) == 150
    store.close()


def test_watch_in_another_thread_wakes_on_write(store):
    got = threading.Event()
    start = store.revision() + 1

    def watcher():
        for batch in store.watch(["/w/"], start, poll_timeout=0.1):
            if batch:
                got.set()
                return

    t = threading.Thread(target=watcher)
    t.start()
    store.put("/w/1", {})
    t.join(5)
    assert got.is_set()


def test_store_url_names_the_backend_endpoints_and_namespace():
    store = open_store("etcd://192.168.10.2:2379,192.168.10.3:2379?netns=nl-lab-control-plane")
    assert store.gateway.endpoints == ["192.168.10.2:2379", "192.168.10.3:2379"]
    assert store.gateway.netns == "nl-lab-control-plane"
    for bad in ("etcd://", "etcd://host-without-port", "redis://x:1"):
        with pytest.raises(StoreError):
            open_store(bad)


def test_informer_skips_malformed_values_and_keeps_the_rest(tmp_path):
    """A value with no usable metadata in the store never stops a component's watch."""
    from netlab.store.informer import Informer
    from netlab.store.objects import Objects

    objects = Objects(open_store(f"sqlite://{tmp_path}/s.db"))
    objects.store.put("/registry/services/specs/default/bad", {"metadata": "nope"})
    seen: list[str] = []
    informer = Informer(objects, ["Service"],
                        lambda evs: seen.extend(e.obj["metadata"]["name"] for e in evs),
                        poll_timeout=0.05)
    thread = threading.Thread(target=informer.run, daemon=True)
    thread.start()
    assert informer.synced.wait(5)
    objects.store.put("/registry/services/specs/default/worse", {"metadata": {"name": 3}})
    objects.store.put("/registry/services/specs/default/good",
                      {"kind": "Service", "metadata": {"name": "good", "namespace": "default"}})
    deadline = time.monotonic() + 5
    while "good" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    informer.stop()
    thread.join(5)
    assert seen == ["good"]
