"""The guest's initramfs: busybox, the boot drivers, and init.sh, as a newc cpio archive.

Our own initramfs, not the distribution's: Debian's (tens of MB, made by
update-initramfs for a disk root) knows nothing of a 9p root, and building ours
takes a fraction of a second, so it is rebuilt for every boot and never cached.
The archive format is the kernel's "newc" cpio, written here directly.
"""

from __future__ import annotations

import os
import shutil
import stat
from importlib import resources

from netlab.lab.vm.kernel import GuestKernel, VmError, boot_modules, read_module

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class CpioWriter:
    """Writes entries of a newc ("070701") cpio archive."""

    def __init__(self, out: bytearray) -> None:
        self.out = out
        self.inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
               ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self.inode += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self._pad()
        self.out += data
        self._pad()

    def _pad(self) -> None:
        self.out += b"\0" * (-len(self.out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0)


def find_busybox() -> str:
    """A statically linked busybox (Debian's busybox-static): the initramfs has no libc."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path) and _is_static(path):
            return path
    found = shutil.which("busybox")
    if found and _is_static(found):
        return found
    raise VmError("no statically linked busybox for the guest's initramfs "
                  "(apt-get install busybox-static)")


def _is_static(path: str) -> bool:
    """An ELF without a PT_INTERP program header needs no dynamic loader."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") != 3
               for i in range(phnum))


def init_script() -> bytes:
    return resources.files("netlab.lab.vm").joinpath("init.sh").read_bytes()


def build(kernel: GuestKernel, dest: str) -> str:
    """Write the initramfs for `kernel` to `dest`; returns `dest`."""
    modules = boot_modules(kernel)
    archive = bytearray()
    cpio = CpioWriter(archive)
    for directory in ("bin", "dev", "modules"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)  # init's stdio, before devtmpfs is mounted
    with open(find_busybox(), "rb") as f:
        cpio.file("bin/busybox", f.read(), 0o755)
    cpio.file("init", init_script(), 0o755)
    names = []
    for relpath in modules:
        name = os.path.basename(relpath).split(".ko", 1)[0] + ".ko"
        cpio.file(f"modules/{name}", read_module(kernel, relpath))
        names.append(name)
    cpio.file("modules.order", "".join(f"{n}\n" for n in names).encode())
    cpio.finish()
    with open(dest, "wb") as f:
        f.write(archive)
    return dest
