"""`knetlab exercise ...`: troubleshooting exercises on a really broken lab; `knetlab restart`.

    knetlab exercise list                 the catalog, with your progress
    knetlab exercise start ID             bring the lab up (or reuse it) and break it
    knetlab exercise status               what runs, its story and symptom, hints seen
    knetlab exercise hint [N]             the next hint (or hint N)
    knetlab exercise check                does it work now? (exit 0 when it does)
    knetlab exercise solve                apply the reference solution
    knetlab exercise reset                back to a healthy lab
    knetlab restart agent-worker-1        restart a component, as systemctl restart would

The work is in netlab/exercises/; this module parses and prints.
"""

from __future__ import annotations

import contextlib
import os
import time

import click

from netlab.errors import NetlabError

name_option = click.option("--name", "lab_name", default=None,
                           help="lab name (default: the exercise's lab, or the one running "
                                "an exercise)")
path_option = click.option("--path", "paths", multiple=True, type=click.Path(exists=True),
                           help="also look for exercises in this folder (repeatable; env "
                                "KNETLAB_EXERCISE_PATH)")


def _root() -> None:
    if os.geteuid() != 0:
        raise NetlabError("knetlab needs root (network namespaces): run it with sudo")


def _step(text: str) -> None:
    click.secho(f"  - {text}", dim=True)


def _section(title: str, text: str) -> None:
    click.secho(title, bold=True)
    for line in text.strip().splitlines():
        click.echo(f"  {line}")


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    for result in report.results:
        mark = click.style("PASS", fg="green") if result.ok else click.style("FAIL", fg="red")
        click.echo(f"{mark}  {result.title}")
        click.secho(f"      {result.evidence}", dim=True)


@click.group("exercise")
def exercise() -> None:
    """Troubleshooting exercises: a really broken cluster network to investigate and fix."""


@exercise.command("list")
@path_option
def list_(paths: tuple[str, ...]) -> None:
    """The exercises, with your progress (solved, hints seen)."""
    from netlab.exercises.catalog import load_catalog
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import read_active
    from netlab.lab.state import StateDir, running_labs

    catalog = load_catalog(paths)
    progress = Progress()
    active = {a.id: lab for lab in running_labs() if (a := read_active(StateDir(lab)))}
    rows = [("ID", "LEVEL", "STATUS", "TITLE")]
    for ident, ex in sorted(catalog.items(), key=lambda item: (item[1].difficulty, item[0])):
        entry = progress.entries.get(ident)
        if ident in active:
            status = f"running on {active[ident]}"
        elif entry and entry.solved_at:
            status = f"solved ({entry.hints_seen} hints)"
        elif entry and entry.revealed:
            status = "solution shown"
        elif entry and entry.attempts:
            status = f"started ({entry.hints_seen}/{len(ex.hints)} hints)"
        else:
            status = "-"
        rows.append((ident, "*" * ex.difficulty, status, ex.title))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
                   + "  " + row[3])
    solved = sum(1 for i in catalog if (e := progress.entries.get(i)) and e.solved_at)
    click.echo(f"\n{solved} of {len(catalog)} solved. Start one: knetlab exercise start ID")


@exercise.command()
@click.argument("ident", metavar="ID")
@name_option
@path_option
def start(ident: str, lab_name: str | None, paths: tuple[str, ...]) -> None:
    """Bring up the exercise's lab (or reuse it) and break it."""
    from netlab.exercises.catalog import find_exercise
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import ExerciseRun, ensure_lab, read_active, write_active

    _root()
    ex = find_exercise(ident, paths)
    began = time.monotonic()
    lab, fresh = ensure_lab(ex, lab_name)
    click.echo(f"lab {lab.name}: " + (f"up in {time.monotonic() - began:.1f}s" if fresh
                                      else "already running, reused"))
    previous = read_active(lab.state)
    if previous is not None:
        click.echo(f"resetting {previous.id} first")
        old = ExerciseRun.resume(lab, previous)
        old.reset()
        old.teardown()
    source = lab.info.get("source") or ""
    if not fresh and source and os.path.realpath(source) != str(ex.lab):
        click.secho(f"note: lab {lab.name} was brought up from {source}; {ex.id} is written "
                    f"for {ex.lab}", fg="yellow", err=True)
    click.echo(f"breaking the lab for {ex.id} ...")
    run = ExerciseRun(ex, lab)  # quietly: the steps would give the breakage away
    try:
        run.start()
    except NetlabError:
        click.secho("breaking failed; undoing what was done", fg="red", err=True)
        with contextlib.suppress(NetlabError):
            run.reset()
        with contextlib.suppress(NetlabError):
            run.teardown()
        write_active(lab.state, None)
        raise
    progress = Progress()
    progress.started(ex.id)
    progress.save()
    click.echo()
    click.secho(f"{ex.title}  ({ex.id}, level {ex.difficulty})", bold=True)
    _section("Story", ex.story)
    _section("Symptom", ex.symptom)
    click.echo(f"\nInvestigate with knetlab get/describe/exec/trace/capture/proxy rules "
               f"--name {lab.name}.\n"
               f"  knetlab exercise hint     a hint ({len(ex.hints)} available, gentle first)\n"
               f"  knetlab exercise check    does it work now?\n"
               f"  knetlab exercise solve    apply the reference solution\n"
               f"  knetlab exercise reset    back to a healthy lab")


