"""`knetlab`: bring labs up and down, look at them like kubectl, run commands inside.

Every command is a thin layer over the lab/, control/ and store/ APIs, which a
Python script or the pytest plugin calls the same way. Errors of the project's
types print as one line (file, field, reason) and exit 1, never as a traceback.
"""

from __future__ import annotations

import os
import sys
import time

import click

from netlab.cli import components
from netlab.cli.remote import store_option
from netlab.cli.render import structured, table
from netlab.errors import NetlabError

ALIASES = {"po": "pods", "no": "nodes", "ns": "namespaces", "svc": "services"}


class Group(click.Group):
    """Turns the project's errors into one clean line and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NetlabError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kube-netlab", prog_name="knetlab")
def main() -> None:
    """kube-netlab: Kubernetes service networking on the real Linux kernel."""


for command in components.COMMANDS:
    main.add_command(command)

name_option = click.option("--name", "lab_name", default=None,
                           help="lab name (optional when one lab runs)")


def _root() -> None:
    if os.geteuid() != 0:
        raise NetlabError("knetlab needs root (network namespaces): run it with sudo")


@main.command()
@click.argument("lab_file", default="topologies/default.yaml", type=click.Path())
@click.option("--name", "lab_name", default=None, help="run the lab under another name")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for Ready")
def up(lab_file: str, lab_name: str | None, timeout: float) -> None:
    """Bring a lab up (default: topologies/default.yaml) and wait until every pod is Ready."""
    from netlab.cli.progress import UpProgress, print_summary
    from netlab.lab.plan import plan_from_file

    _root()
    started = time.monotonic()
    plan = plan_from_file(lab_file, lab_name)
    from netlab.lab.capacity import pods_in, too_many_pods

    crowded = too_many_pods(pods_in(plan.manifests, plan.config.dns_replicas
                                    if plan.config.dns_enabled else 0))
    if crowded:
        click.secho(f"warning: {crowded}", fg="yellow", err=True)
    from netlab.control.apply import apply_objects, bootstrap
    from netlab.lab.lifecycle import up as lab_up

    def apply(objects, objs):  # type: ignore[no-untyped-def]
        bootstrap(objects, plan.config)
        apply_objects(objects, objs, plan.config)

    with UpProgress() as progress:
        state = lab_up(plan, apply, progress.update, timeout)
    print_summary(state, time.monotonic() - started)


@main.command()
@name_option
def down(lab_name: str | None) -> None:
    """Stop a lab and remove everything it created."""
    from netlab.lab.lifecycle import down as lab_down

    _root()
    started = time.monotonic()
    report = lab_down(lab_name)
    click.echo(f"removed {len(report.namespaces)} namespaces, stopped "
               f"{len(report.processes)} processes in {time.monotonic() - started:.1f}s")


@main.command()
@name_option
@click.option("--all", "all_labs", is_flag=True, help="every lab with a state dir")
def clean(lab_name: str | None, all_labs: bool) -> None:
    """Remove what a lab's state dir recorded (after a crash or kill -9)."""
    from netlab.lab.cleanup import clean as clean_lab
    from netlab.lab.state import StateDir, running_labs

    _root()
    labs = running_labs() if all_labs else [lab_name] if lab_name else running_labs()[:1]
    if not labs:
        click.echo("nothing to clean")
        return
    for lab in labs:
        report = clean_lab(StateDir(lab))
        click.echo(f"{lab}: removed {len(report.namespaces)} namespaces, "
                   f"{len(report.files)} pod file dirs; stopped {len(report.processes)} "
                   "processes")


@main.command()
@name_option
def status(lab_name: str | None) -> None:
    """What runs in the lab: processes, nodes, pods."""
    from netlab.cli.progress import print_summary
    from netlab.lab.lifecycle import find_lab

    print_summary(find_lab(lab_name), None)


def _objects(lab_name: str | None):  # type: ignore[no-untyped-def]
    from netlab.cli.remote import lab_objects  # a local lab, or a remote --store

    return lab_objects(lab_name)


