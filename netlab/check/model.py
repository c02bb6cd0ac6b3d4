"""What a check step returns, and what a whole check reports.

Pure data: steps build Outcomes, the runner turns them into StepResults (adding
the step's name, title and duration), and the renderers read a Report. The
JSON form (`Report.to_dict`) is what `knetlab check svc -o json` prints and what
tests and the exercises' checkers can assert on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
DEFAULT_TIMEOUT = 2.0  # seconds per connection or datagram: generous for a busy 2-core host

C = TypeVar("C")


@dataclass(frozen=True)
class Outcome:
    """A step's verdict with the evidence it is based on.

    `hint` says what to look at next (a command, a field); it is meant for a
    failure, and a skip uses it for the reason the step does not apply.
    """

    status: str
    evidence: tuple[str, ...] = ()
    hint: str = ""


def passed(*evidence: str) -> Outcome:
    return Outcome(PASSED, tuple(evidence))


def failed(hint: str, *evidence: str) -> Outcome:
    return Outcome(FAILED, tuple(evidence), hint)


def not_applicable(reason: str, *evidence: str) -> Outcome:
    """The step has nothing to check for this Service (no UDP port, not a NodePort, ...).

    Unlike a skip forced by an earlier failure, this does not block later steps.
    """
    return Outcome(SKIPPED, tuple(evidence), reason)


@dataclass(frozen=True)
class Step(Generic[C]):
    """One step of a walk: `run(context)` decides; `needs` names earlier steps it builds on."""

    name: str
    title: str
    run: Callable[[C], Outcome]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepResult:
    name: str
    title: str
    status: str
    evidence: tuple[str, ...] = ()
    hint: str = ""
    blocked_by: str | None = None  # the earlier step whose failure made this one meaningless
    seconds: float = 0.0

    @property
    def blocks(self) -> bool:
        """Steps that need this one are skipped: it failed, or was skipped for a failure."""
        return self.status == FAILED or self.blocked_by is not None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "status": self.status,
                "evidence": list(self.evidence), "hint": self.hint,
                "blocked_by": self.blocked_by, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Report:
    """The result of a whole walk over one Service."""

    service: str  # ns/name
    source: str | None  # the pod traffic was sent from (ns/name), if any
    steps: tuple[StepResult, ...]
    seconds: float = 0.0
    summary: tuple[str, ...] = field(default=())  # lines describing the Service

    @property
    def ok(self) -> bool:
        return all(s.status != FAILED for s in self.steps)

    @property
    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == FAILED), None)

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for s in self.steps if s.status == status)
                for status in (PASSED, FAILED, SKIPPED)}

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        return {"service": self.service, "source": self.source, "ok": self.ok,
                "first_failure": first.name if first else None, "summary": list(self.summary),
                "counts": self.counts(), "seconds": round(self.seconds, 3),
                "steps": [s.to_dict() for s in self.steps]}
