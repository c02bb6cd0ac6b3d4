"""Where exercises are found: the catalog shipped in the package, plus the author's folders.

An exercise is a folder holding `exercise.yaml` (model.py). The built-in ones live
in `netlab/exercises/catalog/<id>/` and install with the package; more folders are
searched through `KNETLAB_EXERCISE_PATH` (colon-separated, like PATH) or the CLI's
`--path`, each either one exercise folder or a folder of them. Two exercises with
one id are an error that names both folders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from netlab.exercises.model import EXERCISE_FILE, Exercise, ExerciseError, load_exercise

BUILTIN = Path(__file__).parent / "catalog"
PATH_ENV = "KNETLAB_EXERCISE_PATH"


def search_path(extra: Iterable[str] = ()) -> list[Path]:
    """The built-in catalog, then KNETLAB_EXERCISE_PATH's folders, then `extra`."""
    env = [p for p in os.environ.get(PATH_ENV, "").split(":") if p]
    return [BUILTIN, *(Path(p) for p in env), *(Path(p) for p in extra)]


def _folders(root: Path) -> list[Path]:
    if (root / EXERCISE_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise ExerciseError("no such folder", file=str(root))
    return sorted(p for p in root.iterdir() if (p / EXERCISE_FILE).is_file())


def load_catalog(extra: Iterable[str] = ()) -> dict[str, Exercise]:
    """Every exercise on the search path, by id, in folder order."""
    found: dict[str, Exercise] = {}
    for root in search_path(extra):
        for folder in _folders(root):
            exercise = load_exercise(folder)
            if exercise.id in found:
                raise ExerciseError(f"exercise id {exercise.id!r} is also defined in "
                                    f"{found[exercise.id].folder}",
                                    file=str(folder / EXERCISE_FILE), field="id")
            found[exercise.id] = exercise
    return found


def find_exercise(ident: str, extra: Iterable[str] = ()) -> Exercise:
    catalog = load_catalog(extra)
    if ident not in catalog:
        raise ExerciseError(f"no exercise {ident!r} (knetlab exercise list shows them: "
                            f"{', '.join(catalog)})")
    return catalog[ident]
