"""The exercise format, the catalog, progress and the pure parts of checks (no root)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from netlab.exercises.catalog import PATH_ENV, find_exercise, load_catalog
from netlab.exercises.checks import _repeat
from netlab.exercises.model import ExerciseError, load_exercise
from netlab.exercises.progress import Progress
from netlab.exercises.runner import Active, read_active, write_active
from netlab.exercises.values import LabValues
from netlab.lab.state import StateDir

# -- the shipped catalog -----------------------------------------------------------------


def test_the_catalog_ships_at_least_twelve_exercises_that_load():
    catalog = load_catalog()
    assert len(catalog) >= 12
    for ident, exercise in catalog.items():
        assert exercise.id == ident == exercise.folder.name
        assert exercise.lab.is_file()
        assert len(exercise.hints) >= 2, ident
        assert exercise.checks and exercise.break_steps and exercise.solve_steps, ident
        assert exercise.reset_steps and exercise.alternatives, ident
        assert exercise.symptom_checks, f"{ident}: nothing shows the symptom's other half"


def test_every_setup_is_undone_by_a_teardown():
    for ident, exercise in load_catalog().items():
        assert bool(exercise.setup_steps) == bool(exercise.teardown_steps), ident


# -- authoring errors name the file, the line and the field -------------------------------

LAB = "name: x\n"
GOOD = """\
id: demo
title: A demo
lab: lab.yaml
story: something broke
symptom: it does not work
hints: [look, look harder]
break:
  - exec: {on: worker-1, run: "true"}
check:
  - http: {from: client, to: "${svc.web.ip}", expect: {body: web}}
solve:
  - exec: {on: worker-1, run: "true"}
reset:
  - exec: {on: worker-1, run: "true"}
