"""Bring a lab up and take it down: the API both `knetlab` and the pytest plugin call.

`up` validates everything first (lab file and every manifest), then creates the
machines, starts the supervisor, applies the manifests and waits until every node
and pod is ready. If anything fails after the first kernel object exists, the
whole lab is cleaned up from its records before the error is raised, so a failed
`up` leaves nothing half-made.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab.api import keys
from netlab.api.cluster import ClusterConfig
from netlab.control.pods import is_ready, is_terminating
from netlab.errors import NetlabError, StoreError
from netlab.kernel import netns
from netlab.lab import cleanup
from netlab.lab.netns_machines import NetnsMachines, Underlay, machine_netns
from netlab.lab.state import ProcessRecord, StateDir, running_labs
from netlab.lab.supervisor import components, spawn_supervisor
from netlab.node import podfiles
from netlab.node.agent import node_object
from netlab.store import clusterconfig, etcd_server, etcd_url, open_store
from netlab.store.informer import Informer
from netlab.store.objects import ObjectEvent, Objects

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class LabError(NetlabError):
    """A lab cannot be brought up, found or taken down."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    address: str


@dataclass(frozen=True)
class StorePlan:
    """The lab's store: sqlite in the state dir, or etcd at endpoints ("host:port").

    etcd with no endpoints: the lab runs one member inside its control-plane node.
    """

    backend: str = "sqlite"
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabPlan:
    """Everything `up` needs, resolved from a lab file."""

    name: str
    nodes: tuple[NodeSpec, ...]
    underlay: Underlay
    ext_address: str
    config: ClusterConfig
    manifests: tuple[dict[str, Any], ...]  # validated objects, in apply order
    source: str = ""
    store: StorePlan = StorePlan()
    node_backend: str = "netns"  # or "vm": each node a guest (netlab/lab/vm/nodes.py)
    guest_lab: dict[str, Any] | None = None  # vm: the lab file the guests' control plane reads


def store_info(plan: LabPlan) -> dict[str, Any]:
    """How the lab's processes reach the store, as recorded in lab.json.

    `url` is for processes in the host's namespace (CLI, control plane), `node_url`
    for node components. A lab's own etcd listens on the control-plane node's
    underlay address, which only the nodes can reach: the host side makes its
    sockets in the control-plane namespace (`?netns=`), the nodes dial over the
    underlay, as kubelets reach a kubeadm control plane.
    """
    if plan.node_backend == "vm":  # etcd runs in the control-plane guest (scripts/provision)
        control = next(n for n in plan.nodes if n.role == "control-plane")
        endpoint = f"{control.address}:{etcd_server.CLIENT_PORT}"
        return {"backend": "etcd", "node_url": etcd_url([endpoint]),
                "url": etcd_url([endpoint], netns=machine_netns(plan.name, "underlay"))}
    if plan.store.backend != "etcd":
        return {"backend": "sqlite"}
    if plan.store.endpoints:
        url = etcd_url(list(plan.store.endpoints))
        return {"backend": "etcd", "url": url, "node_url": url}
    control = next(n for n in plan.nodes if n.role == "control-plane")
    member_netns = machine_netns(plan.name, control.name)
    endpoint = f"{control.address}:{etcd_server.CLIENT_PORT}"
    return {"backend": "etcd", "url": etcd_url([endpoint], netns=member_netns),
            "node_url": etcd_url([endpoint]),
            "member": {"node": control.name, "netns": member_netns,
                       "address": control.address}}


def lab_info(plan: LabPlan) -> dict[str, Any]:
    return {
        "name": plan.name, "source": plan.source,
        "nodes": [{"name": n.name, "role": n.role, "address": n.address,
                   "netns": machine_netns(plan.name, n.name)}
                  | ({"vm": os.path.join(StateDir(plan.name).path, "vms", n.name)}
                     if plan.node_backend == "vm" else {}) for n in plan.nodes],
        "ext": {"address": plan.ext_address, "netns": machine_netns(plan.name, "ext")},
        "underlay": {"cidr": plan.underlay.cidr, "gateway": plan.underlay.gateway,
                     "mtu": plan.underlay.mtu},
        "store": store_info(plan),
    }


