"""Service commands: `knetlab proxy rules NODE` and `knetlab describe KIND [NAME...]`.

`proxy rules` reads one node's kube-proxy rules with their packet counters
(netlab.proxy.rules_view, or its nftables and IPVS twins) and prints them
grouped by the Service they implement; `describe` prints objects in kubectl's
describe layout (netlab/cli/describe.py). Both are thin: data comes from the
proxy and store APIs a script can call the same way.
"""

from __future__ import annotations

import os
import shutil
import sys

import click
from rich.console import Console

from netlab.cli.remote import store_option
from netlab.errors import NetlabError

DESCRIBABLE = ("services", "pods", "nodes", "endpointslices")


def _lab(lab_name: str | None):  # type: ignore[no-untyped-def]
    from netlab.cli.remote import lab_objects  # a local lab, or describe's remote --store

    return lab_objects(lab_name)


def _console() -> Console:
    """A console as wide as the terminal, or wide enough not to wrap rules when piped."""
    width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 1000
    return Console(width=max(width, 100), soft_wrap=False, highlight=False)


@click.group("proxy")
def proxy() -> None:
    """Look at what the proxy (kube-proxy's role in each node agent) programmed."""


@proxy.command("rules")
@click.argument("node")
@click.option("--service", "service", default=None, metavar="[NS/]NAME",
              help="only this Service (namespace default if not given)")
@click.option("--name", "lab_name", default=None, help="lab name (optional when one lab runs)")
def rules(node: str, service: str | None, lab_name: str | None) -> None:
    """A node's kube-proxy rules, grouped by Service, with packet counters."""
    from netlab.cli.rules_render import rules_tree
    from netlab.lab.targets import guest_nodes, in_guest

    if os.geteuid() != 0:
        raise NetlabError("knetlab needs root (network namespaces): run it with sudo")
    state, objects = _lab(lab_name)
    lab = state.read_lab()
    nodes = {n["name"]: n.get("netns") for n in lab["nodes"]}
    if node not in nodes:
        raise NetlabError(f"no node {node!r} (nodes: {', '.join(nodes)})")
    if node in guest_nodes(lab):
        raise NetlabError(in_guest(f"node {node}"))
    if not nodes[node]:  # never read the host's own tables by mistake
        raise NetlabError(f"node {node} has no network namespace on this host; "
                          "run the command inside the node")
    mode = state.read_config().proxy_mode
    if service and "/" not in service:
        service = f"default/{service}"
    from netlab.proxy.rules_view import read_rules

    # IPVS keeps no names: the Services say which virtual server is whose.
    services = objects.list("Service")[0] if mode == "ipvs" else ()
    view = read_rules(nodes[node], service=service, mode=mode, services=services)
    if service and service not in view.services:
        click.echo(f"no kube-proxy rules for {service} on {node} (no such Service, or the "
                   "proxy ignores it: headless, service-proxy-name label, no ClusterIP)")
        return
    _console().print(rules_tree(view, node, mode))


@click.command("describe")
@click.argument("resource")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--name", "lab_name", default=None, help="lab name (optional when one lab runs)")
@store_option
def describe(resource: str, names: tuple[str, ...], namespace: str,
             lab_name: str | None) -> None:
    """Show objects as kubectl describe does: svc, pod, node, endpointslice."""
    from netlab.api.keys import kind_info
    from netlab.cli import describe as text

    info = kind_info(resource)
    if info.resource not in DESCRIBABLE:
        raise NetlabError(f"describe knows {', '.join(DESCRIBABLE)}; not {info.resource}")
    _, objects = _lab(lab_name)
    scope = namespace if info.namespaced else None
    items, _ = objects.list(info.kind, scope)
    if names:
        by_name = {o["metadata"]["name"]: o for o in items}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise NetlabError(f'{info.resource} "{missing[0]}" not found')
        items = [by_name[n] for n in names]
    elif not items:
        where = f" in {scope} namespace" if scope else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    if info.kind == "Service":
        slices, _ = objects.list("EndpointSlice", scope)
        out = [text.describe_service(obj, [
            s for s in slices if (s["metadata"].get("labels") or {}).get(
                "kubernetes.io/service-name") == obj["metadata"]["name"]]) for obj in items]
    elif info.kind == "Node":
        pods, _ = objects.list("Pod")
        out = [text.describe_node(obj, pods) for obj in items]
    elif info.kind == "Pod":
        out = [text.describe_pod(obj) for obj in items]
    else:
        out = [text.describe_endpointslice(obj) for obj in items]
    click.echo("\n\n".join(t.rstrip("\n") for t in out))


COMMANDS = [proxy, describe]
