"""Run steps in order, skipping those an earlier failure made meaningless.

A step runs unless one of the steps it `needs` failed or was itself skipped for
a failure (the skip propagates down the chain). A step that was merely not
applicable (no UDP port, no selector) does not block anything. A step that
cannot look (a kernel or store error) fails with the error as its evidence:
the check must say that it could not decide, never pass silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from netlab.check.model import FAILED, SKIPPED, Step, StepResult
from netlab.errors import NetlabError

C = TypeVar("C")


def validate_order(steps: Sequence[Step[C]]) -> None:
    """Every `needs` names an earlier step, and names are unique (a programming error if not)."""
    seen: set[str] = set()
    for step in steps:
        if step.name in seen:
            raise ValueError(f"step {step.name!r} is defined twice")
        unknown = [n for n in step.needs if n not in seen]
        if unknown:
            raise ValueError(f"step {step.name!r} needs {unknown[0]!r}, which does not run "
                             "before it")
        seen.add(step.name)


def run_steps(steps: Sequence[Step[C]], context: C,
              clock: Callable[[], float] = time.monotonic) -> list[StepResult]:
    validate_order(steps)
    results: dict[str, StepResult] = {}
    for step in steps:
        blocker = next((results[n] for n in step.needs if results[n].blocks), None)
        if blocker is not None:
            cause = blocker.blocked_by or blocker.name
            results[step.name] = StepResult(step.name, step.title, SKIPPED,
                                            hint=f"fix {cause} first", blocked_by=cause)
            continue
        start = clock()
        try:
            outcome = step.run(context)
            status, evidence, hint = outcome.status, outcome.evidence, outcome.hint
        except (NetlabError, OSError) as exc:
            status, evidence = FAILED, (f"the check could not look: {exc}",)
            hint = "fix what stops the check from looking, then run it again"
        results[step.name] = StepResult(step.name, step.title, status, evidence, hint,
                                        seconds=clock() - start)
    return list(results.values())
