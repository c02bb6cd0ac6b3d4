"""Which store a lab uses and how each of its processes reaches it (no root needed)."""

from __future__ import annotations

import json

import pytest

from netlab.lab.labfile import Lab
from netlab.lab.lifecycle import lab_info
from netlab.lab.plan import plan_from_lab
from netlab.lab.state import StateDir
from netlab.lab.supervisor import components
from netlab.store.etcd_server import etcd_binary


def _plan(store: dict, name: str = "lab"):
    return plan_from_lab(Lab.model_validate({"name": name, "store": store}))


def _state(tmp_path, store: dict) -> StateDir:
    state = StateDir("lab", str(tmp_path))
    state.create()
    with open(state.lab_file, "w") as f:
        json.dump(lab_info(_plan(store)), f)
    return state


def test_sqlite_lab_keeps_its_store_in_the_state_dir(tmp_path):
    state = _state(tmp_path, {"backend": "sqlite"})
    assert state.store_url == state.node_store_url == f"sqlite://{state.path}/store.db"


def test_lab_etcd_runs_in_the_control_plane_node_and_the_host_side_dials_from_there(
        tmp_path):
    info = lab_info(_plan({"backend": "etcd"}))["store"]
    assert info["member"] == {"node": "control-plane", "netns": "nl-lab-control-plane",
                              "address": "192.168.10.2"}
    state = _state(tmp_path, {"backend": "etcd"})
    assert state.store_url == "etcd://192.168.10.2:2379?netns=nl-lab-control-plane"
    assert state.node_store_url == "etcd://192.168.10.2:2379"


def test_external_etcd_endpoints_are_used_as_given_by_every_process(tmp_path):
    state = _state(tmp_path, {"backend": "etcd",
                              "endpoints": ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]})
    assert state.store_url == state.node_store_url == "etcd://10.0.0.5:2379,10.0.0.6:2379"
    assert "member" not in state.read_lab()["store"]


@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")
def test_supervisor_starts_the_labs_etcd_first_inside_the_control_plane_node(tmp_path):
    state = _state(tmp_path, {"backend": "etcd"})
    first = components(state)[0]
    role, argv = first.role, first.argv
    assert role == "etcd"
    assert argv[:2] == ["nsenter", "--net=/run/netns/nl-lab-control-plane"]
    assert argv[argv.index("--listen-client-urls") + 1] == "http://192.168.10.2:2379"
    assert argv[argv.index("--data-dir") + 1] == state.etcd_data_dir


def test_sqlite_lab_has_no_store_process(tmp_path):
    state = _state(tmp_path, {"backend": "sqlite"})
    assert "etcd" not in [child.role for child in components(state)]
