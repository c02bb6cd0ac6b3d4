"""Kernel tools (iptables, nft, ...) run in a chosen network namespace.

The child is forked while the calling thread is inside the namespace, and inherits
it; cheaper than `ip netns exec` (no mount namespace, no /sys remount). A `None`
namespace means the one this process runs in (agents inside a node or a VM).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence

from netlab.errors import KernelError
from netlab.kernel import netns


@contextlib.contextmanager
def inside(namespace: str | None) -> Iterator[None]:
    if namespace is None:
        yield
    else:
        with netns.entered(namespace):
            yield


def run_in(namespace: str | None, argv: Sequence[str], *, stdin: str | None = None,
           env: Mapping[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv in the namespace; KernelError if it cannot start, or fails with check."""
    with inside(namespace):
        try:
            proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                                  env=None if env is None else dict(env), check=False)
        except OSError as exc:
            raise KernelError(f"{argv[0]}: {exc.strerror}") from exc
    if check and proc.returncode != 0:
        raise KernelError(f"{' '.join(argv[:4])}: {proc.stderr.strip() or proc.returncode}")
    return proc
