"""The QEMU command line of a guest, built as data (unit-testable, no QEMU needed).

TCG (pure emulation) is the default: it is slow but works everywhere, where KVM
is not always usable (on the machines this was built on, /dev/kvm exists but
hangs guests). KNETLAB_VM_ACCEL=kvm opts in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from netlab.lab.vm.kernel import VmError

ACCEL_ENV = "KNETLAB_VM_ACCEL"
QEMU_BINARY = "qemu-system-x86_64"
ROOT_TAG = "hostroot"
AGENT_PORTS = 4  # one per concurrent host process (test session, knetlab exec, ...)


@dataclass(frozen=True)
class Nic:
    """eth0 of a guest: a tap device (in the L2 namespace) and its static address."""

    tap: str
    mac: str
    address: str  # "192.168.10.2/24"
    gateway: str | None = None
    mtu: int = 1500


@dataclass(frozen=True)
class QemuSpec:
    name: str
    kernel_image: str
    initramfs: str
    console_log: str
    agent_sockets: tuple[str, ...]
    python: str  # the host interpreter the guest agent runs on
    python_path: str  # folder holding the netlab package
    overlays: tuple[str, ...]  # dirs writable in the guest (tmpfs-backed overlays)
    memory_mb: int = 768
    cpus: int = 1
    accel: str = "tcg"
    nic: Nic | None = None
    extra_append: tuple[str, ...] = field(default_factory=tuple)


def accel_from_env() -> str:
    accel = os.environ.get(ACCEL_ENV, "tcg")
    if accel not in ("tcg", "kvm"):
        raise VmError(f"{ACCEL_ENV}={accel!r}: use tcg (default) or kvm")
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise VmError(f"{ACCEL_ENV}=kvm but /dev/kvm is not usable")
    return accel


def find_qemu() -> str:
    path = shutil.which(QEMU_BINARY)
    if path is None:
        raise VmError(f"{QEMU_BINARY} not found (apt-get install qemu-system-x86)")
    return path


def kernel_command_line(spec: QemuSpec) -> str:
    words = ["console=ttyS0", "panic=-1", "quiet", "loglevel=4", "net.ifnames=0",
             f"netlab.python={spec.python}", f"netlab.path={spec.python_path}",
             f"netlab.hostname={spec.name}"]
    if spec.overlays:
        words.append(f"netlab.overlay={','.join(spec.overlays)}")
    if spec.nic is not None:
        words += [f"netlab.ip={spec.nic.address}", f"netlab.mtu={spec.nic.mtu}"]
        if spec.nic.gateway:
            words.append(f"netlab.gw={spec.nic.gateway}")
    words += spec.extra_append
    if any(" " in w for w in words):
        raise VmError(f"guest {spec.name}: kernel command line words must not contain "
                      f"spaces: {[w for w in words if ' ' in w]}")
    return " ".join(words)


def qemu_argv(spec: QemuSpec, qemu: str = QEMU_BINARY) -> list[str]:
    """Everything QEMU needs; the host's / is exported read-only as 9p tag `hostroot`."""
    if spec.accel == "kvm":
        machine = ["-accel", "kvm", "-cpu", "host"]
    else:
        # tb-size: TCG's translation cache; the default (1 GiB) per guest is wasted here.
        machine = ["-accel", "tcg,tb-size=256", "-cpu", "max"]
    argv = [qemu, "-name", spec.name, "-machine", "pc", *machine,
            "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", spec.kernel_image, "-initrd", spec.initramfs,
            "-append", kernel_command_line(spec),
            "-chardev", f"file,id=console,path={spec.console_log}",
            "-serial", "chardev:console",
            "-fsdev", "local,id=root,path=/,security_model=passthrough,readonly=on,"
                      "multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev=root,mount_tag={ROOT_TAG}",
            "-device", "virtio-serial-pci,id=serial0"]
    for i, path in enumerate(spec.agent_sockets):
        argv += ["-chardev", f"socket,id=agent{i},path={path},server=on,wait=off",
                 "-device", f"virtserialport,bus=serial0.0,chardev=agent{i},"
                            f"name=netlab.agent.{i}"]
    if spec.nic is not None:
        argv += ["-netdev", f"tap,id=net0,ifname={spec.nic.tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=net0,mac={spec.nic.mac}"]
    return argv
