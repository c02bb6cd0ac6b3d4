"""The control-plane process against a real store: nodes, a Deployment, a Service, restarts.

No root needed: node agents are played by the test, which does what an agent does
in the store (set podIP and Ready on its pods, remove pods it finished tearing down).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.control import manager
from netlab.control.pods import request_pod_deletion
from netlab.control.servicealloc import admit_service
from netlab.store import open_store
from netlab.store.objects import Objects
from tests.integration.labs import suite_store_url

pytestmark = [pytest.mark.integration, pytest.mark.store]

CONFIG = ClusterConfig()
Obj = dict[str, Any]


def node(name: str, ip: str, control_plane: bool = False) -> Obj:
    labels = {"kubernetes.io/hostname": name}
    spec: Obj = {}
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane",
                           "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


WEB_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{
                              "name": "netexec", "image": "netexec",
                              "ports": [{"name": "http", "containerPort": 8080,
                                         "protocol": "TCP"}]}]}}}}
WEB_SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"type": "ClusterIP", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


@dataclass
class Lab:
    url: str
    objects: Objects
    stop: threading.Event
    thread: threading.Thread

    def restart(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        self.stop, self.thread = start_control_plane(self.url)


def start_control_plane(url: str) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(url, CONFIG, stop), daemon=True)
    thread.start()
    return stop, thread


@pytest.fixture
def lab(tmp_path):
    with suite_store_url(tmp_path) as url:
        objects = Objects(open_store(url))
        stop, thread = start_control_plane(url)
        lab = Lab(url, objects, stop, thread)
        yield lab
        lab.stop.set()
        lab.thread.join(timeout=5)
        objects.store.close()


def play_agents(objects: Objects) -> None:
    """What the node agents would do now: start bound pods, finish terminating ones."""
    pods, _ = objects.list("Pod")
    nodes = {n["metadata"]["name"]: n for n in objects.list("Node")[0]}
    for pod in pods:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            objects.delete("Pod", "default", name)
        elif pod["spec"].get("nodeName") and not pod["status"].get("podIP"):
            subnet = nodes[pod["spec"]["nodeName"]]["spec"]["podCIDR"].rsplit(".", 1)[0]
            used = {p["status"].get("podIP") for p in pods}
            ip = next(f"{subnet}.{i}" for i in range(2, 255) if f"{subnet}.{i}" not in used)
            pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], phase="Running")
            pod["status"]["conditions"].append({"type": "Ready", "status": "True"})
            objects.update(pod)


def wait_for(what: str, check: Callable[[], Any], objects: Objects | None = None,
             timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if objects is not None:
            play_agents(objects)
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def live_pods(objects: Objects) -> list[Obj]:
    return [p for p in objects.list("Pod")[0] if not p["metadata"].get("deletionTimestamp")]


def ready_endpoints(objects: Objects) -> list[str]:
    return sorted(e["targetRef"]["name"] for s in objects.list("EndpointSlice")[0]
                  if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web"
                  for e in s["endpoints"] if e["conditions"]["ready"])


def bring_up(lab: Lab) -> None:
    lab.objects.create_many([node("cp", "192.168.10.2", control_plane=True),
                             node("worker-1", "192.168.10.3"), node("worker-2", "192.168.10.4")])
    lab.objects.create(admit_service(lab.objects, WEB_SERVICE, CONFIG))
    lab.objects.create(WEB_DEPLOYMENT)


def test_nodes_get_pod_subnets_and_replicas_spread_over_the_workers(lab):
    bring_up(lab)
    cidrs = wait_for("pod CIDRs", lambda: (
        all(n["spec"].get("podCIDR") for n in lab.objects.list("Node")[0])
        and {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in lab.objects.list("Node")[0]}))
    assert cidrs == {"cp": "10.244.0.0/24", "worker-1": "10.244.1.0/24",
                     "worker-2": "10.244.2.0/24"}
    pods = wait_for("6 bound pods", lambda: (
        len(bound := [p for p in lab.objects.list("Pod")[0] if p["spec"].get("nodeName")]) == 6
        and bound))
    assert Counter(p["spec"]["nodeName"] for p in pods) == {"worker-1": 3, "worker-2": 3}
    rs_name = pods[0]["metadata"]["ownerReferences"][0]["name"]
    assert rs_name.startswith("web-") and lab.objects.get("ReplicaSet", "default", rs_name)


def test_ready_pods_appear_ready_in_the_services_endpointslice(lab):
    bring_up(lab)
    names = wait_for("6 ready endpoints",
                     lambda: len(eps := ready_endpoints(lab.objects)) == 6 and eps, lab.objects)
    assert names == sorted(p["metadata"]["name"] for p in live_pods(lab.objects))
    status = wait_for("deployment available", lambda: (
        (s := lab.objects.get("Deployment", "default", "web").get("status", {})).get(
            "availableReplicas") == 6 and s))
    assert status["readyReplicas"] == status["updatedReplicas"] == 6
    endpoints = lab.objects.get("Endpoints", "default", "web")
    assert len(endpoints["subsets"][0]["addresses"]) == 6
    kubernetes = lab.objects.get("EndpointSlice", "default", "kubernetes")
    assert kubernetes["endpoints"][0]["addresses"] == ["192.168.10.2"]


def test_scaling_down_and_deleting_a_pod_converge(lab):
    bring_up(lab)
    wait_for("6 ready endpoints", lambda: len(ready_endpoints(lab.objects)) == 6, lab.objects)

    def scale(deploy: Obj) -> Obj:
        deploy["spec"]["replicas"] = 2
        deploy["metadata"]["generation"] += 1
        return deploy

    lab.objects.mutate("Deployment", "default", "web", scale)
    survivors = wait_for("2 endpoints", lambda: len(
        eps := ready_endpoints(lab.objects)) == 2 and len(lab.objects.list("Pod")[0]) == 2
        and eps, lab.objects)
    assert sorted({p["spec"]["nodeName"] for p in live_pods(lab.objects)}) == [
        "worker-1", "worker-2"]

    assert request_pod_deletion(lab.objects, "default", survivors[0])
    now = wait_for("a replacement pod", lambda: len(
        eps := ready_endpoints(lab.objects)) == 2 and survivors[0] not in eps and eps,
        lab.objects)
    assert survivors[1] in now
    status = wait_for("deployment status", lambda: (
        (s := lab.objects.get("Deployment", "default", "web")["status"]).get(
            "observedGeneration") == 2 and s.get("replicas") == 2 and s))
    assert status["availableReplicas"] == 2


def test_deleting_the_deployment_removes_its_replicaset_pods_and_endpoints(lab):
    bring_up(lab)
    wait_for("6 ready endpoints", lambda: len(ready_endpoints(lab.objects)) == 6, lab.objects)
    lab.objects.delete("Deployment", "default", "web")

    def web_slices() -> list[Obj]:
        return [s for s in lab.objects.list("EndpointSlice")[0]
                if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web"]

    wait_for("everything gone", lambda: not lab.objects.list("ReplicaSet")[0]
             and not lab.objects.list("Pod")[0]
             and [s["endpoints"] for s in web_slices()] == [[]], lab.objects)
    assert web_slices()[0]["ports"] == []  # the placeholder kubectl shows as <unset>


def test_a_restarted_control_plane_changes_nothing(lab):
    bring_up(lab)
    wait_for("6 ready endpoints", lambda: len(ready_endpoints(lab.objects)) == 6, lab.objects)
    wait_for("deployment settled", lambda: any(
        c["reason"] == "NewReplicaSetAvailable"
        for c in lab.objects.get("Deployment", "default", "web")["status"]["conditions"]))
    time.sleep(0.3)  # let the last passes land
    revision = lab.objects.store.revision()
    lab.restart()
    time.sleep(1.0)
    assert lab.objects.store.revision() == revision
    assert len(lab.objects.list("Pod")[0]) == 6
    assert len(lab.objects.list("ReplicaSet")[0]) == 1
