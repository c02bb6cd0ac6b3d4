"""A learner's progress: which exercises they solved, how many hints they needed.

Kept per user, in the user's state dir (`$XDG_STATE_HOME/knetlab/exercises.json`,
by default `~/.local/state/knetlab/exercises.json`), not in a lab's state dir:
labs come and go (and /run does not survive a reboot), progress should not. Under
sudo the file belongs to the user who ran sudo, in their home, owned by them.
`KNETLAB_PROGRESS` names another file (tests use it).

The exercise running on a lab is the lab's own state (runner.py), not progress.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROGRESS_ENV = "KNETLAB_PROGRESS"


def _user() -> tuple[Path, int | None, int | None]:
    """(home, uid, gid) of the learner: the sudo caller's when run under sudo."""
    sudo_user = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo_user and sudo_user != "root":
        try:
            entry = pwd.getpwnam(sudo_user)
            return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
    return Path.home(), None, None


def progress_file() -> tuple[Path, int | None, int | None]:
    """Where this learner's progress lives, and who should own it (None: as created)."""
    if os.environ.get(PROGRESS_ENV):
        return Path(os.environ[PROGRESS_ENV]), None, None
    home, uid, gid = _user()
    base = os.environ.get("XDG_STATE_HOME") if uid is None else None
    root = Path(base) if base else home / ".local" / "state"
    return root / "knetlab" / "exercises.json", uid, gid


@dataclass
class Entry:
    """One exercise's record."""

    hints_seen: int = 0
    solved_at: float | None = None  # first time the checker passed
    attempts: int = 0  # starts
    revealed: bool = False  # the reference solution was applied
    history: list[dict[str, Any]] = field(default_factory=list)


class Progress:
    """The progress file, read on creation, written by `save`."""

    def __init__(self, path: Path | None = None) -> None:
        found, self.uid, self.gid = progress_file()
        self.path = path or found
        self.entries: dict[str, Entry] = {}
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        for ident, raw in (data.get("exercises") or {}).items():
            known = {k: v for k, v in raw.items() if k in Entry.__dataclass_fields__}
            self.entries[ident] = Entry(**known)

    def entry(self, ident: str) -> Entry:
        return self.entries.setdefault(ident, Entry())

    def started(self, ident: str) -> None:
        entry = self.entry(ident)
        entry.attempts += 1
        entry.history.append({"event": "start", "at": time.time()})

    def hint_seen(self, ident: str, number: int) -> None:
        entry = self.entry(ident)
        entry.hints_seen = max(entry.hints_seen, number)

    def checked(self, ident: str, passed: bool) -> bool:
        """Record a check; True when this is the first pass (the exercise is now solved)."""
        entry = self.entry(ident)
        entry.history.append({"event": "check", "at": time.time(), "passed": passed})
        if passed and entry.solved_at is None and not entry.revealed:
            entry.solved_at = time.time()
            return True
        return False

    def revealed(self, ident: str) -> None:
        entry = self.entry(ident)
        entry.revealed = entry.solved_at is None
        entry.history.append({"event": "solve", "at": time.time()})

    def save(self) -> None:
        created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"exercises": {k: asdict(v) for k, v in
                                                 self.entries.items()}}, indent=2))
        os.replace(tmp, self.path)
        if self.uid is not None and self.gid is not None:  # the sudo caller's, not root's
            for path in (self.path, *created):
                os.chown(path, self.uid, self.gid)
