"""An informer of several kinds loses no change made between its per-kind lists.

Each kind is listed in its own request, so a write can land between the Pod list and
the Deployment list; on etcd, under a lab's bring-up, it often does. A watch started
after the newest list would never see that write (a pod that became Ready stayed
un-Ready in the cache for good, and `up` waited for it until its timeout).
"""

from __future__ import annotations

import time

from netlab.store import open_store
from netlab.store.informer import Informer
from netlab.store.objects import Objects


def _pod(ready: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"ready": ready}},
            "spec": {"containers": [{"name": "c", "image": "netexec"}]}}


class WriteBetweenLists(Objects):
    """Objects where someone else writes right after the first Pod list."""

    writes_pending = 1

    def list(self, kind, namespace=None):  # type: ignore[no-untyped-def, override]
        answer = super().list(kind, namespace)
        if kind == "Pod" and self.writes_pending:
            self.writes_pending = 0
            self.mutate("Pod", "default", "web", lambda pod: {
                **pod, "metadata": {**pod["metadata"], "labels": {"ready": "yes"}}})
        return answer


def test_a_write_between_two_kinds_lists_reaches_the_cache(tmp_path):
    objects = WriteBetweenLists(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create(_pod("no"))
    objects.create({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": {"app": "web"}},
                                          "spec": {"containers": [{"name": "c"}]}}}})
    seen: list[tuple[str, str]] = []
    informer = Informer(objects, ["Pod", "Deployment"], lambda batch: seen.extend(
        (e.type, e.kind) for e in batch), poll_timeout=0.05)
    informer.start()
    try:
        assert informer.synced.wait(5)
        deadline = time.monotonic() + 5
        while informer.items("Pod")[0]["metadata"]["labels"]["ready"] != "yes":
            assert time.monotonic() < deadline, "the write between the lists never arrived"
            time.sleep(0.02)
        assert seen.count(("ADDED", "Deployment")) == 1  # not replayed from the watch
        assert ("MODIFIED", "Pod") in seen
    finally:
        informer.stop()
