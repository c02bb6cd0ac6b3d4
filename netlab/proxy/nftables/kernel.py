"""`nft` inside one network namespace: the only place this mode touches the kernel.

As in the iptables adapter, commands run as children forked while the calling
thread is inside the node's namespace (`netns.entered`), which they inherit.
Writes are one `nft -f -` transaction each (atomic: a packet sees the old or
the new table, never half of it); reads are JSON (`nft -j`). Everything here
is confined to the `ip kube-proxy` table; other tables in the namespace
(flannel's iptables-legacy rules live elsewhere entirely) are never touched.

A `None` namespace means the namespace this process runs in (agents in a VM).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netlab.errors import KernelError
from netlab.kernel import commands
from netlab.proxy.nftables.names import CLUSTER_IPS, FAMILY, TABLE

NFT = "nft"
_ERROR_LINE = re.compile(r"^(?:/dev/stdin|-):(\d+):", re.MULTILINE)


@dataclass(frozen=True)
class Listed:
    """The chains and sets of our table, as a full sync needs them."""

    chains: dict[str, tuple[str, str, int] | None]  # name -> (type, hook, prio) of base chains
    sets: frozenset[str]


class NftKernel:
    """Runs `nft` in a node's namespace, on the `ip kube-proxy` table only."""

    def __init__(self, netns: str | None) -> None:
        if netns is not None and not netns:
            raise KernelError("empty network namespace name")
        self.netns = netns

    def _run(self, argv: Sequence[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return commands.run_in(self.netns, [NFT, *argv], stdin=stdin, check=check)

    def apply(self, transaction: str) -> None:
        """Apply one transaction atomically; on failure say which line the kernel refused."""
        proc = self._run(["-f", "-"], stdin=transaction, check=False)
        if proc.returncode == 0:
            return
        detail = proc.stderr.strip()
        lines = transaction.splitlines()
        shown = []
        for match in _ERROR_LINE.finditer(detail):
            n = int(match.group(1))
            if 0 < n <= len(lines) and len(shown) < 3:
                shown.append(f"{n}: {lines[n - 1]}")
        first = detail.splitlines()[0] if detail else str(proc.returncode)
        raise KernelError("nft -f failed: " + first + ("\n" + "\n".join(shown) if shown else ""))

    def version(self) -> tuple[int, ...]:
        out = self._run(["--version"]).stdout
        match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
        if not match:
            raise KernelError(f"cannot tell the nft version from {out.strip()!r}")
        return tuple(int(x) for x in match.groups())

    def _json(self, *argv: str) -> list[dict[str, Any]]:
        proc = self._run(["-j", *argv], check=False)
        if proc.returncode != 0:
            if "No such file or directory" in proc.stderr:
                return []  # the table (or family) is not there
            raise KernelError(f"nft -j {' '.join(argv)}: {proc.stderr.strip()}")
        try:
            return json.loads(proc.stdout or '{"nftables": []}')["nftables"]
        except (ValueError, KeyError) as exc:
            raise KernelError(f"nft -j {' '.join(argv)}: unreadable output ({exc})") from exc

    def table_exists(self) -> bool:
        """Is our table there (with its skeleton)? Asked of the cluster-ips set.

        `nft list tables` would be the obvious question, but nft 1.0 fills its
        cache with every rule of every table to answer it (0.5 s at 1,000
        services); listing one set, terse, costs milliseconds.
        """
        argv = ["-t", "list", "set", FAMILY, TABLE, CLUSTER_IPS]
        return self._run(argv, check=False).returncode == 0

    def list_objects(self) -> Listed | None:
        """Our table's chains (with base-chain hooks) and sets, or None without the table.

        Terse (`-t`): set contents are not needed, and at 10,000 services they are big.
        """
        chains: dict[str, tuple[str, str, int] | None] = {}
        for item in self._json("-t", "list", "chains", FAMILY):
            chain = item.get("chain")
            if chain and chain.get("table") == TABLE:
                hook = (chain["type"], chain["hook"], int(chain["prio"])) \
                    if "hook" in chain else None
                chains[chain["name"]] = hook
        if not chains:
            return None
        sets = frozenset(item["set"]["name"] for item in self._json("-t", "list", "sets", FAMILY)
                         if "set" in item and item["set"].get("table") == TABLE)
        return Listed(chains, sets)

    def list_table(self) -> tuple[list[dict[str, Any]], str]:
        """The whole table: `nft -j list table` (structure, counters) and `nft -a list table`.

        The text, with `# handle N` on every rule, gives each rule as nft spells it.
        """
        items = self._json("list", "table", FAMILY, TABLE)
        if not items:
            return [], ""
        text = self._run(["-a", "list", "table", FAMILY, TABLE]).stdout
        return items, text

    def delete_table(self) -> None:
        """kube-proxy's cleanup: the table is ours alone, so deleting it removes everything."""
        if self.table_exists():
            self._run(["delete", "table", FAMILY, TABLE])
