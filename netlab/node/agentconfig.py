"""The node agent's own configuration file, read at every start, as k3s reads its config.yaml.

The agent bundles kubelet, flannel and kube-proxy the way k3s does, and k3s takes
per-node settings from `/etc/rancher/k3s/config.yaml`, whose keys are its command-line
flags. Here the file is `nodes/<node>/config.yaml` in the lab's state dir (on a real
machine, under the agent's `--state-dir`), with the same key names:

    flannel-iface: eth1          # k3s --flannel-iface (flanneld --iface)
    disable-kube-proxy: true     # k3s --disable-kube-proxy

The file is optional (absent means every default). It is read when the agent
starts, so a change takes effect at the next restart, as with `systemctl restart
k3s-agent`. An unknown key or a wrong type stops the agent with an error naming the
file and the key: a misspelt setting must not silently fall back to a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from netlab.errors import LocatedError

FILE_NAME = "config.yaml"


class AgentConfigError(LocatedError):
    """The agent's config file is invalid."""


@dataclass(frozen=True)
class AgentSettings:
    """What the file can change; the defaults are the agent's behaviour without it."""

    flannel_iface: str | None = None  # None: the interface of the node's address
    disable_kube_proxy: bool = False


# key in the file -> (field, expected type)
_KEYS: dict[str, tuple[str, type]] = {
    "flannel-iface": ("flannel_iface", str),
    "disable-kube-proxy": ("disable_kube_proxy", bool),
}


def config_path(node_dir: str) -> str:
    """Where a node's file lives: the node's directory in the state dir."""
    return os.path.join(node_dir, FILE_NAME)


def parse(data: Any, source: str) -> AgentSettings:
    """Settings from the file's parsed YAML (None for an empty file)."""
    if data is None:
        return AgentSettings()
    if not isinstance(data, dict):
        raise AgentConfigError("must be a mapping of setting: value", file=source)
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise AgentConfigError(f"unknown setting (expected one of: {', '.join(_KEYS)})",
                                   file=source, field=str(key))
        name, kind = _KEYS[key]
        if not isinstance(value, kind):
            raise AgentConfigError(f"must be a {kind.__name__}, got {value!r}", file=source,
                                   field=key)
        fields[name] = value
    return AgentSettings(**fields)


def _read(path: str) -> Any:
    """The file's parsed YAML; None when the file does not exist or is empty."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"not valid YAML: {exc}", file=path) from None


def load(path: str) -> AgentSettings:
    """The settings in `path`; every default when the file does not exist."""
    return parse(_read(path), path)


def write(path: str, values: dict[str, Any]) -> None:
    """Write settings (file keys -> values), checked first; an empty dict removes the file."""
    parse(values, path)
    if not values:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(values, f, default_flow_style=False)


def read_values(path: str) -> dict[str, Any]:
    """The file's key -> value mapping ({} when absent), checked, for editing it."""
    data = _read(path)
    parse(data, path)
    return dict(data or {})