@exercise.command()
@name_option
def status(lab_name: str | None) -> None:
    """The exercise running, its story and symptom, and the hints you have seen."""
    from netlab.exercises.model import ExerciseError
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import ExerciseRun, exercise_lab

    try:
        lab, active = exercise_lab(lab_name)
    except ExerciseError as exc:
        click.echo(str(exc))
        return
    ex = ExerciseRun.resume(lab, active).exercise
    entry = Progress().entry(ex.id)
    minutes = (time.time() - active.started) / 60
    click.secho(f"{ex.title}  ({ex.id} on lab {lab.name}, started {minutes:.0f} min ago)",
                bold=True)
    _section("Story", ex.story)
    _section("Symptom", ex.symptom)
    click.echo(f"\nhints seen: {entry.hints_seen} of {len(ex.hints)}"
               + ("; solved before" if entry.solved_at else ""))
    for number in range(1, entry.hints_seen + 1):
        click.echo(f"  {number}. {ex.hints[number - 1]}")


@exercise.command()
@click.argument("number", type=int, required=False)
@name_option
def hint(number: int | None, lab_name: str | None) -> None:
    """Show the next hint, or hint NUMBER (hints go from gentle to telling)."""
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import ExerciseRun, exercise_lab

    lab, active = exercise_lab(lab_name)
    ex = ExerciseRun.resume(lab, active).exercise
    progress = Progress()
    seen = progress.entry(ex.id).hints_seen
    number = number or min(seen + 1, len(ex.hints))
    if not 1 <= number <= len(ex.hints):
        raise NetlabError(f"{ex.id} has hints 1 to {len(ex.hints)}")
    progress.hint_seen(ex.id, number)
    progress.save()
    click.secho(f"hint {number} of {len(ex.hints)}", bold=True)
    click.echo(ex.hints[number - 1])


@exercise.command()
@name_option
@click.pass_context
def check(ctx: click.Context, lab_name: str | None) -> None:
    """Does it work now? Real traffic decides; exit status 0 when it does."""
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import ExerciseRun, exercise_lab

    _root()
    lab, active = exercise_lab(lab_name)
    run = ExerciseRun.resume(lab, active)
    report = run.check()
    _print_report(report)
    progress = Progress()
    first = progress.checked(run.exercise.id, report.ok)
    progress.save()
    if not report.ok:
        click.echo("\nnot fixed yet (knetlab exercise hint for a hint)")
        ctx.exit(1)
    entry = progress.entry(run.exercise.id)
    if entry.solved_at is None:  # the reference solution was applied: not the learner's
        click.secho("\nIt works, after the reference solution (not counted as solved: start "
                    "it again to solve it yourself).", fg="green")
    else:
        click.secho("\nSolved!" + (" First time." if first else ""), fg="green", bold=True)
    if run.exercise.explanation:
        _section("What happened", run.exercise.explanation)
    click.echo("knetlab exercise reset gives you a healthy lab; knetlab exercise list, "
               "the next one.")


@exercise.command()
@name_option
@click.pass_context
def solve(ctx: click.Context, lab_name: str | None) -> None:
    """Apply the reference solution, and show it."""
    from netlab.exercises.progress import Progress
    from netlab.exercises.runner import ExerciseRun, exercise_lab

    _root()
    lab, active = exercise_lab(lab_name)
    run = ExerciseRun.resume(lab, active, _step)
    click.echo(f"applying the reference solution of {run.exercise.id} ...")
    run.solve()
    progress = Progress()
    progress.revealed(run.exercise.id)
    progress.save()
    report = run.wait_until_passes()
    _print_report(report)
    if run.exercise.solution:
        _section("Solution", run.exercise.solution)
    if run.exercise.alternatives:
        click.secho("Other fixes that work", bold=True)
        for alternative in run.exercise.alternatives:
            click.echo(f"  - {alternative.title}")
    if run.exercise.explanation:
        _section("What happened", run.exercise.explanation)
    if not report.ok:
        click.secho("the check still fails after the reference solution: see the evidence",
                    fg="red", err=True)
        ctx.exit(1)


@exercise.command()
@name_option
@click.pass_context
def reset(ctx: click.Context, lab_name: str | None) -> None:
    """Undo the breakage (and your changes to it): a healthy lab again."""
    from netlab.exercises.runner import ExerciseRun, exercise_lab

    _root()
    lab, active = exercise_lab(lab_name)
    run = ExerciseRun.resume(lab, active, _step)
    click.echo(f"resetting {run.exercise.id} on lab {lab.name} ...")
    run.reset()
    report = run.wait_until_passes()
    run.teardown()
    if report.ok:
        click.echo(f"lab {lab.name} is healthy again")
    else:
        _print_report(report)
        click.secho("the lab is not healthy after the reset (knetlab down and up again)",
                    fg="red", err=True)
        ctx.exit(1)


@click.command()
@click.argument("components", nargs=-1, required=True)
@click.option("--name", "lab_name", default=None, help="lab name (optional when one lab runs)")
def restart(components: tuple[str, ...], lab_name: str | None) -> None:
    """Restart lab components (agent-NODE, runtime-NODE, control-plane), as `systemctl
    restart` would: each is stopped, and the lab's supervisor starts it again.

    An agent re-reads its config file (nodes/NODE/config.yaml in the lab's state dir)."""
    from netlab.exercises.actions import restart_components
    from netlab.lab.lifecycle import find_lab
    from netlab.lab.session import RunningLab

    _root()
    began = time.monotonic()
    restart_components(RunningLab(find_lab(lab_name)), list(components))
    click.echo(f"restarted {', '.join(components)} in {time.monotonic() - began:.1f}s")


COMMANDS = [exercise, restart]