def _record_host_dirs(state: StateDir) -> None:
    """Record the host dirs this lab makes, or inherits from a running lab that made them.

    Inheriting matters when labs overlap: the last one down removes the directory the
    first one created, so the host ends as it was before either.
    """
    inherited = {rec["path"] for lab in running_labs() if lab != state.lab
                 for rec in StateDir(lab).records("created-dir")}
    for path in (podfiles.ETC_NETNS, netns.NETNS_RUN_DIR):
        if not os.path.isdir(path) or path in inherited:
            state.record("created-dir", path=path)
    netns.prepare_run_dir()


def up(plan: LabPlan, apply: Callable[[Objects, list[dict[str, Any]]], None],
       progress: Progress | None = None, timeout: float = 300.0) -> StateDir:
    """Create the lab; `apply` writes manifests to the store (the API server's admission)."""
    state = StateDir(plan.name)
    if state.exists():
        if any(p.alive() for p in state.processes()):
            raise LabError(f"lab {plan.name!r} is already up (knetlab down --name {plan.name})")
        raise LabError(f"lab {plan.name!r} was left behind: its state dir {state.path} is "
                       "there but none of its processes runs (a crash, or a run that was "
                       f"killed); knetlab clean --name {plan.name} removes what it recorded")
    report = progress or (lambda *_: None)
    state.create()
    try:
        state.write_config(plan.config, lab_info(plan))
        _record_host_dirs(state)
        if plan.node_backend == "vm":
            from netlab.lab.vm.nodes import VmNodes, check_checkout

            check_checkout()
            guests = VmNodes(state, plan)
            guests.boot(report, timeout)
            # kubeadm init first: etcd, the control plane and its own agent; provision
            # returns once that node has joined.
            guests.provision_all([n.name for n in plan.nodes if n.role == "control-plane"])
        else:
            # The supervisor starts the store (a lab's own etcd, inside the control-plane
            # node: it needs the machines) and waits for the nodes to be registered before
            # it starts the control plane and the agents. Without an etcd to start, it is
            # spawned first, so its imports (most of a second of CPU) overlap the machines.
            own_etcd = "member" in store_info(plan)
            if not own_etcd:
                spawn_supervisor(state)
            _create_netns_machines(state, plan, report)
            if own_etcd:
                spawn_supervisor(state)
        objects = Objects(open_store(state.store_url))
        wait_store(objects, state, timeout)
        # As a machine's control plane does: `--store` clients need nothing else.
        clusterconfig.publish(objects.store, plan.config)
        registered = {n["metadata"]["name"] for n in objects.list("Node")[0]}
        register_nodes(objects, tuple(n for n in plan.nodes if n.name not in registered))
        if plan.node_backend == "vm":  # kubeadm join, on every other node at once
            guests.provision_all([n.name for n in plan.nodes if n.name not in registered])
        # As `kubectl apply` right after `kubeadm join`: the control plane schedules
        # while the agents still start, and each agent finds its pods waiting.
        apply(objects, list(plan.manifests))
        # A VM lab's processes run in its guests, recorded there.
        started = frozenset() if plan.node_backend == "vm" else frozenset(
            c.role for c in components(state))
        wait_nodes_ready(objects, state, [n.name for n in plan.nodes], report, timeout, started)
        wait_pods_ready(objects, state, report, timeout)
    except LabError as exc:
        evidence = log_errors(state)
        cleanup.clean(state)
        raise LabError(f"{exc}\n{evidence}" if evidence else str(exc)) from exc
    except BaseException:
        cleanup.clean(state)
        raise
    return state


def _create_netns_machines(state: StateDir, plan: LabPlan, report: Progress) -> None:
    machines = NetnsMachines(state, plan.underlay)
    report("machines", 0, len(plan.nodes) + 1)
    machines.create_underlay()
    for i, node in enumerate(plan.nodes):
        machines.create_machine(node.name, node.address, i + 1)
        report("machines", i + 1, len(plan.nodes) + 1)
    machines.create_machine("ext", plan.ext_address, len(plan.nodes) + 1)
    report("machines", len(plan.nodes) + 1, len(plan.nodes) + 1)


