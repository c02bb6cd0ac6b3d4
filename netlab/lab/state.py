"""A lab's state dir: what it runs, what it created, and where its store and logs are.

Every component appends a record *before* it creates a kernel object or starts a
process (write-ahead), so after a crash at any point `clean` knows everything that
may exist and removes exactly that: never anything found by name pattern alone.
Records are JSON lines appended with O_APPEND, which is atomic for short lines, so
several processes can record into one file without locking.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from netlab.api.cluster import ClusterConfig

STATE_ROOT_ENV = "KNETLAB_STATE_ROOT"
DEFAULT_STATE_ROOT = "/run/knetlab"


def state_root() -> str:
    return os.environ.get(STATE_ROOT_ENV, DEFAULT_STATE_ROOT)


def netns_prefix(lab: str) -> str:
    """Every namespace of a lab starts with this; cleanup also checks it (the tag)."""
    return f"nl-{lab}-"


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_state(pid: int) -> str | None:
    """The state letter of pid (R, S, D, Z, ...), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class ProcessRecord:
    role: str
    pid: int
    start_time: int

    def alive(self) -> bool:
        """Running, and the same process (a zombie, or a reused pid, is not alive)."""
        return (process_start_time(self.pid) == self.start_time
                and process_state(self.pid) not in ("Z", "X", None))


class StateDir:
    """The folder /run/knetlab/<lab>/ and the records in it."""

    def __init__(self, lab: str, root: str | None = None) -> None:
        self.lab = lab
        self.path = os.path.join(root or state_root(), lab)

    # paths
    @property
    def owned_file(self) -> str:
        return os.path.join(self.path, "owned.jsonl")

    @property
    def store_url(self) -> str:
        """How a process in the host's namespace (CLI, control plane) opens the store."""
        return self._store_info().get("url") or self._sqlite_url

    @property
    def node_store_url(self) -> str:
        """How a node component (agent, runtime), inside its node, opens the store."""
        return self._store_info().get("node_url") or self._sqlite_url

    @property
    def _sqlite_url(self) -> str:
        return f"sqlite://{os.path.join(self.path, 'store.db')}"

    def _store_info(self) -> dict[str, Any]:
        """lab.json's "store" (written by `up`); none: the embedded store."""
        try:
            return self.read_lab().get("store") or {}
        except FileNotFoundError:
            return {}

    @property
    def etcd_data_dir(self) -> str:
        return os.path.join(self.path, "etcd")

    @property
    def config_file(self) -> str:
        return os.path.join(self.path, "cluster.json")

    @property
    def lab_file(self) -> str:
        return os.path.join(self.path, "lab.json")

    def log_path(self, component: str) -> str:
        return os.path.join(self.path, "logs", f"{component}.log")

    def node_dir(self, node: str) -> str:
        return os.path.join(self.path, "nodes", node)

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def create(self) -> None:
        os.makedirs(os.path.join(self.path, "logs"), exist_ok=True)

    # cluster config and lab description
    def write_config(self, config: ClusterConfig, lab_info: dict[str, Any]) -> None:
        with open(self.config_file, "w") as f:
            f.write(config.to_json())
        with open(self.lab_file, "w") as f:
            json.dump(lab_info, f, indent=2)

    def read_config(self) -> ClusterConfig:
        with open(self.config_file) as f:
            return ClusterConfig.from_json(f.read())

    def read_lab(self) -> dict[str, Any]:
        with open(self.lab_file) as f:
            return json.load(f)

    # ownership records
    def record(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"type": kind, **fields}, separators=(",", ":")) + "\n"
        fd = os.open(self.owned_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def records(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        try:
            with open(self.owned_file) as f:
                lines = f.readlines()
        except FileNotFoundError:
            return
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if kind is None or rec.get("type") == kind:
                    yield rec

    def record_netns(self, name: str) -> None:
        self.record("netns", name=name)

    def record_process(self, role: str, pid: int) -> ProcessRecord:
        rec = ProcessRecord(role, pid, process_start_time(pid) or 0)
        self.record("process", role=role, pid=pid, start_time=rec.start_time)
        return rec

    def processes(self) -> list[ProcessRecord]:
        latest: dict[str, ProcessRecord] = {}
        for rec in self.records("process"):
            latest[rec["role"]] = ProcessRecord(rec["role"], rec["pid"], rec["start_time"])
        return list(latest.values())

    def netns_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for rec in self.records("netns"):
            seen[rec["name"]] = None
        return list(seen)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def running_labs(root: str | None = None) -> list[str]:
    base = root or state_root()
    try:
        return sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    except FileNotFoundError:
        return []
