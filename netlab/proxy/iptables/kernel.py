"""iptables-legacy inside one network namespace: the only place this mode touches the kernel.

Commands run as child processes forked while the calling thread is inside the
node's namespace (`netns.entered`), which the child inherits; that is cheaper
than `ip netns exec` (no mount namespace, no /sys remount). The legacy backend
is used because python-iptables (trace, inspection) reads only that one.

A `None` namespace means "the namespace this process runs in", for node
agents that run inside a VM; labs on one host always pass a name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from netlab.errors import KernelError
from netlab.kernel import commands
from netlab.proxy.iptables.names import KUBE_PROXY_CANARY
from netlab.proxy.iptables.render import CANARY_TABLES, JumpRule

log = logging.getLogger(__name__)

IPTABLES = "iptables-legacy"
RESTORE = "iptables-legacy-restore"
SAVE = "iptables-legacy-save"
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_FAILED_LINE = re.compile(r"line (\d+) failed")
_CHAIN_NAME = re.compile(r"^:(\S+)", re.MULTILINE)


@dataclass
class SavedTable:
    """What a sync needs from iptables-save: chain names and the built-in chains' rules."""

    chains: set[str] = field(default_factory=set)
    builtin_rules: set[str] = field(default_factory=set)  # "-A CHAIN …" lines


def parse_save(text: str) -> dict[str, SavedTable]:
    """Split iptables-save output per table (only chain names and built-in rules kept).

    iptables-save prints a table's chain declarations first, then the rules
    of the built-in chains, then the user chains' rules. Only that head is
    read: at 10,000 services the nat table dumps ~430,000 lines, of which the
    head is a quarter, and a Python loop over all of them costs a second.
    """
    tables: dict[str, SavedTable] = {}
    pos = 0 if text.startswith("*") else text.find("\n*")
    if pos > 0:
        pos += 1
    while pos != -1:
        eol = text.find("\n", pos)
        name = text[pos + 1:eol]
        table = tables[name] = SavedTable()
        pos = eol + 1
        end = min(i for i in (text.find("\n-A ", pos - 1), text.find("\nCOMMIT", pos - 1))
                  if i != -1) + 1
        table.chains.update(_CHAIN_NAME.findall(text, pos, end))
        pos = end
        while text.startswith("-A ", pos):
            eol = text.find("\n", pos)
            line = text[pos:eol]
            if line.split(" ", 2)[1] not in BUILTIN_CHAINS:
                break
            table.builtin_rules.add(line)
            pos = eol + 1
        commit = text.find("\nCOMMIT\n", pos - 1)  # pos - 1: a table may have no rules
        pos = text.find("\n*", commit) if commit != -1 else -1
        if pos != -1:
            pos += 1
    return tables


class IptablesKernel:
    """Runs iptables-legacy commands in a node's namespace."""

    def __init__(self, netns: str | None, *, lock_wait: int = 5,
                 lock_file: str | None = None) -> None:
        if netns is not None and not netns:
            raise KernelError("empty network namespace name")
        self.netns = netns
        self.lock_wait = lock_wait
        self._env = dict(os.environ)
        if lock_file:
            # iptables honours XTABLES_LOCKFILE; a lock per node lets nodes of one
            # host sync in parallel (their tables are independent).
            self._env["XTABLES_LOCKFILE"] = lock_file

    def _inside(self) -> contextlib.AbstractContextManager[None]:
        return commands.inside(self.netns)

    def _run(self, argv: Sequence[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return commands.run_in(self.netns, argv, stdin=stdin, env=self._env, check=check)

    def save(self, table: str | None = None) -> str:
        """iptables-save output of one table, or of every loaded table."""
        return self.start_save(table)()

    def start_save(self, table: str | None = None) -> Callable[[], str]:
        """Start iptables-save and return a function that waits for its output.

        The output goes to a temporary file rather than a pipe, so the child
        never blocks on a full pipe while the caller renders in the meantime.
        """
        argv = [SAVE] + (["-t", table] if table else [])
        out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by result()
        with self._inside():
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True,
                                        env=self._env)
            except OSError as exc:
                out.close()
                raise KernelError(f"{SAVE}: {exc.strerror}") from exc

        def result() -> str:
            with out:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise KernelError(f"{' '.join(argv)}: {err.strip() or proc.returncode}")
                out.seek(0)
                return out.read()

        return result

    def restore(self, payload: str) -> None:
        """Apply a payload atomically per table (`--noflush --counters`), in one process."""
        argv = [RESTORE, "-w", str(self.lock_wait), "-W", "100000", "--noflush", "--counters"]
        proc = self._run(argv, stdin=payload, check=False)
        if proc.returncode != 0:
            detail = proc.stderr.strip()
            match = _FAILED_LINE.search(detail)
            if match:
                lines = payload.splitlines()
                n = int(match.group(1))
                context = "\n".join(f"{i + 1}: {lines[i]}"
                                    for i in range(max(0, n - 3), min(len(lines), n + 2)))
                detail = f"{detail}\n{context}"
            raise KernelError(f"iptables-restore failed: {detail}")

    def has_rule(self, rule: JumpRule) -> bool:
        """`iptables -C`: does the built-in chain already hold this rule?"""
        argv = [IPTABLES, "-w", str(self.lock_wait), "-t", rule.table, "-C", rule.chain,
                *rule.argv()]
        return self._run(argv, check=False).returncode == 0

    def chain_exists(self, table: str, chain: str) -> bool:
        argv = [IPTABLES, "-w", str(self.lock_wait), "-t", table, "-S", chain]
        return self._run(argv, check=False).returncode == 0

    def canaries_present(self) -> bool:
        """False once any table lost KUBE-PROXY-CANARY, i.e. someone flushed it.

        kube-proxy only watches the mangle canary, so a flush of nat alone goes
        unnoticed until its next full sync; we look at all three tables.
        """
        return all(self.chain_exists(t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)

    def read_sysctl(self, name: str) -> str | None:
        with self._inside():
            try:
                with open(f"/proc/sys/{name.replace('.', '/')}") as f:
                    return f.read().strip()
            except OSError:
                return None

    def write_sysctl(self, name: str, value: str) -> None:
        """Set a per-namespace sysctl (the file is resolved in the calling thread's netns)."""
        with self._inside():
            try:
                with open(f"/proc/sys/{name.replace('.', '/')}", "w") as f:
                    f.write(value)
            except OSError as exc:
                raise KernelError(f"sysctl {name}={value}: {exc.strerror}") from exc

    def supports_random_fully(self) -> bool:
        """MASQUERADE --random-fully needs iptables >= 1.6.2 (kernel >= 3.13)."""
        out = self._run([IPTABLES, "--version"], check=False).stdout
        match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
        return bool(match) and tuple(int(x) for x in match.groups()) >= (1, 6, 2)