@main.command()
@click.argument("resource")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]))
@click.option("-l", "--selector", default=None, help="label selector, e.g. app=web")
@name_option
@store_option
def get(resource: str, names: tuple[str, ...], namespace: str, all_namespaces: bool,
        output: str | None, selector: str | None, lab_name: str | None) -> None:
    """Show objects like kubectl get (pods, nodes, namespaces, services, ...)."""
    from netlab.api.keys import kind_info
    from netlab.api.selectors import matches, parse_selector

    info = kind_info(ALIASES.get(resource, resource))
    _, objects = _objects(lab_name)
    scope = None if all_namespaces or not info.namespaced else namespace
    items, _ = objects.list(info.kind, scope)
    if names:
        missing = set(names) - {o["metadata"]["name"] for o in items}
        if missing:
            raise NetlabError(f'{info.resource} "{sorted(missing)[0]}" not found')
        items = [o for o in items if o["metadata"]["name"] in names]
    if selector:
        wanted = parse_selector(selector)
        items = [o for o in items if matches(wanted, o["metadata"].get("labels") or {})]
    if output in ("yaml", "json"):
        click.echo(structured(items, output, single=len(names) == 1))
    elif output == "name":
        click.echo("\n".join(f"{info.singular}/{o['metadata']['name']}" for o in items))
    elif not items:
        where = "" if scope is None else f" in {scope} namespace"
        click.echo(f"No resources found{where}.", err=True)
    else:
        click.echo(table(info.kind, items, output == "wide",
                         all_namespaces and info.namespaced))


def _load(files: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from netlab.api.objects import check_unique, load_manifests

    loaded = [obj for f in files for obj in load_manifests(f)]
    check_unique(loaded)
    for obj in loaded:
        for note in obj.notes:
            click.secho(f"note: {note}", fg="yellow", err=True)
    return loaded


@main.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, type=click.Path())
@name_option
@store_option
def apply(files: tuple[str, ...], lab_name: str | None) -> None:
    """Create or update objects from manifest files."""
    from netlab.control.apply import apply_objects

    loaded = _load(files)
    state, objects = _objects(lab_name)
    for result in apply_objects(objects, [o.obj for o in loaded], state.read_config()):
        click.echo(str(result))


@main.command()
@click.option("-f", "--filename", "files", multiple=True, type=click.Path())
@click.argument("args", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
@name_option
@store_option
def delete(files: tuple[str, ...], args: tuple[str, ...], namespace: str,
           lab_name: str | None) -> None:
    """Delete objects named in files (-f) or as `RESOURCE NAME...`."""
    from netlab.api.keys import kind_info
    from netlab.control.apply import delete_object

    _, objects = _objects(lab_name)
    targets: list[tuple[str, str | None, str]] = []
    if files:
        targets = [(o.kind, o.namespace, o.name) for o in _load(files)]
    elif len(args) >= 2:
        info = kind_info(ALIASES.get(args[0], args[0]))
        targets = [(info.kind, namespace if info.namespaced else None, n) for n in args[1:]]
    else:
        raise NetlabError("say what to delete: -f FILE, or RESOURCE NAME")
    for kind, ns, name in targets:
        click.echo(str(delete_object(objects, kind, ns, name)))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-n", "--namespace", default="default", show_default=True)
@name_option
def exec(target: str, command: tuple[str, ...], namespace: str, lab_name: str | None) -> None:
    """Run COMMAND in a pod (`[ns/]pod`), a node, or `ext`, like `ip netns exec`."""
    from netlab.lab.targets import resolve_target
    from netlab.lab.vm.targets import guest_place

    _root()
    state, objects = _objects(lab_name)
    argv = list(command[1:] if command and command[0] == "--" else command)
    guest = guest_place(state, objects, target, namespace)  # a VM lab's node or pod
    if guest is not None:
        rc, out, err = guest.run(argv, timeout=3600)
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(rc)
    netns_name = resolve_target(state, objects, target, namespace)
    os.execvp("ip", ["ip", "netns", "exec", netns_name, *argv])


@main.command()
@click.argument("component")
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", default=50, show_default=True)
@name_option
def logs(component: str, follow: bool, tail: int, lab_name: str | None) -> None:
    """Show a component's log: control-plane, agent-NODE, runtime-NODE, supervisor."""
    from netlab.lab.lifecycle import find_lab

    state = find_lab(lab_name)
    path = state.log_path(component)
    if not os.path.exists(path):
        choices = sorted(f[:-4] for f in os.listdir(os.path.dirname(path)))
        raise NetlabError(f"no component {component!r}; choose from {', '.join(choices)}")
    args = ["tail", "-n", str(tail)] + (["-F"] if follow else []) + [path]
    os.execvp("tail", args)


from netlab.cli import trace_cmds  # noqa: E402 - trace, capture, graph

for command in trace_cmds.COMMANDS:
    main.add_command(command)

from netlab.cli import svc_cmds  # noqa: E402 - proxy rules, describe

for command in svc_cmds.COMMANDS:
    main.add_command(command)

from netlab.cli import check_cmds  # noqa: E402 - check svc

for command in check_cmds.COMMANDS:
    main.add_command(command)

from netlab.cli import exercise_cmds  # noqa: E402 - exercise, restart

for command in exercise_cmds.COMMANDS:
    main.add_command(command)
