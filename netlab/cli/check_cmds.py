"""`knetlab check svc [ns/]NAME`: walk the Debug Services steps, pass/fail per step.

Thin: resolves the lab, calls netlab.check.svc.check_service (the function a
script, a test or an exercise checker calls the same way) and prints the
report. Exit status 0 when no step failed, 1 when one did, so the command can
decide a troubleshooting exercise or a CI job.
"""

from __future__ import annotations

import os
import sys

import click

from netlab.check.model import DEFAULT_TIMEOUT
from netlab.errors import NetlabError


@click.group("check")
def check() -> None:
    """Walk kubernetes.io's troubleshooting steps against the lab, with evidence."""


@check.command("svc")
@click.argument("service", metavar="[NS/]NAME")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--from", "source", default=None, metavar="[NS/]POD",
              help="send traffic from this pod (default: a pod the Service does not select)")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True,
              help="seconds to wait for each connection or datagram")
@click.option("--name", "lab_name", default=None, help="lab name (optional when one lab runs)")
def svc(service: str, namespace: str, source: str | None, output: str, timeout: float,
        lab_name: str | None) -> None:
    """The Debug Services walk for one Service: objects, endpoints, kube-proxy, traffic.

    Steps run from cause to symptom; a step whose prerequisite failed is
    skipped, so the first FAIL is the place to start. Exit status 1 if any
    step failed.
    """
    from netlab.check.render import render_json, render_text
    from netlab.check.svc import check_service
    from netlab.lab.lifecycle import find_lab
    from netlab.lab.session import RunningLab

    if os.geteuid() != 0:
        raise NetlabError("knetlab needs root (network namespaces): run it with sudo")
    report = check_service(RunningLab(find_lab(lab_name)), service, namespace, source, timeout)
    if output == "json":
        click.echo(render_json(report))
    else:
        click.echo(render_text(report, color=sys.stdout.isatty()))
    sys.exit(0 if report.ok else 1)


COMMANDS = [check]
