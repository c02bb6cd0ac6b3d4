"""A snapshot of everything a lab could leave behind on the host, for before/after checks.

The cleanup guarantee (issue 2, item 10): after `down`, or `kill -9` of every lab
process followed by `clean`, each of these is exactly as before.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else f"<{argv[0]} failed: {result.stderr}>"


def _listing(path: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(path)))
    except FileNotFoundError:
        return ("<absent>",)


def _lab_processes() -> tuple[str, ...]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        # A lab's supervisor and its forks (`-m netlab.lab`), or a machine's components.
        if "-m netlab.lab " in text or "-m netlab " in text and any(
                w in text for w in ("agent", "runtime", "control-plane")):
            found.append(text)
    return tuple(sorted(found))


def _mounts() -> tuple[str, ...]:
    with open("/proc/self/mountinfo") as f:
        return tuple(sorted(line.split()[4] for line in f
                            if "/run/netns" in line or "/etc/netns" in line))


@dataclass(frozen=True)
class HostState:
    netns: tuple[str, ...]
    links: str
    routes: str
    iptables: str
    nft: str
    processes: tuple[str, ...]
    etc_netns: tuple[str, ...]
    run_netns: tuple[str, ...]
    mounts: tuple[str, ...]

    @classmethod
    def capture(cls, lab: str | None = None) -> HostState:
        """The host now; with `lab`, other labs running at the same time are left out.

        Leaving them out keeps a test about one lab's cleanup meaningful while a
        developer runs another lab (CI runs one at a time, so nothing is left out there).
        """
        others = _other_labs(lab) if lab else []
        state = cls._capture()
        return state._without(others) if others else state

    def _without(self, labs: list[str]) -> HostState:
        prefixes = tuple(f"nl-{name}-" for name in labs)
        dirs = tuple(f"/run/knetlab/{name}" for name in labs)
        return HostState(
            netns=tuple(n for n in self.netns if not n.startswith(prefixes)),
            links=self.links, routes=self.routes, iptables=self.iptables, nft=self.nft,
            processes=tuple(p for p in self.processes if not any(d in p for d in dirs)),
            etc_netns=tuple(n for n in self.etc_netns if not n.startswith(prefixes)),
            run_netns=tuple(n for n in self.run_netns if not n.startswith(prefixes)),
            mounts=tuple(m for m in self.mounts if not any(p in m for p in prefixes)),
        )

    @classmethod
    def _capture(cls) -> HostState:
        links = "\n".join(sorted(line.split()[0] for line in
                                 _run("ip", "-br", "link").splitlines()))
        return cls(
            netns=tuple(sorted(_run("ip", "netns", "list").split())),
            links=links,
            routes=_run("ip", "route", "show", "table", "all"),
            iptables=_strip_counters(_run("iptables-save")),
            nft=_run("nft", "list", "ruleset"),
            processes=_lab_processes(),
            etc_netns=_listing("/etc/netns"),
            run_netns=_listing("/run/netns"),
            mounts=_mounts(),
        )

    def differences(self, other: HostState) -> list[str]:
        return [f"{name}: before={getattr(self, name)!r} after={getattr(other, name)!r}"
                for name in self.__dataclass_fields__
                if getattr(self, name) != getattr(other, name)]


def _other_labs(lab: str) -> list[str]:
    return [name for name in _listing("/run/knetlab") if name not in (lab, "<absent>")]


def _strip_counters(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
