"""The Python front door: a running lab as an object, for scripts and tests.

    with running_lab("topologies/default.yaml", name="mylab") as lab:
        print(lab.exec("client", "curl", "-s", f"http://{lab.pod_ip('web-...')}:8080/hostname"))

The CLI and the pytest fixtures call the same functions (lab/lifecycle.py), so what
works in one works in the other.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netlab.control.apply import Applied, apply_objects, bootstrap, delete_object
from netlab.errors import NetlabError
from netlab.lab import lifecycle
from netlab.lab.labfile import lab_from_data, load_lab
from netlab.lab.plan import plan_from_lab
from netlab.lab.state import StateDir
from netlab.lab.targets import resolve_target
from netlab.store import open_store
from netlab.store.objects import Obj, Objects


class RunningLab:
    """Handles on a lab that is up: its store, its namespaces, commands inside it."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.name = state.lab
        self.config = state.read_config()
        self.info = state.read_lab()
        self.objects = Objects(open_store(state.store_url))

    # looking
    def pods(self, namespace: str | None = "default") -> list[Obj]:
        return self.objects.list("Pod", namespace)[0]

    def pod(self, name: str, namespace: str = "default") -> Obj:
        pod = self.objects.get("Pod", namespace, name)
        if pod is None:
            raise NetlabError(f"no pod {namespace}/{name}")
        return pod

    def pod_ip(self, name: str, namespace: str = "default") -> str:
        return self.pod(name, namespace)["status"]["podIP"]

    def node_ip(self, node: str) -> str:
        return next(n["address"] for n in self.info["nodes"] if n["name"] == node)

    def netns(self, target: str, namespace: str = "default") -> str:
        """The network namespace of `[ns/]pod`, a node name, `ext` or `underlay`."""
        if target == "underlay":
            return f"nl-{self.name}-underlay"
        return resolve_target(self.state, self.objects, target, namespace)

    # doing
    def exec(self, target: str, *argv: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod, node or `ext`, as `knetlab exec` does."""
        return subprocess.run(["ip", "netns", "exec", self.netns(target), *argv],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def apply(self, objs: list[Obj]) -> list[Applied]:
        return apply_objects(self.objects, objs, self.config)

    def delete(self, kind: str, name: str, namespace: str | None = "default") -> Applied:
        return delete_object(self.objects, kind, namespace, name)

    def wait_ready(self, timeout: float = 60) -> None:
        lifecycle.wait_pods_ready(self.objects, self.state, lambda *_: None, timeout)

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
        """Poll until predicate() is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)


def _apply(config):  # type: ignore[no-untyped-def]
    def apply(objects: Objects, objs: list[Obj]) -> None:
        bootstrap(objects, config)
        apply_objects(objects, objs, config)
    return apply


def start_lab(source: str | Path | dict[str, Any], name: str | None = None,
              base_dir: str | Path | None = None, timeout: float = 300) -> RunningLab:
    """Bring a lab up from a lab file path or a lab file's data (dict)."""
    if isinstance(source, dict):
        lab = lab_from_data(source, source="<lab data>", base_dir=base_dir)
    else:
        lab = load_lab(str(source))
    plan = plan_from_lab(lab, name)
    state = lifecycle.up(plan, _apply(plan.config), None, timeout)
    return RunningLab(state)


@contextlib.contextmanager
def running_lab(source: str | Path | dict[str, Any], name: str | None = None,
                base_dir: str | Path | None = None) -> Iterator[RunningLab]:
    lab = start_lab(source, name, base_dir)
    try:
        yield lab
    finally:
        lifecycle.down(lab.name)
