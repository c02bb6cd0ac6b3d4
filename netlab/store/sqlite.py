"""The embedded store: one sqlite file in the lab's state dir, shared by its processes.

WAL mode lets readers run beside the one writer; `BEGIN IMMEDIATE` serialises
writers across processes, which is what gives the single global revision. Watches
poll `PRAGMA data_version` (it changes when another connection commits, and costs
no read transaction), so an idle watcher is cheap and a change is seen within one
poll interval.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
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
    member_text,
    prefix_end,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT,
    prev TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, num INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""

POLL_FAST = 0.005
POLL_SLOW = 0.05
WATCH_BATCH = 2000


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


class SqliteStore(Store):
    """Store backed by a sqlite file; safe across threads and processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        try:
            with self._conn() as conn:
                conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def get(self, key: str) -> KeyValue | None:
        row = self._conn().execute(
            "SELECT key, value, create_rev, mod_rev FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else KeyValue(row[0], json.loads(row[1]), row[2], row[3])

    def list(self, prefix: str, *, member: Member | None = None) -> tuple[list[KeyValue], int]:
        needle = member_text(member) if member else None
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            rows = conn.execute(
                "SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ? AND key < ? "
                "ORDER BY key", (prefix, prefix_end(prefix))).fetchall()
            rev = conn.execute("SELECT num FROM meta WHERE name = 'revision'").fetchone()[0]
        finally:
            conn.execute("COMMIT")
        return [KeyValue(r[0], json.loads(r[1]), r[2], r[3]) for r in rows
                if needle is None or needle in r[1]], rev

    def revision(self) -> int:
        return self._conn().execute("SELECT num FROM meta WHERE name = 'revision'").fetchone()[0]

    def commit(self, ops: Sequence[Op]) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rev = conn.execute("SELECT num FROM meta WHERE name = 'revision'").fetchone()[0]
            for op in ops:
                row = conn.execute("SELECT value, create_rev, mod_rev FROM kv WHERE key = ?",
                                   (op.key,)).fetchone()
                current = 0 if row is None else row[2]
                if op.expect_revision is not None and op.expect_revision != current:
                    raise ConflictError(
                        f"{op.key}: expected revision {op.expect_revision}, found {current}")
                if isinstance(op, Put):
                    rev += 1
                    text = _dump(op.value)
                    create = rev if row is None else row[1]
                    conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)",
                                 (op.key, text, create, rev))
                    conn.execute("INSERT INTO events VALUES (?, ?, 'PUT', ?, ?)",
                                 (rev, op.key, text, None if row is None else row[0]))
                elif isinstance(op, Delete) and row is not None:
                    rev += 1
                    conn.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                    conn.execute("INSERT INTO events VALUES (?, ?, 'DELETE', NULL, ?)",
                                 (rev, op.key, row[0]))
            conn.execute("UPDATE meta SET num = ? WHERE name = 'revision'", (rev,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rev

    def compact(self, revision: int) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM events WHERE rev < ?", (revision,))
        conn.execute("UPDATE meta SET num = max(num, ?) WHERE name = 'compacted'", (revision,))
        conn.execute("COMMIT")

    def watch(self, prefixes: Sequence[str], start_revision: int, *,
              poll_timeout: float = 1.0, member: Member | None = None) -> Iterator[list[Event]]:
        conn = self._conn()
        ranges = [(p, prefix_end(p)) for p in prefixes]
        needle = member_text(member) if member else None
        next_rev = start_revision
        seen_version = None
        waited = 0.0
        delay = POLL_FAST
        while True:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != seen_version:
                seen_version = version
                batch, next_rev = self._read_events(conn, ranges, next_rev, needle)
                if batch or waited >= poll_timeout:
                    yield batch
                    waited, delay = 0.0, POLL_FAST
                    continue
            elif waited >= poll_timeout:
                yield []
                waited = 0.0
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, POLL_SLOW)

    def _read_events(self, conn: sqlite3.Connection, ranges: list[tuple[str, str]],
                     next_rev: int, needle: str | None) -> tuple[list[Event], int]:
        conn.execute("BEGIN")
        try:
            compacted = conn.execute(
                "SELECT num FROM meta WHERE name = 'compacted'").fetchone()[0]
            if next_rev < compacted:
                raise CompactedError(f"revision {next_rev} is compacted (now {compacted})")
            batch: list[Event] = []
            while True:
                rows = conn.execute(
                    "SELECT rev, key, type, value, prev FROM events WHERE rev >= ? "
                    "ORDER BY rev LIMIT ?", (next_rev, WATCH_BATCH)).fetchall()
                for rev, key, kind, value, prev in rows:
                    if any(lo <= key < hi for lo, hi in ranges) and (
                            needle is None or needle in (value or "") or needle in (prev or "")):
                        batch.append(Event(kind, key, rev, _load(value), prev))
                if rows:
                    next_rev = rows[-1][0] + 1
                if len(rows) < WATCH_BATCH:
                    return batch, next_rev
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
