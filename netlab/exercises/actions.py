"""An exercise's actions: what `setup`, `break`, `solve` and `reset` steps do to a lab.

Each action changes the lab the way a person or a component would: objects through
the API (apply, delete, scale), kernel state through commands run inside a namespace
(exec, as `knetlab exec` runs them), a node agent's own configuration file, or a
restart of a component. None of them leaves a flag for the checker to read.

    apply: FILE | [FILES]               create or update the objects in manifests
    delete: FILE | {kind, name|selector, namespace}
    recreate: FILE                      delete, wait until gone, apply (pods are immutable)
    scale: {deployment: [NS/]NAME, replicas: N}
    exec: {on: TARGET|[TARGETS]|nodes, run: SHELL}   fails on a non-zero exit
    script: FILE                        sh FILE on the host, in the exercise's folder
    agent-config: {nodes: NODE|[NODES]|all, set: {KEY: VALUE}, unset: [KEY]}
    restart: COMPONENT|[COMPONENTS]|agents   stop it; the supervisor starts it again
    wait: ready | rollout | {seconds: N} | {for: CHECK, timeout: N}
    save: {name: NAME, value: TEXT}     keep a value for ${saved.NAME}
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from netlab.api.keys import kind_info
from netlab.api.objects import load_manifests
from netlab.api.selectors import matches, parse_selector
from netlab.errors import NetlabError
from netlab.exercises.checks import Checker, places, run_in_netns, script_env
from netlab.exercises.model import Exercise, ExerciseError, Step
from netlab.exercises.values import LabValues
from netlab.lab.session import RunningLab
from netlab.lab.supervisor import restart_request
from netlab.node import agentconfig

RESTART_TIMEOUT = 60.0
GONE_TIMEOUT = 60.0
READY_TIMEOUT = 120.0
SCRIPT_TIMEOUT = 300.0
AGENT_RUNNING = "agent running"  # what an agent logs once every role has started


def restart_components(lab: RunningLab, roles: list[str],
                       timeout: float = RESTART_TIMEOUT) -> None:
    """Stop each component (SIGTERM) and wait until the supervisor has started it again.

    The stop is announced to the supervisor first, so it starts the component again
    at once, as `systemctl restart` does, instead of backing off as after a crash.
    An agent counts as started once its new process logs that every role runs, as
    one would watch `journalctl -u k3s-agent` after `systemctl restart k3s-agent`.
    """
    current = {p.role: p for p in lab.state.processes()}
    unknown = [r for r in roles if r not in current]
    if unknown:
        raise ExerciseError(f"no component {unknown[0]!r} in lab {lab.name} (components: "
                            f"{', '.join(sorted(current))})")
    offsets = {}
    for role in roles:
        path = lab.state.log_path(role)
        offsets[role] = os.path.getsize(path) if os.path.exists(path) else 0
        if current[role].alive():
            request = restart_request(lab.state, role, current[role].pid)
            os.makedirs(os.path.dirname(request), exist_ok=True)
            with open(request, "w"):
                pass
            os.kill(current[role].pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for role in roles:
        while not _restarted(lab, role, current[role].pid, offsets[role]):
            if time.monotonic() > deadline:
                raise ExerciseError(f"{role} did not start again within {timeout:g}s: see "
                                    f"knetlab logs {role}")
            time.sleep(0.1)


def _restarted(lab: RunningLab, role: str, old_pid: int, offset: int) -> bool:
    new = next((p for p in lab.state.processes() if p.role == role), None)
    if new is None or new.pid == old_pid or not new.alive():
        return False
    if not role.startswith("agent-"):
        return True
    with open(lab.state.log_path(role), errors="replace") as f:
        f.seek(offset)
        return AGENT_RUNNING in f.read()


class Actions:
    """Runs action steps of one exercise against one lab."""

    def __init__(self, exercise: Exercise, values: LabValues,
                 report: Callable[[str], None] | None = None) -> None:
        self.exercise = exercise
        self.values = values
        self.lab = values.lab
        self.report = report or (lambda _: None)
        self.kinds: dict[str, Callable[[Any, Step], None]] = {
            "apply": self._apply, "delete": self._delete, "recreate": self._recreate,
            "scale": self._scale, "exec": self._exec, "script": self._script,
            "agent-config": self._agent_config, "restart": self._restart, "wait": self._wait,
            "save": self._save}

    def run(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            self.report(step.describe())
            try:
                self.kinds[step.kind](step.args, step)
            except ExerciseError as exc:
                if exc.file:
                    raise
                raise ExerciseError(exc.reason, file=step.where) from None
            except (NetlabError, OSError) as exc:
                raise ExerciseError(str(exc), file=step.where) from None

    # -- objects ------------------------------------------------------------------------

    def _objects_in(self, files: str | list[str]) -> list[dict[str, Any]]:
        names = files if isinstance(files, list) else [files]
        return [o.obj for name in names for o in load_manifests(self.exercise.path(name))]

    def _apply(self, files: str | list[str], _step: Step) -> None:
        self.lab.apply(self._objects_in(files))

    def _delete(self, what: str | list[str] | dict[str, str], _step: Step) -> None:
        for kind, namespace, name in self._refs(what):
            self.lab.delete(kind, name, namespace)

    def _refs(self, what: str | list[str] | dict[str, str]) -> list[tuple[str, str | None, str]]:
        if not isinstance(what, dict):
            return [(o["kind"], o["metadata"].get("namespace", "default")
                     if kind_info(o["kind"]).namespaced else None, o["metadata"]["name"])
                    for o in self._objects_in(what)]
        info = kind_info(what["kind"])
        namespace = what.get("namespace", "default") if info.namespaced else None
        if "name" in what:
            return [(info.kind, namespace, self.values.resolve(what["name"]))]
        wanted = parse_selector(what["selector"])
        items, _ = self.lab.objects.list(info.kind, namespace)
        return [(info.kind, namespace, o["metadata"]["name"]) for o in items
                if matches(wanted, o["metadata"].get("labels") or {})]

    def _recreate(self, files: str | list[str], step: Step) -> None:
        refs = self._refs(files)
        for kind, namespace, name in refs:
            self.lab.delete(kind, name, namespace)
        self.lab.wait_for(lambda: all(self.lab.objects.get(k, ns, n) is None
                                      for k, ns, n in refs),
                          GONE_TIMEOUT, what="the old objects to be gone")
        self._apply(files, step)

    def _scale(self, args: dict[str, Any], _step: Step) -> None:
        namespace, _, name = args["deployment"].rpartition("/")

        def change(deploy: dict[str, Any]) -> dict[str, Any]:
            deploy["spec"]["replicas"] = args["replicas"]
            return deploy

        if self.lab.objects.mutate("Deployment", namespace or "default", name, change) is None:
            raise ExerciseError(f"no Deployment {namespace or 'default'}/{name}")

    # -- kernel and components ----------------------------------------------------------

    def _exec(self, args: dict[str, Any], step: Step) -> None:
        args = self.values.resolve(args, step.where)
        timeout = args.get("timeout", 60)
        for target in places(self.values, args["on"]):
            status, out = run_in_netns(self.lab.netns(target), args["run"], timeout)
            if status != 0:
                result = f"no result within {timeout:g}s" if status is None else f"exit {status}"
                raise ExerciseError(f"`{args['run']}` on {target}: {result}: {out}")

    def _script(self, name: str, _step: Step) -> None:
        path = self.exercise.path(name)
        try:
            proc = subprocess.run(["sh", str(path)], capture_output=True, text=True,
                                  cwd=self.exercise.folder, timeout=SCRIPT_TIMEOUT,
                                  env=script_env(self.values, self.exercise))
        except subprocess.TimeoutExpired:
            raise ExerciseError(f"{name} did not finish within {SCRIPT_TIMEOUT:g}s") from None
        if proc.returncode != 0:
            raise ExerciseError(f"{name} exited {proc.returncode}: "
                                f"{(proc.stdout + proc.stderr).strip()}")

    def _nodes(self, nodes: str | list[str]) -> list[str]:
        every = [n["name"] for n in self.lab.info["nodes"]]
        names = every if nodes == "all" else nodes if isinstance(nodes, list) else [nodes]
        unknown = [n for n in names if n not in every]
        if unknown:
            raise ExerciseError(f"no node {unknown[0]!r} (nodes: {', '.join(every)})")
        return names

    def _agent_config(self, args: dict[str, Any], _step: Step) -> None:
        for node in self._nodes(args["nodes"]):
            path = agentconfig.config_path(self.lab.state.node_dir(node))
            values = agentconfig.read_values(path)
            values.update(args.get("set") or {})
            unset = args.get("unset") or []
            for key in unset if isinstance(unset, list) else [unset]:
                values.pop(key, None)
            agentconfig.write(path, values)

    def _restart(self, roles: str | list[str], _step: Step) -> None:
        names = roles if isinstance(roles, list) else [roles]
        expanded: list[str] = []
        for name in names:
            expanded += [f"agent-{n}" for n in self._nodes("all")] if name == "agents" \
                else [name]
        restart_components(self.lab, expanded)

    # -- waiting and remembering ---------------------------------------------------------

    def _wait(self, args: str | dict[str, Any], _step: Step) -> None:
        if args == "rollout":
            self.lab.wait_for(self._rolled_out, READY_TIMEOUT, what="every Deployment's rollout")
        if args in ("ready", "rollout"):
            self.lab.wait_ready(READY_TIMEOUT)
            return
        assert isinstance(args, dict)
        if "seconds" in args:
            time.sleep(args["seconds"])
            return
        check: Step = args["for"]
        timeout = args.get("timeout", 30)
        checker = Checker(self.exercise, self.values)
        deadline = time.monotonic() + timeout
        while True:
            result = checker.one(check)
            if result.ok:
                return
            if time.monotonic() > deadline:
                raise ExerciseError(f"still not true after {timeout:g}s: {result.title}: "
                                    f"{result.evidence}")
            time.sleep(0.3)

    def _rolled_out(self) -> bool:
        """Every Deployment done, as `kubectl rollout status` decides: the controller saw
        the latest spec, and all replicas are updated and available, none old left."""
        for deploy in self.lab.objects.list("Deployment")[0]:
            status, want = deploy.get("status") or {}, deploy["spec"].get("replicas", 1)
            if (status.get("observedGeneration", 0) < deploy["metadata"].get("generation", 1)
                    or status.get("updatedReplicas", 0) != want
                    or status.get("replicas", 0) != want
                    or status.get("availableReplicas", 0) != want):
                return False
        return True

    def _save(self, args: dict[str, str], step: Step) -> None:
        self.values.saved[args["name"]] = self.values.resolve(args["value"], step.where)
