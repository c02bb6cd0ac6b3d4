"""Named network namespaces, made and entered without forking.

`ip netns add` forks a process per namespace and pyroute2 forks a helper per
namespaced socket; with hundreds of pods those forks dominate bring-up time. The
kernel only needs two syscalls: unshare(CLONE_NEWNET) in the calling thread and a
bind mount of that thread's namespace file, which is what iproute2 does too. The
result is an ordinary `/run/netns/<name>` that `ip netns exec` understands.

setns() changes the namespace of the calling thread only, so `entered()` is safe in
a multi-threaded program as long as the body does not hand work to other threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Iterator

from netlab.errors import KernelError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_run_dir_lock = threading.Lock()


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise KernelError(f"{what}: {os.strerror(err)}")


def path_of(name: str) -> str:
    """The bind-mount path of a named namespace (what `ip netns` uses)."""
    return name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path_of(name))


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def prepare_run_dir() -> bool:
    """Make /run/netns a shared mount point, as iproute2 does; True if it was created now.

    The caller records a True answer so cleanup can take the directory away again and
    leave the host exactly as it was.
    """
    with _run_dir_lock:
        created = False
        if not os.path.isdir(NETNS_RUN_DIR):
            os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
            created = True
        if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none",
                               MS_BIND | MS_REC, None), f"bind-mount {NETNS_RUN_DIR}")
            _check(_libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
                   f"make {NETNS_RUN_DIR} shared")
        return created


def release_run_dir() -> None:
    """Undo `prepare_run_dir` when no namespace is left in it (for a dir we created)."""
    with _run_dir_lock:
        if list_names():
            return
        _libc.umount2(NETNS_RUN_DIR.encode(), MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(NETNS_RUN_DIR)


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def create(name: str) -> str:
    """Create the named namespace; raises KernelError if it exists already."""
    path = path_of(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise KernelError(f"network namespace {name} exists already") from None
    except FileNotFoundError:
        prepare_run_dir()
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), f"unshare for netns {name}")
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND,
                               None), f"bind-mount netns {name}")
        finally:
            _setns(home)
    except KernelError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(home)
    return path


def delete(name: str) -> bool:
    """Remove the named namespace; False if it was already gone (deletion is idempotent).

    The kernel frees the namespace (and every link in it) once no process or socket
    holds it; veth peers in other namespaces vanish with it, asynchronously.
    """
    path = path_of(name)
    if not os.path.exists(path):
        return False
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise KernelError(f"remove netns {name}: {exc.strerror}") from exc
    return True


def current_inode() -> int:
    """The namespace the calling thread is in (its inode number identifies it)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _open(name: str) -> int:
    try:
        return os.open(path_of(name), os.O_RDONLY)
    except FileNotFoundError:
        raise KernelError(f"network namespace {name} does not exist") from None


def enter(name: str) -> None:
    """Move the calling thread into the namespace for good, and verify that it did.

    For a process that lives in a node: call it before any thread starts, so every
    thread inherits the namespace. Refuses to return unless the move happened,
    because a component left in the host namespace would change the host.
    """
    target = _open(name)
    try:
        _setns(target)
        if current_inode() != os.fstat(target).st_ino:
            raise KernelError(f"setns into {name} did not take effect")
    finally:
        os.close(target)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace, then come back.

    Sockets (netlink included) created in the body belong to that namespace for life.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = _open(name)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def socket_in(name: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket living in the named namespace (usable from any namespace afterwards)."""
    with entered(name):
        return socket.socket(family, kind)
