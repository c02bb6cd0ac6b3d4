"""The etcd backend: the Store contract on a real etcd v3 cluster.

Keys are the embedded store's keys (`/registry/...`, as kube-apiserver lays them
out), values the same JSON, revisions etcd's own. A commit is one etcd txn whose
compares are the ops' expected mod_revisions (0: the key must be absent), so
`expect_revision` is the same compare-and-swap kube-apiserver does. Two differences
from the embedded store, both etcd's: every key written by one commit gets that
commit's single revision, and a fresh etcd starts at revision 1, not 0.

A watch on several prefixes is one etcd range watch over their common prefix,
filtered here: one stream keeps etcd's revision order across all of them, where
one stream per prefix would need merging without knowing how far each had got.
When etcd is down every call raises StoreError; a broken watch raises it too, and
the informers back off, relist and watch again (netlab/store/informer.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from netlab.errors import ConflictError, StoreError
from netlab.store.base import (
    CompactedError,
    Delete,
    Event,
    KeyValue,
    Member,
    Op,
    Put,
    Store,
    prefix_end,
)
from netlab.store.etcd_gateway import Gateway, GatewayError, Message, b64, unb64

GRPC_OUT_OF_RANGE = 11  # etcd's code for "revision compacted" / "future revision"
# Longer than kube-apiserver's 5 s: a lab shares two cores with hundreds of processes,
# and a call that times out is retried by its caller anyway.
REQUEST_TIMEOUT = 10.0


def _dump(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":"), sort_keys=True))


def _value(kv: Message | None) -> dict[str, Any] | None:
    return None if not kv or "value" not in kv else json.loads(unb64(kv["value"]))


def _key_value(kv: Message) -> KeyValue:
    return KeyValue(unb64(kv["key"]).decode(), _value(kv) or {},
                    int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)))


def _revision(answer: Message) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def _range_end(prefix: str) -> str:
    """etcd's range_end for a prefix ("\\0" is "every key")."""
    return b64(prefix_end(prefix).encode() if prefix else b"\0")


class EtcdStore(Store):
    """Store on etcd through its JSON gateway (see netlab/store/etcd_gateway.py)."""

    def __init__(self, endpoints: Sequence[str], *, netns: str | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.gateway = Gateway(endpoints, netns=netns, timeout=timeout)

    def get(self, key: str) -> KeyValue | None:
        kvs = self.gateway.call("kv/range", {"key": b64(key)}).get("kvs", [])
        return _key_value(kvs[0]) if kvs else None

    def list(self, prefix: str, *, member: Member | None = None) -> tuple[list[KeyValue], int]:
        """`member` is not used: etcd has no such filter, and callers check anyway."""
        answer = self.gateway.call("kv/range", {"key": b64(prefix or "\0"),
                                                "range_end": _range_end(prefix)})
        return [_key_value(kv) for kv in answer.get("kvs", [])], _revision(answer)

    def revision(self) -> int:
        return _revision(self.gateway.call("kv/range", {"key": b64("\0"), "count_only": True}))

    def commit(self, ops: Sequence[Op]) -> int:
        compares, success = [], []
        checked = []
        for op in ops:
            if op.expect_revision is not None:
                compares.append({"target": "MOD", "key": b64(op.key), "result": "EQUAL",
                                 "mod_revision": op.expect_revision})
                checked.append(op)
            if isinstance(op, Put):
                success.append({"request_put": {"key": b64(op.key), "value": _dump(op.value)}})
            elif isinstance(op, Delete):
                success.append({"request_delete_range": {"key": b64(op.key)}})
        # On failure, read the keys compared, to say which one moved.
        failure = [{"request_range": {"key": b64(op.key)}} for op in checked]
        answer = self.gateway.call("kv/txn", {"compare": compares, "success": success,
                                              "failure": failure})
        if not answer.get("succeeded") and compares:
            raise ConflictError(_conflict(checked, answer.get("responses", [])))
        return _revision(answer)

    def compact(self, revision: int) -> None:
        try:
            self.gateway.call("kv/compaction", {"revision": revision})
        except GatewayError as exc:
            if exc.code != GRPC_OUT_OF_RANGE or "compacted" not in exc.message:
                raise  # compacting the future is an error; compacting the past is done

    def watch(self, prefixes: Sequence[str], start_revision: int, *,
              poll_timeout: float = 1.0, member: Member | None = None) -> Iterator[list[Event]]:
        """`member` is not used (as in `list`)."""
        start = max(start_revision, 1)  # etcd reads 0 as "from now", the contract "from 1"
        self._check_not_compacted(start)
        common = os.path.commonprefix(list(prefixes)) if prefixes else ""
        ranges = [(p, prefix_end(p)) for p in prefixes]
        stream = self.gateway.watch({"create_request": {
            "key": b64(common or "\0"), "range_end": _range_end(common),
            "start_revision": start, "prev_kv": True}})
        try:
            # etcd confirms the watch first; waiting for that keeps it out of the
            # first batch, which then holds the history already there.
            created = stream.next_message(self.gateway.timeout)
            if created is None:
                raise StoreError("etcd did not confirm the watch in time")
            pending = _events(created, ranges)
            while True:
                batch, pending = pending, []
                message = stream.next_message(0.0 if batch else poll_timeout)
                while message is not None:
                    batch += _events(message, ranges)
                    message = stream.next_message(0.0)  # take what already arrived
                yield batch
        finally:
            stream.close()

    def _check_not_compacted(self, revision: int) -> None:
        """Raise CompactedError now rather than on etcd's cancel ~100 ms into the watch.

        A read at a revision fails exactly when a watch from it would; a future
        revision is no error for a watch (it waits for it).
        """
        try:
            self.gateway.call("kv/range", {"key": b64("\0"), "count_only": True,
                                           "revision": revision})
        except GatewayError as exc:
            if "compacted" in exc.message:
                raise CompactedError(f"revision {revision} is compacted") from exc
            if "future revision" not in exc.message:
                raise

    def close(self) -> None:
        self.gateway.close()


def _events(message: Message, ranges: list[tuple[str, str]]) -> list[Event]:
    if message.get("canceled"):
        compacted = int(message.get("compact_revision", 0))
        if compacted:
            raise CompactedError(f"watch revision is compacted (now {compacted})")
        raise StoreError(f"etcd cancelled the watch: {message.get('cancel_reason', '?')}")
    events = []
    for ev in message.get("events", []):
        kv = ev["kv"]
        key = unb64(kv["key"]).decode()
        if not any(lo <= key < hi for lo, hi in ranges):
            continue
        kind = ev.get("type", "PUT")  # PUT is the enum's zero value, so left out
        prev = ev.get("prev_kv")
        events.append(Event(kind, key, int(kv["mod_revision"]),
                            _value(kv) if kind == "PUT" else None,
                            unb64(prev["value"]).decode() if prev and "value" in prev else None))
    return events


def _conflict(checked: Sequence[Op], responses: list[Message]) -> str:
    for op, response in zip(checked, responses, strict=False):
        kvs = response.get("response_range", {}).get("kvs", [])
        found = int(kvs[0].get("mod_revision", 0)) if kvs else 0
        if found != op.expect_revision:
            return f"{op.key}: expected revision {op.expect_revision}, found {found}"
    return "a compared revision changed"
