"""Whatever a user types, parsing either succeeds or raises a LocatedError: never a
traceback from some other exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab.api.objects import load_manifests, parse_manifests, validate_object
from netlab.errors import LocatedError
from netlab.lab.labfile import lab_from_data, load_lab

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Words from the schemas, so random data often reaches the deeper validators.
KEYS = ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "generateName", "spec",
        "status", "containers", "image", "ports", "containerPort", "protocol", "port",
        "targetPort", "nodePort", "readinessProbe", "httpGet", "tcpSocket", "exec", "command",
        "path", "selector", "matchLabels", "matchExpressions", "key", "operator", "values",
        "template", "replicas", "type", "clusterIP", "sessionAffinity", "sessionAffinityConfig",
        "clientIP", "timeoutSeconds", "externalName", "externalIPs", "items", "nodes", "role",
        "address", "network", "podCIDR", "serviceCIDR", "underlay", "cidr", "gateway", "vxlan",
        "proxy", "mode", "syncPeriod", "dns", "ext", "manifests", "store", "backend",
        "endpoints", "nodeSubnetLen", "<<"]
WORDS = ["v1", "apps/v1", "Pod", "Service", "Deployment", "Namespace", "List", "web",
         "ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "None", "ClientIP", "TCP",
         "UDP", "In", "NotIn", "Exists", "DoesNotExist", "http", "10.96.0.10", "10.244.0.0/16",
         "192.168.10.0/24", "control-plane", "worker", "vxlan", "host-gw", "30s", "etcd",
         "demo/web.yaml", "", "-", "/", "\x00", "é", "9" * 30]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=12) | st.sampled_from(WORDS))
data = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children,
                                        max_size=5)),
    max_leaves=25)

FRAGMENTS = ["apiVersion: v1\n", "kind: Pod\n", "kind: Service\n", "metadata:\n", "  name: x\n",
             "spec:\n", "  containers:\n", "    - name: c\n", "      image: i\n", "ports: [",
             "{port: 80}", "]", "- ", "  ", ": ", ", ", "&a ", "*a", "!!str ", "!!binary ",
             "!foo ", "{", "}", "[", "]", "---\n", "...\n", "\n", "<<: *a\n", "? ", "'", '"',
             "# c\n", "|\n", ">\n", "\t", "name: lab\n", "nodes:\n", "role: worker\n",
             "%YAML 1.1\n",
             "\ufeff", "\x85", "\u2028", "0x1F", "1:20", "2024-01-01", ".inf", "~", "yes"]
yamlish = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=30).map("".join)


def mutate(draw: Any, obj: Any) -> Any:
    """Replace, delete or add one value somewhere inside `obj`."""
    obj = copy.deepcopy(obj)
    node = obj
    while True:
        if isinstance(node, dict):
            children = list(node)
        elif isinstance(node, list):
            children = list(range(len(node)))
        else:
            return obj
        if not children:
            return obj
        child_key = draw(st.sampled_from(children))
        child = node[child_key]
        if isinstance(child, dict | list) and child and draw(st.integers(0, 3)):
            node = child
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[child_key] = draw(data)
        elif action == "delete":
            del node[child_key]
        elif isinstance(node, dict):
            node[draw(st.sampled_from(KEYS))] = draw(data)
        else:
            node.append(draw(data))
        return obj


BASE_OBJECTS = [o.obj for o in load_manifests(TOPOLOGIES / "demo")] + [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
     "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "externalIPs": ["1.2.3.4"],
              "ports": [{"port": 80, "nodePort": 30080, "name": "a"},
                        {"port": 53, "protocol": "UDP", "name": "b"}]}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "labels": {"a": "b"}}},
]
with open(TOPOLOGIES / "default.yaml") as f:
    BASE_LAB = yaml.safe_load(f)


def accepts_or_locates(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except LocatedError as exc:
        assert str(exc)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder for generated lab files, where `demo/` resolves as next to the real ones."""
    path = tmp_path_factory.mktemp("fuzz")
    (path / "demo").symlink_to(TOPOLOGIES / "demo")
    return path


@FUZZ
@given(text=yamlish | st.text(max_size=200))
def test_any_text_as_manifests(scratch, text):
    accepts_or_locates(parse_manifests, text, "fuzz.yaml")
    path = scratch / "manifest.yaml"
    path.write_text(text, encoding="utf-8")
    accepts_or_locates(load_manifests, path)


@FUZZ
@given(text=yamlish | st.text(max_size=200))
def test_any_text_as_a_lab_file(scratch, text):
    path = scratch / "lab.yaml"
    path.write_text(text, encoding="utf-8")
    accepts_or_locates(load_lab, path)


@FUZZ
@given(value=data)
def test_any_data_as_an_object(value):
    accepts_or_locates(validate_object, value, "fuzz")


@FUZZ
@given(value=data)
def test_any_data_as_a_lab(scratch, value):
    accepts_or_locates(lab_from_data, value, base_dir=scratch)


@FUZZ
@given(st.data())
def test_objects_with_one_thing_changed(draw):
    obj = mutate(draw.draw, draw.draw(st.sampled_from(BASE_OBJECTS)))
    accepts_or_locates(validate_object, obj, "fuzz")
    text = yaml.safe_dump(obj, allow_unicode=True)
    accepts_or_locates(parse_manifests, text, "fuzz.yaml")


@FUZZ
@given(st.data())
def test_labs_with_one_thing_changed(scratch, draw):
    lab = mutate(draw.draw, BASE_LAB)
    accepts_or_locates(lab_from_data, lab, base_dir=TOPOLOGIES)
    path = scratch / "mutated.yaml"
    path.write_text(yaml.safe_dump(lab, allow_unicode=True), encoding="utf-8")
    accepts_or_locates(load_lab, path)
