"""A check Report as text (one block per step: verdict line, evidence, next step) or JSON.

Pure: the CLI prints what these return, and unit tests read it. Text follows
the Debug Services page's rhythm: each step says what was checked, what was
seen, and for a failure what to look at next.
"""

from __future__ import annotations

import json

import click

from netlab.check.model import FAILED, PASSED, Report, StepResult

LABELS = {PASSED: ("PASS", "green"), FAILED: ("FAIL", "red"), "skipped": ("SKIP", "yellow")}
INDENT = " " * 4


def _head(i: int, step: StepResult, name_width: int, title_width: int, color: bool) -> str:
    word, hue = LABELS[step.status]
    label = click.style(word, fg=hue, bold=step.status == FAILED or None) if color else word
    line = f"{i:>2}  {label}  {step.name.ljust(name_width)}  {step.title.ljust(title_width)}"
    if step.blocked_by is not None:
        return f"{line}  (skipped: {step.blocked_by} failed)".rstrip()
    return f"{line}  {step.seconds:.2f}s"


def render_text(report: Report, color: bool = False) -> str:
    lines = [f"Service {report.service}" + (f": {report.summary[0]}" if report.summary else "")]
    lines += [f"  {line}" for line in report.summary[1:]]
    if report.source:
        lines.append(f"traffic from pod {report.source}")
    lines.append("")
    name_width = max((len(s.name) for s in report.steps), default=0)
    title_width = max((len(s.title) for s in report.steps), default=0)
    for i, step in enumerate(report.steps, start=1):
        lines.append(_head(i, step, name_width, title_width, color))
        lines += [f"{INDENT}{line}" for line in step.evidence]
        if step.blocked_by is not None:
            continue
        if step.status == FAILED and step.hint:
            lines.append(f"{INDENT}next: {step.hint}")
        elif step.status == "skipped" and step.hint:
            lines.append(f"{INDENT}not applicable: {step.hint}")
    counts = report.counts()
    tail = (f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts['skipped']} skipped "
            f"in {report.seconds:.1f}s")
    first = report.first_failure
    lines += ["", tail + (f"; first failure: {first.name}" if first else "")]
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)
