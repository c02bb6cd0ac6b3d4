"""One exercise on one running lab: start (set up and break), check, solve, reset.

The exercise running on a lab is recorded in the lab's state dir (`exercise.json`:
its id, folder and the values its steps saved), so `check`, `hint`, `solve` and
`reset` find it from another shell, and it goes away with the lab. Bringing a lab
up for an exercise is `knetlab up` of the exercise's lab file; a lab of that name
that already runs is reused, so moving from one exercise to the next costs a reset
and a break, not a new lab.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netlab.exercises.actions import Actions
from netlab.exercises.checks import Checker, CheckReport
from netlab.exercises.model import Exercise, ExerciseError, Step, load_exercise
from netlab.exercises.values import LabValues
from netlab.lab.labfile import load_lab
from netlab.lab.session import RunningLab, start_lab
from netlab.lab.state import StateDir, running_labs

ACTIVE_FILE = "exercise.json"
SETTLE_TIMEOUT = 60.0  # how long solve and reset wait for the checker to pass


@dataclass
class Active:
    """The exercise running on a lab, as recorded in the lab's state dir."""

    id: str
    folder: str
    started: float
    saved: dict[str, str] = field(default_factory=dict)


def _active_path(state: StateDir) -> str:
    return os.path.join(state.path, ACTIVE_FILE)


def read_active(state: StateDir) -> Active | None:
    try:
        with open(_active_path(state)) as f:
            return Active(**json.load(f))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def write_active(state: StateDir, active: Active | None) -> None:
    if active is None:
        if os.path.exists(_active_path(state)):
            os.remove(_active_path(state))
        return
    with open(_active_path(state), "w") as f:
        json.dump(asdict(active), f, indent=2)


def lab_name_for(exercise: Exercise) -> str:
    """The name the exercise's lab runs under unless told otherwise: its lab file's."""
    return load_lab(exercise.lab).name


def ensure_lab(exercise: Exercise, name: str | None = None) -> tuple[RunningLab, bool]:
    """The running lab `name` (default: the lab file's name), brought up if needed.

    Returns the lab and whether it was brought up now.
    """
    name = name or lab_name_for(exercise)
    if name in running_labs():
        return RunningLab(StateDir(name)), False
    return start_lab(exercise.lab, name), True


def exercise_lab(name: str | None) -> tuple[RunningLab, Active]:
    """The lab an exercise runs on: the one named, or the only one with an exercise."""
    if name is not None:
        if name not in running_labs():
            raise ExerciseError(f"no lab named {name!r} is running")
        candidates = [name]
    else:
        candidates = [lab for lab in running_labs() if read_active(StateDir(lab))]
    if not candidates:
        raise ExerciseError("no exercise is running (knetlab exercise start ID)")
    if len(candidates) > 1:
        raise ExerciseError(f"exercises run on several labs ({', '.join(candidates)}): say "
                            "which with --name")
    state = StateDir(candidates[0])
    active = read_active(state)
    if active is None:
        raise ExerciseError(f"no exercise runs on lab {candidates[0]} "
                            "(knetlab exercise start ID)")
    return RunningLab(state), active


class ExerciseRun:
    """An exercise bound to a running lab; `report` hears each step as it runs."""

    def __init__(self, exercise: Exercise, lab: RunningLab,
                 saved: dict[str, str] | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        self.exercise = exercise
        self.lab = lab
        self.values = LabValues(lab, saved)
        self.actions = Actions(exercise, self.values, report)
        self.checker = Checker(exercise, self.values)

    @classmethod
    def resume(cls, lab: RunningLab, active: Active,
               report: Callable[[str], None] | None = None) -> ExerciseRun:
        """The exercise recorded on `lab`, with the values its steps saved."""
        return cls(load_exercise(Path(active.folder)), lab, dict(active.saved), report)

    def _record(self, started: float | None = None) -> None:
        current = read_active(self.lab.state)
        write_active(self.lab.state, Active(
            self.exercise.id, str(self.exercise.folder),
            started or (current.started if current else time.time()), self.values.saved))

    def start(self) -> None:
        """Set up the scenario and break it. Recorded first, so a failed break can be reset."""
        self._record(time.time())
        self.actions.run(self.exercise.setup_steps)
        self.actions.run(self.exercise.break_steps)
        self._record()

    def check(self) -> CheckReport:
        return self.checker.run(self.exercise.checks)

    def symptoms(self) -> CheckReport:
        """What still works while broken (the symptom's other half); all pass on a start."""
        return self.checker.run(self.exercise.symptom_checks)

    def wait_until_passes(self, timeout: float = SETTLE_TIMEOUT) -> CheckReport:
        """Check until it passes (components take a moment to act) or `timeout` is over."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.check()
            if report.ok or time.monotonic() > deadline:
                return report
            time.sleep(0.5)

    def run_fix(self, steps: tuple[Step, ...]) -> None:
        """Apply a fix (the reference solution or an alternative) and keep saved values."""
        self.actions.run(steps)
        self._record()

    def solve(self) -> None:
        self.run_fix(self.exercise.solve_steps)

    def reset(self) -> None:
        """Undo the break (and whatever fix was tried): the checker passes again.

        The scenario's own objects stay until `teardown`, so the checker can confirm
        the reset before they go.
        """
        self.actions.run(self.exercise.reset_steps)
        self._record()

    def teardown(self) -> None:
        """Remove what `setup` added; the lab no longer runs an exercise."""
        self.actions.run(self.exercise.teardown_steps)
        write_active(self.lab.state, None)
