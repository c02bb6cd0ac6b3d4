"""The store interface: etcd's model (keys, one global revision, list + watch).

Every process of a lab (control plane, node agents, DNS) talks only through a
Store, as Kubernetes components talk only through the API server and etcd. The
embedded sqlite backend and the etcd backend implement the same interface, so
agents do not know which one they run on.

Semantics follow etcd v3: each write bumps one global revision; `list` returns the
revision it was taken at; `watch(prefixes, start_revision)` yields every change
with revision >= start_revision, so "list, then watch from revision + 1" never
misses or repeats a change. A watch asked for a revision older than the
compaction point raises `CompactedError`, and the caller relists.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from netlab.errors import StoreError

EventType = Literal["PUT", "DELETE"]
# (name, value): one member of a JSON object, `"name":"value"` at any depth of a value.
# Given to list/watch, a hint: values without it may be left out (see Store.list).
Member = tuple[str, str]


class CompactedError(StoreError):
    """The revision a watch asked for has been compacted away: relist and watch again."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: dict[str, Any]
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Event:
    type: EventType
    key: str
    revision: int
    value: dict[str, Any] | None  # the new value (PUT) or None (DELETE)
    prev_json: str | None  # the value before this change, as stored (JSON); None if none

    @cached_property
    def prev_value(self) -> dict[str, Any] | None:
        """The value before this change, decoded on first use.

        Most watchers only ask whether there was one (ADDED or MODIFIED); decoding it
        for every event doubled what each of a lab's watchers decoded.
        """
        return None if self.prev_json is None else json.loads(self.prev_json)


@dataclass(frozen=True)
class Put:
    key: str
    value: dict[str, Any]
    expect_revision: int | None = None  # None: unconditional; 0: must not exist


@dataclass(frozen=True)
class Delete:
    key: str
    expect_revision: int | None = None


Op = Put | Delete


class Store(abc.ABC):
    """A key-value store with revisions and prefix watches (see module docstring)."""

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    def list(self, prefix: str, *, member: Member | None = None) -> tuple[list[KeyValue], int]:
        """Every key under prefix, sorted by key, and the store revision of the snapshot.

        With `member`, values that do not hold it may be left out, undecoded: a hint
        (kubelet's pod list by node decodes only its own pods); callers still check
        what they get.
        """

    @abc.abstractmethod
    def commit(self, ops: Sequence[Op]) -> int:
        """Apply ops atomically (all or none); returns the new revision.

        Raises ConflictError if any expect_revision does not hold.
        """

    @abc.abstractmethod
    def revision(self) -> int: ...

    @abc.abstractmethod
    def watch(self, prefixes: Sequence[str], start_revision: int, *,
              poll_timeout: float = 1.0, member: Member | None = None) -> Iterator[list[Event]]:
        """Yield batches of events under any prefix, in revision order, forever.

        A batch may be empty when poll_timeout passes without a change, so loops
        can check their stop condition. Raises CompactedError (see module doc).
        With `member`, events whose value and previous value both lack it may be left
        out (the hint of `list`).
        """

    @abc.abstractmethod
    def compact(self, revision: int) -> None:
        """Forget history before revision (watches from earlier revisions fail)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # Conveniences built on the primitives above.

    def put(self, key: str, value: dict[str, Any], *, expect_revision: int | None = None) -> int:
        return self.commit([Put(key, value, expect_revision)])

    def delete(self, key: str, *, expect_revision: int | None = None) -> int:
        return self.commit([Delete(key, expect_revision)])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def member_text(member: Member) -> str:
    """The member as it reads in a stored value: both backends store values as compact
    JSON, so a value whose text lacks this cannot hold the member."""
    return json.dumps(dict([member]), separators=(",", ":"))[1:-1]


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with prefix (etcd's range_end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
