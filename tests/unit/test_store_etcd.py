"""The etcd backend through an outage: errors instead of hangs, reconnects, resyncs.

Each test runs its own throw-away etcd on loopback (it kills it), so the members of
other tests are never disturbed.
"""

from __future__ import annotations

import time

import pytest

from netlab.errors import StoreError
from netlab.store import open_store
from netlab.store.etcd_server import LocalEtcd, etcd_binary
from netlab.store.informer import Informer
from netlab.store.objects import Objects

pytestmark = pytest.mark.skipif(etcd_binary() is None,
                                reason="etcd is not installed (scripts/install installs it)")


@pytest.fixture
def member():
    with LocalEtcd() as m:
        yield m


def _pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "netexec"}]}}


def _wait(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_calls_fail_fast_with_store_error_while_etcd_is_down(member):
    store = open_store(member.url)
    store.put("/k", {})
    member.kill()
    started = time.monotonic()
    with pytest.raises(StoreError, match="unreachable"):
        store.get("/k")
    assert time.monotonic() - started < 1.0
    store.close()


def test_client_reconnects_when_etcd_comes_back_with_its_data(member):
    store = open_store(member.url)
    rev = store.put("/k", {"v": 1})
    member.kill()
    member.start()
    assert store.get("/k").mod_revision == rev
    store.close()


def test_running_watch_raises_store_error_when_etcd_dies(member):
    store = open_store(member.url)
    watch = store.watch(["/w/"], store.revision() + 1, poll_timeout=0.1)
    assert next(watch) == []
    member.kill()
    with pytest.raises(StoreError):
        for _ in range(50):
            next(watch)
    store.close()


def test_watch_resumes_from_the_next_revision_after_a_restart(member):
    store = open_store(member.url)
    seen = store.put("/w/a", {"v": 1})
    member.kill()
    member.start()
    store.put("/w/b", {"v": 2})
    watch = store.watch(["/w/"], seen + 1, poll_timeout=0.1)
    events = []
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        events = next(watch)
    assert [(e.key, e.value) for e in events] == [("/w/b", {"v": 2})]
    store.close()


def test_informer_resyncs_after_an_outage_and_sees_what_changed_meanwhile(member):
    objects = Objects(open_store(member.url))
    objects.create(_pod("before"))
    seen: list[tuple[str, str]] = []
    informer = Informer(objects, ["Pod"], lambda batch: seen.extend(
        (e.type, e.obj["metadata"]["name"]) for e in batch), poll_timeout=0.1)
    informer.start()
    try:
        assert informer.synced.wait(10)
        member.kill()
        time.sleep(0.5)  # the informer's watch breaks; it backs off and retries
        member.start()
        writer = Objects(open_store(member.url))
        writer.create(_pod("during"))
        writer.delete("Pod", "default", "before")
        _wait(lambda: {n for (_, _, n) in informer.cache} == {"during"})
        assert ("ADDED", "during") in seen and ("DELETED", "before") in seen
    finally:
        informer.stop()
