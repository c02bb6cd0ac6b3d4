"""Host-namespace commands (trace, capture, checks) name a VM lab's guests instead of failing
somewhere inside with a missing namespace."""

from __future__ import annotations

import json

import pytest

from netlab.errors import NetlabError
from netlab.lab.state import StateDir
from netlab.lab.targets import resolve_target
from netlab.store import open_store
from netlab.store.objects import Objects
from tests.integration.labs import pod


@pytest.fixture
def vm_lab(tmp_path):
    state = StateDir("vmlab", root=str(tmp_path))
    state.create()
    nodes = [{"name": n, "role": "worker", "address": "192.168.10.3",
              "netns": f"nl-vmlab-{n}", "vm": f"{state.path}/vms/{n}"} for n in ("w1", "w2")]
    with open(state.lab_file, "w") as f:
        json.dump({"name": "vmlab", "nodes": nodes,
                   "ext": {"address": "192.168.10.100", "netns": "nl-vmlab-ext"}}, f)
    objects = Objects(open_store(f"sqlite://{tmp_path}/store.db"))
    objects.create(pod("web", "w2") | {"metadata": {"name": "web", "namespace": "default"}})
    return state, objects


def test_a_guest_node_or_its_pod_is_named_as_inside_a_vm(vm_lab):
    state, objects = vm_lab
    for target, what in (("w1", "w1 is inside a VM"), ("web", "pod default/web is inside a VM")):
        with pytest.raises(NetlabError, match=what + r".*knetlab exec NODE"):
            resolve_target(state, objects, target)


def test_ext_stays_a_host_namespace(vm_lab):
    state, objects = vm_lab
    assert resolve_target(state, objects, "ext") == "nl-vmlab-ext"
