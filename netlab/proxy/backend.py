"""What the mode-independent proxier asks of a mode (iptables, IPVS, nftables).

The proxier owns change tracking, rate limiting, health and metrics; a backend
owns one thing: turning a snapshot into kernel state. A new mode is a new
folder with a class that satisfies `Backend`, not a branch in the sync loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from netlab.proxy.changes import Snapshot


@dataclass(frozen=True)
class BackendResult:
    """What one successful sync reports back, for metrics and logs."""

    rules_written: dict[str, int] = field(default_factory=dict)  # per table, this sync
    rules_total: dict[str, int] = field(default_factory=dict)  # per table, owned after it
    no_local_internal: int = 0  # services with iTP=Local and no local endpoints
    no_local_external: int = 0  # services with eTP=Local and no local endpoints
    large_cluster: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step (read, render…)


class Backend(Protocol):
    mode: str  # "iptables", "ipvs", "nftables": what /proxyMode answers

    def setup(self) -> None:
        """Once before the first sync: sysctls and probes of what the kernel supports."""

    def sync(self, snapshot: Snapshot, *, full: bool) -> BackendResult:
        """Make the kernel match the snapshot; raise KernelError if it could not.

        A partial sync (`full=False`) may rewrite only `snapshot.changed`, and
        relies on the previous sync having succeeded.
        """

    def flushed(self) -> bool:
        """True if someone removed our state behind our back (the canary is gone)."""
