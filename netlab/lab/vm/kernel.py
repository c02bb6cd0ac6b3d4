"""Which kernel a guest boots, and which of its modules must be in the initramfs.

The guest kernel is a distribution kernel installed on the host (Debian's
linux-image-amd64): its modules live in the host's /lib/modules/<version>, which
the guest sees through the shared root filesystem, so `modprobe ip_vs` works in
the guest once its root is mounted. Only the drivers needed to mount that root
and talk to the host (virtio, 9p, overlay) go into the initramfs.
"""

from __future__ import annotations

import glob
import gzip
import lzma
import os
import re
import struct
import zlib
from dataclasses import dataclass

from netlab.errors import NetlabError

KERNEL_ENV = "KNETLAB_VM_KERNEL"
CACHE_ENV = "KNETLAB_VM_CACHE"
DEFAULT_CACHE = "/var/cache/knetlab"
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU boots an ELF kernel through

# What the initramfs loads before it can mount the host's root and serve commands.
BOOT_MODULES = ("virtio_pci", "virtio_console", "virtio_net", "9pnet_virtio", "9p", "overlay")


class VmError(NetlabError):
    """A guest cannot be built, booted or reached."""


@dataclass(frozen=True)
class GuestKernel:
    version: str  # what `uname -r` says in the guest
    image: str  # the bzImage QEMU boots
    modules_dir: str  # /lib/modules/<version>


def image_version(image: str) -> str | None:
    """The version string a bzImage carries in its setup header (None if not a bzImage).

    Reading it from the image, not the file name, lets KNETLAB_VM_KERNEL point at any
    file name and still find the matching modules.
    """
    try:
        with open(image, "rb") as f:
            header = f.read(0x210)
            if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
                return None
            offset = struct.unpack_from("<H", header, 0x20E)[0]
            f.seek(0x200 + offset)
            text = f.read(256).split(b"\0", 1)[0].decode("ascii", "replace")
    except OSError:
        return None
    return text.split(" ", 1)[0] or None


def _version_key(version: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


def find_kernel(modules_root: str = "/lib/modules", boot: str = "/boot") -> GuestKernel:
    """KNETLAB_VM_KERNEL if set, else the newest /boot/vmlinuz-* that has its modules.

    Raises VmError saying what to install when there is none.
    """
    chosen = os.environ.get(KERNEL_ENV)
    if chosen:
        version = image_version(chosen)
        if version is None:
            raise VmError(f"{KERNEL_ENV}={chosen}: not a readable x86 kernel image (bzImage)")
        modules = os.path.join(modules_root, version)
        if not os.path.isdir(modules):
            raise VmError(f"{KERNEL_ENV}={chosen} is kernel {version}, but {modules} is "
                          "missing: the guest needs that kernel's modules")
        return GuestKernel(version, chosen, modules)
    found = []
    for image in glob.glob(os.path.join(boot, "vmlinuz-*")):
        version = image_version(image) or os.path.basename(image).removeprefix("vmlinuz-")
        modules = os.path.join(modules_root, version)
        if os.path.isdir(modules) and os.access(image, os.R_OK):
            found.append(GuestKernel(version, image, modules))
    if not found:
        raise VmError(f"no guest kernel: no {boot}/vmlinuz-* with modules in {modules_root} "
                      f"(apt-get install linux-image-amd64, or set {KERNEL_ENV})")
    return max(found, key=lambda k: _version_key(k.version))


def boot_image(kernel: GuestKernel) -> str:
    """What QEMU boots: the uncompressed ELF kernel where it can, else the bzImage.

    A bzImage decompresses itself inside the guest; under TCG that emulated xz
    decompression is about 10 s of every boot. Decompressed once on the host (about a
    second) into the cache (KNETLAB_VM_CACHE, default /var/cache/knetlab), the kernel
    boots through its PVH entry point instead. Kernels without PVH, or compressed with
    something the standard library cannot read, boot as they are.
    """
    stat = os.stat(kernel.image)
    cache = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    target = os.path.join(cache, f"vmlinux-{kernel.version}-{stat.st_size}-{int(stat.st_mtime)}")
    if os.path.exists(target):
        return target
    with open(kernel.image, "rb") as f:
        elf = _decompressed(f.read())
    if elf is None or not _has_pvh_entry(elf):
        return kernel.image
    os.makedirs(cache, exist_ok=True)
    partial = f"{target}.{os.getpid()}"
    with open(partial, "wb") as f:
        f.write(elf)
    os.replace(partial, target)  # guests booting at once each write, one rename wins
    return target


def _decompressed(image: bytes) -> bytes | None:
    """The ELF payload of a bzImage compressed with xz or gzip (None otherwise)."""
    for magic, make in ((b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
                        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        start = image.find(magic)
        if start < 0:
            continue
        try:
            data = make().decompress(image[start:])
        except (lzma.LZMAError, zlib.error):
            continue
        if data[:4] == b"\x7fELF":
            return data
    return None


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel carries the Xen PVH entry note QEMU needs to boot it."""
    if elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(phnum):
        ptype, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _module_name(path: str) -> str:
    return os.path.basename(path).split(".ko", 1)[0].replace("-", "_")


def boot_modules(kernel: GuestKernel, wanted: tuple[str, ...] = BOOT_MODULES) -> list[str]:
    """Paths (relative to modules_dir) of `wanted` and their dependencies, in load order.

    Modules built into the kernel are left out; a wanted module that is neither built in
    nor present is an error naming it, since the guest could not boot without it.
    """
    deps: dict[str, tuple[str, list[str]]] = {}
    with open(os.path.join(kernel.modules_dir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[_module_name(path)] = (path, [_module_name(d) for d in rest.split()])
    builtin: set[str] = set()
    with open(os.path.join(kernel.modules_dir, "modules.builtin")) as f:
        builtin = {_module_name(line.strip()) for line in f if line.strip()}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in builtin or deps.get(name, ("",))[0] in order:
            return
        if name not in deps:
            raise VmError(f"kernel {kernel.version} has no module {name!r}, which a guest "
                          "needs to boot")
        path, needs = deps[name]
        for dep in needs:
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def read_module(kernel: GuestKernel, relpath: str) -> bytes:
    """A module's ELF bytes: busybox insmod cannot load compressed modules itself."""
    path = os.path.join(kernel.modules_dir, relpath)
    if path.endswith(".zst"):
        raise VmError(f"{path}: zstd-compressed modules are not supported for the "
                      "initramfs; use a kernel with uncompressed, gzip or xz modules")
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data