def log_errors(state: StateDir, per_log: int = 5) -> str:
    """The last error lines of each component's log: the state dir goes with a failed up."""
    lines = []
    logs = os.path.join(state.path, "logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), errors="replace") as f:
            errors = [line.rstrip() for line in f if " ERROR " in line or "Traceback" in line]
        lines += [f"  {name}: {line}" for line in errors[-per_log:]]
    return "last errors in the lab's logs:\n" + "\n".join(lines) if lines else ""


def wait_store(objects: Objects, state: StateDir, timeout: float) -> None:
    """Until the store answers (a lab's own etcd takes about a second to elect itself)."""
    deadline = time.monotonic() + timeout
    check_supervisor = SupervisorCheck(state)
    while True:
        try:
            objects.store.revision()
            return
        except StoreError as exc:
            check_supervisor()
            if time.monotonic() > deadline:
                raise LabError(f"store not ready after {timeout:.0f}s ({exc}): see "
                               f"{state.log_path('etcd')}") from exc
            time.sleep(0.05)


def register_nodes(objects: Objects, nodes: tuple[NodeSpec, ...]) -> None:
    """Join the nodes in file order, control plane first, as kubeadm init/join would.

    The agents register themselves too (kubelet does); doing it here first makes the
    podCIDRs follow the file (control-plane 10.244.0.0/24, then the workers).
    """
    ordered = sorted(nodes, key=lambda n: n.role != "control-plane")
    objects.create_many([node_object(n.name, n.address, n.role) for n in ordered])


class SupervisorCheck:
    """Fails a wait fast when the lab's supervisor (or, in a VM lab, a guest) is gone.

    The records are read once: the state file grows with every pod, and re-reading it
    on every tick of a wait was most of the waiting process's CPU at hundreds of pods.
    """

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.records = [p for p in state.processes()
                        if p.role == "supervisor" or p.role.startswith("vm-")]

    def __call__(self) -> None:
        if not self.records:
            raise LabError(f"the lab supervisor died; see {self.state.log_path('supervisor')}")
        for record in self.records:
            if _exited(record) and record.role == "supervisor":
                raise LabError("the lab supervisor died; see "
                               f"{self.state.log_path('supervisor')}")
            if _exited(record):
                guest = record.role.removeprefix("vm-")
                raise LabError(f"the guest of node {guest} (QEMU) exited; see "
                               f"{self.state.path}/vms/{guest}/console.log")


def _exited(proc: ProcessRecord) -> bool:
    """Whether the process is gone; reaps it if it is this process's child (the one that
    ran `up`), since an unreaped child is a zombie that still looks alive."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(proc.pid, os.WNOHANG)[0]:
            return True
    return not proc.alive()


def wait_nodes_ready(objects: Objects, state: StateDir, names: list[str], report: Progress,
                     timeout: float, started: frozenset[str] = frozenset()) -> None:
    """Until every node has its podCIDR and its overlay, and every process in `started`
    (roles) has been started: a lab without pods is ready with its runtimes running."""
    deadline = time.monotonic() + timeout
    check_supervisor = SupervisorCheck(state)
    while True:
        nodes, _ = objects.list("Node")
        ready = [n for n in nodes if n["metadata"]["name"] in names and n["spec"].get("podCIDR")
                 and keys.overlay_annotated(n)]
        report("nodes", len(ready), len(names))
        if len(ready) == len(names) and started <= {p.role for p in state.processes()}:
            return
        check_supervisor()
        if time.monotonic() > deadline:
            raise LabError(f"nodes not ready after {timeout:.0f}s: see {state.path}/logs/")
        time.sleep(0.05)


class PodCounts:
    """(Ready, expected, present pods, rolled out), kept current by an informer; None
    until it lists.

    Rolled out is False while a Deployment's controller has not acted on its
    latest spec (as `kubectl rollout status` tells: observedGeneration behind, or
    fewer updated replicas than asked for), so that a wait right after an apply does
    not end on the pods of the old spec.

    Counted from the informer's events, each pod decoded once per change and
    summed from a small record: listing the store every tick decoded every pod
    every tick, and recounting the whole cache per batch was most of what the
    waiting process did at hundreds of pods. `changed` is set on every count, so
    the waiter wakes when the last pod turns Ready, not a tick later.
    """

    def __init__(self, objects: Objects) -> None:
        self.counts: tuple[int, int, int, bool] | None = None
        self.changed = threading.Event()
        self._pods: dict[tuple[str | None, str], tuple[bool, bool]] = {}  # (ready, bare)
        # per Deployment: (replicas, rolled out)
        self._deployments: dict[tuple[str | None, str], tuple[int, bool]] = {}
        self.informer = Informer(objects, ["Pod", "Deployment"], self._count)

    def _count(self, events: list[ObjectEvent]) -> None:
        """On the informer's thread (its first batch is the initial list)."""
        for ev in events:
            meta = ev.obj["metadata"]
            key = (meta.get("namespace"), meta["name"])
            if ev.type == "DELETED":
                (self._pods if ev.kind == "Pod" else self._deployments).pop(key, None)
            elif ev.kind == "Pod":
                self._pods[key] = (is_ready(ev.obj) and not is_terminating(ev.obj),
                                   not meta.get("ownerReferences"))
            else:
                self._deployments[key] = _rollout(ev.obj)
        ready = sum(1 for is_ready_, _ in self._pods.values() if is_ready_)
        bare = sum(1 for _, is_bare in self._pods.values() if is_bare)
        replicas = sum(n for n, _ in self._deployments.values())
        rolled_out = all(done for _, done in self._deployments.values())
        self.counts = (ready, replicas + bare, len(self._pods), rolled_out)
        self.changed.set()


def _rollout(deploy: dict[str, Any]) -> tuple[int, bool]:
    """A Deployment's replicas, and whether its controller has caught up with its spec."""
    replicas = int(deploy["spec"].get("replicas", 1))
    status = deploy.get("status") or {}
    return replicas, (status.get("observedGeneration", 0) >= deploy["metadata"].get(
        "generation", 1) and status.get("updatedReplicas", 0) == replicas)


def wait_pods_ready(objects: Objects, state: StateDir, report: Progress,
                    timeout: float) -> None:
    """Until every pod the manifests ask for exists and is Ready.

    Every Deployment was written before this starts (`apply` runs first), and the
    manifests make no other owners (Pod, Deployment, Service, Namespace), so pods
    expected = replicas of each Deployment + bare pods, and no pod still to come
    can hide behind a count that is already complete.
    """
    deadline = time.monotonic() + timeout
    check_supervisor = SupervisorCheck(state)
    pods = PodCounts(objects)
    pods.informer.start()
    try:
        while True:
            pods.changed.clear()
            ready, expected, present, rolled_out = pods.counts or (0, 1, 0, False)
            report("pods", ready, max(expected, present))
            if ready >= expected and ready == present and rolled_out:
                return
            check_supervisor()
            if time.monotonic() > deadline:
                raise LabError(f"pods not ready after {timeout:.0f}s ({ready}/{expected}); "
                               f"see knetlab get pods and {state.path}/logs/")
            pods.changed.wait(0.25)
    finally:
        pods.informer.stop()


def find_lab(name: str | None) -> StateDir:
    """The lab named, or the only one running."""
    labs = running_labs()
    if name is None:
        if len(labs) == 1:
            return StateDir(labs[0])
        if not labs:
            raise LabError("no lab is running (knetlab up)")
        raise LabError(f"several labs are running ({', '.join(labs)}): say which with --name")
    if name not in labs:
        raise LabError(f"no lab named {name!r} is running"
                       + (f" (running: {', '.join(labs)})" if labs else ""))
    return StateDir(name)


def down(name: str | None) -> cleanup.CleanupReport:
    state = find_lab(name)
    _reap_supervisor(state)
    return cleanup.clean(state)


def _reap_supervisor(state: StateDir) -> None:
    """Reap the supervisor when it exits, if this process started it.

    A script or test session that runs `up` and `down` is the supervisor's parent;
    unreaped, the exited supervisor stays a zombie that still looks alive, and
    cleanup would wait its full grace time and then "kill" it (8 s per lab).
    """
    for proc in state.processes():
        if proc.role == "supervisor" and proc.alive():
            threading.Thread(target=_wait_child, args=(proc.pid,), name="reap-supervisor",
                             daemon=True).start()


def _wait_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, 0)
