"""Which store a `get`/`apply`/`delete`/`describe` talks to: a local lab's, or a remote one.

`--store etcd://HOST:2379` (or `KNETLAB_STORE`) points the command at a cluster whose
control plane runs elsewhere (the Vagrant lab, machines joined by etcd), the way a
kubeconfig points kubectl at an API server; no local lab state dir is involved.
Without either, a lab running on this host is used; and on a cluster machine with no
local lab, the store its units use (/etc/knetlab/knetlab.env), as kubeadm leaves
/etc/kubernetes/admin.conf on the control plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from netlab.errors import NetlabError

if TYPE_CHECKING:  # imported when used: every knetlab command loads this module
    from netlab.api.cluster import ClusterConfig
    from netlab.store.objects import Objects

STORE_ENV = "KNETLAB_STORE"
ENV_FILE = "/etc/knetlab/knetlab.env"
_META = "knetlab.store"


def _remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta[_META] = value or ""  # present: this command can talk to a remote store


store_option = click.option(
    "--store", envvar=STORE_ENV, expose_value=False, callback=_remember, metavar="URL",
    help=f"a cluster's store instead of a local lab: etcd://HOST:2379 (env {STORE_ENV})")


def env_file_store(path: str | None = None) -> str | None:
    """KNETLAB_STORE from a systemd environment file (KEY=value lines), if there."""
    try:
        with open(path or ENV_FILE) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == STORE_ENV and value:
            return value.strip().strip('"\'')
    return None


class RemoteCluster:
    """What the commands need of a lab, from the store alone."""

    def __init__(self, url: str, objects: Objects) -> None:
        self.url = url
        self.objects = objects

    def read_config(self) -> ClusterConfig:
        from netlab.store import clusterconfig

        config = clusterconfig.read(self.objects.store)
        if config is None:
            raise NetlabError(f"the store at {self.url} holds no cluster config "
                              f"({clusterconfig.KEY}): is a control plane running there "
                              "(knetlab control-plane)?")
        return config


def remote_url(lab_name: str | None) -> str | None:
    """The remote store this command was pointed at, or None for a local lab."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or _META not in ctx.meta:
        return None  # a command that only works on a local lab
    if ctx.meta[_META]:
        if lab_name is not None:
            raise click.UsageError("give either --name (a local lab) or --store, not both")
        return str(ctx.meta[_META])
    from netlab.lab.state import running_labs

    if lab_name is None and not running_labs():
        return env_file_store()
    return None


def lab_objects(lab_name: str | None) -> tuple[Any, Objects]:
    """(the lab or remote cluster, its objects); either has read_config()."""
    from netlab.store import open_store
    from netlab.store.objects import Objects

    url = remote_url(lab_name)
    if url is not None:
        objects = Objects(open_store(url))
        return RemoteCluster(url, objects), objects
    from netlab.lab.lifecycle import find_lab

    state = find_lab(lab_name)
    return state, Objects(open_store(state.store_url))
