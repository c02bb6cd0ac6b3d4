"""iptables (legacy backend) for the namespace of the calling thread.

Lab namespaces use the legacy backend because python-iptables (which reads rules
and counters for traces and checks) speaks to it. Rules are applied as text with
one `iptables-legacy-restore --noflush` call, which the kernel applies per table
atomically.
"""

from __future__ import annotations

import subprocess

from netlab.errors import KernelError

IPTABLES = "iptables-legacy"
RESTORE = "iptables-legacy-restore"
SAVE = "iptables-legacy-save"


def restore(payload: str, *, counters: bool = False) -> None:
    """Apply an iptables-restore payload without flushing what it does not name."""
    args = [RESTORE, "--noflush", "-w", "5"] + (["--counters"] if counters else [])
    result = subprocess.run(args, input=payload, text=True, capture_output=True)
    if result.returncode != 0:
        raise KernelError(f"{RESTORE} failed: {result.stderr.strip()}")


def save(table: str | None = None) -> str:
    args = [SAVE] + (["-t", table] if table else [])
    result = subprocess.run(args, text=True, capture_output=True)
    if result.returncode != 0:
        raise KernelError(f"{SAVE} failed: {result.stderr.strip()}")
    return result.stdout


def ensure_rule(table: str, chain: str, rule: list[str], *, position: int = 1) -> bool:
    """Insert rule at position unless an identical rule exists; True if it was inserted.

    This is how kube-proxy and flannel hook their chains into the built-in ones:
    check with -C, insert with -I, never re-order an existing rule.
    """
    base = [IPTABLES, "-w", "5", "-t", table]
    if subprocess.run(base + ["-C", chain, *rule], capture_output=True).returncode == 0:
        return False
    result = subprocess.run(base + ["-I", chain, str(position), *rule],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise KernelError(f"iptables -t {table} -I {chain} {' '.join(rule)}: "
                          f"{result.stderr.strip()}")
    return True
