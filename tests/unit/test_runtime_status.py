"""A pod is Running, and Ready without a probe, only once the runtime serves it.

A pod the runtime cannot serve stays Pending, not Ready, with the reason.

kubelet reports a container running once the runtime has started it. Here the
agent reports the sandbox (the pod's address, Pending, containers waiting) and the
node's runtime, once the pod's servers listen, reports the containers running.
Without this order a pod could be Ready while nothing listened yet, and traffic
sent right after `knetlab up` would be refused.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from netlab.api.cluster import ClusterConfig
from netlab.cli.render import pod_row
from netlab.node.pods import containers_started, sandbox_status, set_ready
from netlab.node.runtime import Runtime
from netlab.store import open_store
from netlab.store.objects import Obj, Objects

PROBE = {"httpGet": {"path": "/healthz", "port": 8080}}


def pod(name: str, *, probe: dict[str, Any] | None = None, node: str = "worker-1") -> Obj:
    container: dict[str, Any] = {"name": "web", "image": "nginx",
                                 "ports": [{"containerPort": 8080}]}
    if probe:
        container["readinessProbe"] = probe
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "containers": [container]}}


def condition(obj: Obj, kind: str) -> str:
    return next(c["status"] for c in obj["status"]["conditions"] if c["type"] == kind)


def test_a_new_sandbox_has_its_address_and_waits_for_its_containers():
    status = sandbox_status(pod("a"), "10.244.1.2", "192.168.10.3")
    assert (status["phase"], status["podIP"], status["hostIP"]) == \
        ("Pending", "10.244.1.2", "192.168.10.3")
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == ready["ContainersReady"] == "False"
    assert ready["PodReadyToStartContainers"] == "True"
    [container] = status["containerStatuses"]
    assert container["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (container["started"], container["ready"]) == (False, False)


def test_started_containers_make_a_pod_without_probe_ready():
    obj = pod("a")
    obj["status"] = sandbox_status(obj, "10.244.1.2", "192.168.10.3")
    started = containers_started(obj)
    assert started is not None and started["status"]["phase"] == "Running"
    assert condition(started, "Ready") == condition(started, "ContainersReady") == "True"
    [container] = started["status"]["containerStatuses"]
    assert container["started"] and container["ready"] and "running" in container["state"]
    assert container["containerID"] == "netlab://uid-a/web"
    assert containers_started(started) is None  # already says so: nothing to write


def test_started_containers_leave_readiness_to_the_probe():
    obj = pod("a", probe=PROBE)
    obj["status"] = sandbox_status(obj, "10.244.1.2", "192.168.10.3")
    started = containers_started(obj)
    assert started is not None and started["status"]["phase"] == "Running"
    assert condition(started, "Ready") == "False"


def test_a_probe_that_succeeded_first_stays_ready_when_the_containers_are_reported():
    obj = pod("a", probe=PROBE)
    obj["status"] = sandbox_status(obj, "10.244.1.2", "192.168.10.3")
    probed = set_ready(obj, True)
    assert probed is not None
    started = containers_started(probed)
    assert started is not None and condition(started, "Ready") == "True"
    assert started["status"]["containerStatuses"][0]["ready"] is True


class Apps:
    """The runtime's servers, without sockets: records what it serves; `broken` fails."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.serving: list[str] = []

    def add_pod(self, key: str, *_: Any, **__: Any) -> None:
        if key in self.broken:
            raise OSError(98, "Address already in use")
        self.serving.append(key)

    def remove_pod(self, key: str) -> bool:
        return True

    def close(self) -> None: ...


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_runtime_reports_running_only_the_pods_it_serves(tmp_path):
    url = f"sqlite://{tmp_path}/store.db"
    objects = Objects(open_store(url))
    objects.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    for name, probe, node in (("plain", None, "worker-1"), ("probed", PROBE, "worker-1"),
                              ("broken", None, "worker-1"), ("elsewhere", None, "worker-2")):
        obj = pod(name, probe=probe, node=node)
        obj["status"] = sandbox_status(obj, "10.244.1.2", "192.168.10.3")
        objects.create(obj)
    runtime = Runtime(url, ClusterConfig(), "worker-1")
    runtime.apps.close()
    runtime.apps = Apps(broken={"default/broken"})  # type: ignore[assignment]

    def phase(name: str) -> str:
        return objects.get("Pod", "default", name)["status"]["phase"]

    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: phase("plain") == phase("probed") == "Running")
        time.sleep(0.3)  # a further pass would have written the others by now
    finally:
        stop.set()
        thread.join()
    assert sorted(runtime.apps.serving) == ["default/plain", "default/probed"]
    assert condition(objects.get("Pod", "default", "plain"), "Ready") == "True"
    assert condition(objects.get("Pod", "default", "probed"), "Ready") == "False"
    for name in ("broken", "elsewhere"):  # not started here: still waiting, not Ready
        assert phase(name) == "Pending"
        assert condition(objects.get("Pod", "default", name), "Ready") == "False"
    [broken] = objects.get("Pod", "default", "broken")["status"]["containerStatuses"]
    assert broken["state"] == {"waiting": {"reason": "RunContainerError",
                                           "message": "[Errno 98] Address already in use"}}
    [elsewhere] = objects.get("Pod", "default", "elsewhere")["status"]["containerStatuses"]
    assert elsewhere["state"] == {"waiting": {"reason": "ContainerCreating"}}
    rows = {p["metadata"]["name"]: pod_row(p, wide=False) for p in objects.list("Pod")[0]}
    assert [rows[n][1:3] for n in ("plain", "probed", "broken", "elsewhere")] == [
        ["1/1", "Running"], ["0/1", "Running"], ["0/1", "RunContainerError"],
        ["0/1", "ContainerCreating"]]


def test_a_batch_that_conflicts_applies_each_change_again_to_the_current_pod(tmp_path):
    """Status written in one commit; if a pod moved on meanwhile, one by one."""
    objects = Objects(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    for name in ("a", "b"):
        obj = pod(name)
        obj["status"] = sandbox_status(obj, "10.244.1.2", "192.168.10.3")
        objects.create(obj)
    stale = [objects.get("Pod", "default", n) for n in ("a", "b")]
    objects.mutate("Pod", "default", "b",  # another writer got to b first
                   lambda p: {**p, "metadata": {**p["metadata"], "labels": {"seen": "yes"}}})
    objects.update_all([(containers_started(p), containers_started) for p in stale])
    for name in ("a", "b"):
        now = objects.get("Pod", "default", name)
        assert now["status"]["phase"] == "Running" and condition(now, "Ready") == "True"
    assert objects.get("Pod", "default", "b")["metadata"]["labels"] == {"seen": "yes"}