"""


def write_exercise(root: Path, text: str, name: str = "demo", **files: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "exercise.yaml").write_text(textwrap.dedent(text))
    (folder / "lab.yaml").write_text(LAB)
    for file, content in files.items():
        (folder / file).write_text(content)
    return folder


def error_of(tmp_path: Path, text: str, **files: str) -> str:
    with pytest.raises(ExerciseError) as caught:
        load_exercise(write_exercise(tmp_path, text, **files))
    return str(caught.value)


def test_a_minimal_exercise_loads(tmp_path):
    exercise = load_exercise(write_exercise(tmp_path, GOOD))
    assert exercise.title == "A demo" and exercise.hints == ("look", "look harder")
    assert exercise.checks[0].kind == "http"
    assert exercise.checks[0].where.endswith("exercise.yaml:10: check[0].http")
    assert exercise.setup_steps == () and exercise.alternatives == ()


def test_an_unknown_top_level_field_is_named_with_its_line(tmp_path):
    message = error_of(tmp_path, GOOD + "sloution: typo\n")
    assert message.endswith("exercise.yaml:15: sloution: unknown field (expected one of: "
                            "id, title, difficulty, tags, lab, story, symptom, hints, setup, "
                            "break, check, symptom_checks, solve, solution, alternatives, "
                            "reset, teardown, explanation)")


def test_a_step_with_two_kinds_is_refused(tmp_path):
    text = GOOD.replace('  - exec: {on: worker-1, run: "true"}\ncheck',
                        '  - exec: {on: worker-1, run: "true"}\n    apply: x.yaml\ncheck')
    assert "break[0]: expected exactly one of: apply, delete" in error_of(tmp_path, text)


def test_a_missing_manifest_is_found_when_loading_not_when_breaking(tmp_path):
    text = GOOD.replace('break:\n  - exec: {on: worker-1, run: "true"}',
                        "break:\n  - apply: missing.yaml")
    assert "exercise.yaml:8: break[0].apply: no such file in " in error_of(tmp_path, text)


def test_the_id_must_be_the_folder_name(tmp_path):
    assert "id: must be lower-case letters, digits and dashes, and the same as the folder's " \
           "name (demo)" in error_of(tmp_path, GOOD.replace("id: demo", "id: other"))


def test_check_arguments_are_checked(tmp_path):
    text = GOOD.replace("expect: {body: web}", "expect: {error: reset}")
    assert "check[0].http.expect.error: must be one of: refused, timeout" in \
        error_of(tmp_path, text)
    text = GOOD.replace('to: "${svc.web.ip}"', 'to: "${svc.web.ip}", prot: 80')
    assert "check[0].http.prot: unknown field" in error_of(tmp_path / "again", text)


def test_agent_config_settings_are_checked_against_the_agents_keys(tmp_path):
    text = GOOD.replace('break:\n  - exec: {on: worker-1, run: "true"}',
                        "break:\n  - agent-config: {nodes: all, set: {flanel-iface: eth1}}")
    assert "break[0].agent-config.set.flanel-iface: unknown setting (expected one of: " \
           "flannel-iface, disable-kube-proxy)" in error_of(tmp_path, text)


def test_a_wait_for_holds_a_check(tmp_path):
    text = GOOD.replace('break:\n  - exec: {on: worker-1, run: "true"}',
                        'break:\n  - wait: {for: {udp: {from: c, to: "1.2.3.4", port: 53}}}')
    step = load_exercise(write_exercise(tmp_path, text)).break_steps[0]
    assert step.kind == "wait" and step.args["for"].kind == "udp"
    text = text.replace("port: 53", "port: 0")
    assert "break[0].wait.for.udp.port: must be an integer from 1 to 65535" in \
        error_of(tmp_path / "again", text)


# -- the catalog search path ---------------------------------------------------------------


def test_exercises_are_found_on_the_search_path(tmp_path, monkeypatch):
    write_exercise(tmp_path / "mine", GOOD)
    monkeypatch.setenv(PATH_ENV, str(tmp_path / "mine"))
    assert find_exercise("demo").folder == tmp_path / "mine" / "demo"
    with pytest.raises(ExerciseError, match="no exercise 'nope'"):
        find_exercise("nope")


def test_two_exercises_with_one_id_are_an_error_naming_both(tmp_path):
    write_exercise(tmp_path / "a", GOOD)
    write_exercise(tmp_path / "b", GOOD)
    with pytest.raises(ExerciseError, match="exercise id 'demo' is also defined in"):
        load_catalog([str(tmp_path / "a"), str(tmp_path / "b")])


# -- ${...} values ---------------------------------------------------------------------------


class FakeObjects:
    def __init__(self, objs: dict[tuple[str, str | None, str], dict[str, Any]]) -> None:
        self.objs = objs

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objs.get((kind, namespace, name))


def fake_lab() -> Any:
    backend = '{"VNI":1,"VtepMAC":"aa:bb:cc:00:11:22"}'
    node = {"metadata": {"name": "worker-2", "annotations": {
                "flannel.alpha.coreos.com/backend-data": backend}},
            "spec": {"podCIDR": "10.244.2.0/24"}}
    pod = {"metadata": {"name": "client", "uid": "u-1"}, "spec": {"nodeName": "worker-1"},
           "status": {"podIP": "10.244.1.2"}}
    svc = {"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.20"}}
    objects = FakeObjects({("Node", None, "worker-2"): node, ("Pod", "default", "client"): pod,
                           ("Service", "default", "web"): svc})
    config = SimpleNamespace(dns_cluster_ip="10.96.0.10", underlay_mtu=1500, pod_mtu=1450,
                             pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")
    return SimpleNamespace(name="lab", objects=objects, config=config,
                           node_ip=lambda n: {"worker-2": "192.168.10.4"}[n])


def test_values_are_read_from_the_lab_when_a_step_runs():
    values = LabValues(fake_lab(), {"old_ip": "10.244.2.9"})
    text = ("${pod.client.ip} ${pod.client.node} ${svc.web.ip} ${node.worker-2.ip} "
            "${node.worker-2.pod_cidr} ${node.worker-2.flannel_ip} ${node.worker-2.vtep_mac} "
            "${lab.overlay_mtu} ${saved.old_ip}")
    assert values.resolve(text) == ("10.244.1.2 worker-1 10.96.0.20 192.168.10.4 "
                                    "10.244.2.0/24 10.244.2.0 aa:bb:cc:00:11:22 1450 10.244.2.9")
    assert values.resolve({"run": ["${svc.web.ip}"]}) == {"run": ["10.96.0.20"]}
    assert values.resolve("${pod.client.veth}").startswith("veth")


def test_a_value_that_does_not_resolve_names_the_step():
    values = LabValues(fake_lab())
    with pytest.raises(ExerciseError, match=r"x.yaml:3: check\[0\]: \$\{svc.nope.ip\} does not "
                                            r"resolve in lab lab: no Service default/nope"):
        values.resolve("${svc.nope.ip}", "x.yaml:3: check[0]")
    with pytest.raises(ExerciseError, match="saved.missing"):
        values.resolve("${saved.missing}")


# -- checks decide on what came back ---------------------------------------------------------


def answers(*replies: str | type[OSError]):
    it = iter(replies)

    def ask() -> str:
        reply = next(it)
        if isinstance(reply, type):
            raise reply()
        return reply
    return ask


def test_every_request_must_be_answered_as_wanted():
    ok, evidence = _repeat("GET x", 3, answers("a", "b", "a"), lambda b: b in "ab", 2)
    assert ok and evidence == "GET x: answered (a x2, b)"
    ok, evidence = _repeat("GET x", 3, answers("a", TimeoutError), lambda b: True, 2)
    assert not ok and evidence == "GET x: no answer within 2s (request 2 of 3)"
    ok, evidence = _repeat("GET x", 1, answers("c"), lambda b: b == "a", 2)
    assert not ok and evidence == "GET x: unexpected answer 'c' (request 1 of 1)"


def test_an_expected_failure_must_be_that_failure():
    ok, evidence = _repeat("GET x", 2, answers(ConnectionRefusedError, ConnectionRefusedError),
                           lambda b: True, 1, "refused")
    assert ok and evidence == "GET x: refused, as the symptom says (2 of 2)"
    ok, evidence = _repeat("GET x", 1, answers(TimeoutError), lambda b: True, 1, "refused")
    assert not ok and "no answer within 1s, expected it to be refused" in evidence
    ok, _ = _repeat("GET x", 1, answers("hello"), lambda b: True, 1, "timeout")
    assert not ok


# -- progress and the running exercise --------------------------------------------------------


def test_progress_counts_hints_and_a_solve_of_ones_own(tmp_path):
    path = tmp_path / "state" / "exercises.json"
    progress = Progress(path)
    progress.started("a")
    progress.hint_seen("a", 2)
    progress.hint_seen("a", 1)
    assert progress.checked("a", False) is False
    assert progress.checked("a", True) is True
    assert progress.checked("a", True) is False  # solved once
    progress.started("b")
    progress.revealed("b")
    assert progress.checked("b", True) is False  # the reference solution does not count
    progress.save()
    again = Progress(path)
    assert again.entry("a").hints_seen == 2 and again.entry("a").solved_at is not None
    assert again.entry("b").revealed and again.entry("b").solved_at is None
    assert json.loads(path.read_text())["exercises"]["a"]["attempts"] == 1


def test_the_running_exercise_is_recorded_in_the_labs_state_dir(tmp_path):
    state = StateDir("lab", str(tmp_path))
    state.create()
    assert read_active(state) is None
    write_active(state, Active("demo", "/x/demo", 1.0, {"old_ip": "10.244.2.9"}))
    assert read_active(state) == Active("demo", "/x/demo", 1.0, {"old_ip": "10.244.2.9"})
    write_active(state, None)
    assert read_active(state) is None
