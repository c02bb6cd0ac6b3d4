"""A pod whose sandbox status (its IP) could not be written (the store went away) is reported later.

The sandbox exists once set up, so a retried reconcile skips making it; what it must
not skip is telling the store, or the pod would stay without an IP until something
unrelated changed.
"""

from __future__ import annotations

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.errors import StoreError
from netlab.lab.state import StateDir
from netlab.node import podfiles
from netlab.node.ipam import HostLocalIPAM
from netlab.node.pods import PodManager
from netlab.store import open_store
from netlab.store.objects import Objects


class FlakyObjects(Objects):
    """Objects whose next `failures` transactions fail as an unreachable etcd does."""

    failures = 0

    def transact(self, **kwargs):  # type: ignore[no-untyped-def, override]
        if self.failures:
            self.failures -= 1
            raise StoreError("etcd unreachable (192.168.56.10:2379: Connection refused)")
        return super().transact(**kwargs)


class NoBridge:
    """The CNI bridge's part needs a kernel; not what this test is about."""

    def attach(self, *_: object) -> None: ...

    def detach(self, *_: object) -> None: ...


def test_status_that_failed_to_commit_is_written_by_the_next_reconcile(tmp_path, monkeypatch):
    monkeypatch.setattr(podfiles, "write_pod_files", lambda *_: str(tmp_path))
    objects = FlakyObjects(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    objects.create({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"nodeName": "worker-1", "containers": [{"name": "c"}]},
                    "status": {"phase": "Pending"}})
    started: list[str] = []
    state = StateDir("t", str(tmp_path))
    state.create()
    manager = PodManager(objects, state, ClusterConfig(), "worker-1",
                         "192.168.56.11", NoBridge(),  # type: ignore[arg-type]
                         HostLocalIPAM(str(tmp_path / "ipam"), "10.244.1.0/24"),
                         lambda sandbox, _pod: started.append(sandbox.key), lambda _key: None)
    objects.failures = 1
    with pytest.raises(StoreError):
        manager.reconcile(objects.list("Pod")[0])
    assert started == [] and objects.get("Pod", "default", "web")["status"]["phase"] == "Pending"

    manager.reconcile(objects.list("Pod")[0])  # the agent's retry, store back
    status = objects.get("Pod", "default", "web")["status"]
    # Its address, and Pending until the node's runtime reports its containers started.
    assert (status["phase"], status["podIP"]) == ("Pending", "10.244.1.2")
    assert started == ["default/web"]
