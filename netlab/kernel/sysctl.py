"""Per-namespace sysctls: /proc/sys/net answers for the network namespace of the caller."""

from __future__ import annotations

from netlab.errors import KernelError


def _path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def read(name: str) -> str:
    with open(_path(name)) as f:
        return f.read().strip()


def write(name: str, value: str | int) -> None:
    try:
        with open(_path(name), "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise KernelError(f"sysctl {name}={value}: {exc.strerror}") from exc


def apply(settings: dict[str, str | int]) -> None:
    for name, value in settings.items():
        write(name, value)
