"""Error types shared by every room.

Each carries where the problem is (file, field) and why, so the CLI can print one
clear line without a traceback and exit non-zero.
"""

from __future__ import annotations


class NetlabError(Exception):
    """Base of every error the CLI prints as a message rather than a traceback."""


class LocatedError(NetlabError):
    """An error in user input: names the file, the field (dotted path) and the reason."""

    def __init__(self, reason: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.field = field
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        return f"{where}: {self.reason}" if where else self.reason


class LabFileError(LocatedError):
    """A lab file (topologies/*.yaml) is invalid."""


class ManifestError(LocatedError):
    """A Kubernetes manifest is invalid or unsupported."""


class StoreError(NetlabError):
    """The object store failed or was asked for something impossible."""


class ConflictError(StoreError):
    """A write lost a compare-and-swap race (the object changed since it was read)."""


class KernelError(NetlabError):
    """A kernel operation failed (netlink, iptables-restore, sysctl)."""
