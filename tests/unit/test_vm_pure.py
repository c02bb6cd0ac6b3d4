"""The VM tier's pure parts: kernel choice, module order, initramfs, QEMU argv, channel.

No QEMU here: the guest agent and the host channel talk over a unix socket, as they
do over a virtio-serial port (tests/vm boots real guests).
"""

from __future__ import annotations

import lzma
import os
import socket
import stat
import struct
import threading
from pathlib import Path

import pytest

from netlab.lab.vm import agent, kernel, network
from netlab.lab.vm.channel import Channel, VmCommandError
from netlab.lab.vm.initramfs import CpioWriter
from netlab.lab.vm.kernel import GuestKernel, VmError
from netlab.lab.vm.qemu import Nic, QemuSpec, accel_from_env, kernel_command_line, qemu_argv


def fake_bzimage(path: Path, version: str, payload: bytes = b"") -> Path:
    """Enough of a bzImage for the setup header's version pointer, then a payload."""
    header = bytearray(0x400)
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", header, 0x20E, 0x100)  # version string at 0x200 + 0x100
    text = f"{version} (builder@example) #1 SMP".encode()
    header[0x300:0x300 + len(text)] = text
    path.write_bytes(bytes(header) + payload)
    return path


def fake_modules(root: Path, version: str) -> Path:
    moddir = root / version
    (moddir / "kernel").mkdir(parents=True)
    (moddir / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\n"
        "kernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/fs/overlayfs/overlay.ko:\n")
    (moddir / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    return moddir


def elf_with_notes(notes: list[tuple[bytes, int]]) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding (name, type) notes."""
    body = b""
    for name, ntype in notes:
        name0 = name + b"\0"
        body += struct.pack("<III", len(name0), 4, ntype) + name0.ljust(
            (len(name0) + 3) // 4 * 4, b"\0") + b"\0\0\0\0"
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = 2
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(body), len(body), 4)
    return bytes(header) + phdr + body


# -- kernel -------------------------------------------------------------------------


def test_image_version_reads_the_setup_header(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "vmlinuz-anything", "6.1.0-56-amd64")
    assert kernel.image_version(str(image)) == "6.1.0-56-amd64"
    (tmp_path / "not-a-kernel").write_bytes(b"\0" * 0x400)
    assert kernel.image_version(str(tmp_path / "not-a-kernel")) is None


def test_newest_kernel_with_modules_is_chosen(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernel.KERNEL_ENV, raising=False)
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for version in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.0-1-amd64"):
        fake_bzimage(boot / f"vmlinuz-{version}", version)
    fake_modules(mods, "6.1.0-9-amd64")
    fake_modules(mods, "6.1.0-56-amd64")  # 6.12 has no modules: not bootable here
    chosen = kernel.find_kernel(str(mods), str(boot))
    assert chosen.version == "6.1.0-56-amd64"
    assert chosen.image == str(boot / "vmlinuz-6.1.0-56-amd64")


def test_no_kernel_names_the_package_to_install(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernel.KERNEL_ENV, raising=False)
    with pytest.raises(VmError, match="linux-image-amd64"):
        kernel.find_kernel(str(tmp_path), str(tmp_path))


def test_kernel_from_env_needs_its_modules(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    image = fake_bzimage(tmp_path / "my-kernel", "6.6.6-custom")
    monkeypatch.setenv(kernel.KERNEL_ENV, str(image))
    with pytest.raises(VmError, match="6.6.6-custom"):
        kernel.find_kernel(str(tmp_path / "modules"), str(tmp_path))
    fake_modules(tmp_path / "modules", "6.6.6-custom")
    assert kernel.find_kernel(str(tmp_path / "modules"), str(tmp_path)).image == str(image)


def test_boot_modules_come_dependencies_first_without_builtins(tmp_path: Path) -> None:
    moddir = fake_modules(tmp_path, "v")
    guest = GuestKernel("v", "", str(moddir))
    order = kernel.boot_modules(guest, ("virtio_pci", "9pnet_virtio", "9p", "overlay"))
    assert order == ["kernel/net/9p/9pnet.ko", "kernel/drivers/virtio/virtio.ko",
                     "kernel/net/9p/9pnet_virtio.ko", "kernel/fs/netfs/netfs.ko",
                     "kernel/fs/9p/9p.ko", "kernel/fs/overlayfs/overlay.ko"]
    with pytest.raises(VmError, match="virtio_console"):
        kernel.boot_modules(guest, ("virtio_console",))


def test_pvh_kernel_is_decompressed_once_into_the_cache(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernel.CACHE_ENV, str(tmp_path / "cache"))
    elf = elf_with_notes([(b"Xen", 5), (b"Xen", kernel.XEN_ELFNOTE_PHYS32_ENTRY)])
    image = fake_bzimage(tmp_path / "vmlinuz-v", "v",
                         lzma.compress(elf, format=lzma.FORMAT_XZ))
    guest = GuestKernel("v", str(image), str(tmp_path))
    booted = kernel.boot_image(guest)
    assert booted.startswith(str(tmp_path / "cache")) and Path(booted).read_bytes() == elf
    assert kernel.boot_image(guest) == booted


def test_kernel_without_pvh_boots_as_a_bzimage(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernel.CACHE_ENV, str(tmp_path / "cache"))
    elf = elf_with_notes([(b"Xen", 5), (b"GNU", kernel.XEN_ELFNOTE_PHYS32_ENTRY)])
    image = fake_bzimage(tmp_path / "vmlinuz-v", "v", lzma.compress(elf))
    assert kernel.boot_image(GuestKernel("v", str(image), "")) == str(image)
    assert not (tmp_path / "cache").exists()


# -- initramfs ------------------------------------------------------------------------


def read_cpio(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, contents) of each newc entry, checking the format as the kernel does."""
    entries, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701" and pos % 4 == 0
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(name_start + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data[body:body + size]))
        pos = body + size + (-(body + size) % 4)


def test_cpio_archive_is_newc_the_kernel_can_unpack() -> None:
    out = bytearray()
    cpio = CpioWriter(out)
    cpio.directory("bin")
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("odd", b"12345")
    cpio.finish()
    entries = read_cpio(bytes(out))
    assert [(n, stat.S_IFMT(m)) for n, m, _ in entries] == [
        ("bin", stat.S_IFDIR), ("init", stat.S_IFREG), ("dev/console", stat.S_IFCHR),
        ("odd", stat.S_IFREG)]
    assert entries[1][2] == b"#!/bin/sh\n" and entries[1][1] & 0o777 == 0o755
    assert entries[3][2] == b"12345"


# -- QEMU command line ----------------------------------------------------------------


def spec(**changes: object) -> QemuSpec:
    base = dict(name="n1", kernel_image="/k", initramfs="/i", console_log="/c",
                agent_sockets=("/s0", "/s1"), python="/py/bin/python3", python_path="/src",
                overlays=("/etc", "/src"))
    return QemuSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_tcg_is_the_default_and_kvm_an_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNETLAB_VM_ACCEL", raising=False)
    assert accel_from_env() == "tcg"
    monkeypatch.setenv("KNETLAB_VM_ACCEL", "hvf")
    with pytest.raises(VmError, match="tcg .*kvm"):
        accel_from_env()
    argv = qemu_argv(spec())
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    kvm = qemu_argv(spec(accel="kvm"))
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"


def test_host_root_is_exported_read_only_and_each_port_has_a_socket() -> None:
    argv = qemu_argv(spec())
    fsdev = argv[argv.index("-fsdev") + 1]
    assert "path=/," in fsdev and "readonly=on" in fsdev
    sockets = [a for a in argv if a.startswith("socket,")]
    assert sockets == ["socket,id=agent0,path=/s0,server=on,wait=off",
                       "socket,id=agent1,path=/s1,server=on,wait=off"]
    assert "virtserialport,bus=serial0.0,chardev=agent1,name=netlab.agent.1" in argv
    assert "-netdev" not in argv  # no nic: no network device at all


def test_nic_is_a_tap_with_its_address_on_the_command_line() -> None:
    nic = Nic("tap2", "52:54:00:aa:bb:cc", "192.168.10.3/24", "192.168.10.1", 1450)
    argv = qemu_argv(spec(nic=nic))
    assert "tap,id=net0,ifname=tap2,script=no,downscript=no" in argv
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc" in argv
    words = kernel_command_line(spec(nic=nic)).split()
    assert {"netlab.ip=192.168.10.3/24", "netlab.gw=192.168.10.1", "netlab.mtu=1450",
            "netlab.overlay=/etc,/src", "netlab.python=/py/bin/python3"} <= set(words)


def test_command_line_words_with_spaces_are_refused() -> None:
    with pytest.raises(VmError, match="spaces"):
        kernel_command_line(spec(python_path="/my src"))


def test_guest_macs_are_stable_and_locally_administered() -> None:
    mac = network.mac_for("lab/worker-1")
    assert mac == network.mac_for("lab/worker-1") != network.mac_for("lab/worker-2")
    assert mac.startswith("52:54:00:") and int(mac.split(":")[0], 16) & 0x02


# -- the command channel, agent and host side over a unix socket ----------------------


@pytest.fixture
def channel(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "agent0.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def accept() -> None:
        conn, _ = server.accept()
        agent.serve(agent.Port(conn.detach()))

    threading.Thread(target=accept, daemon=True).start()
    ch = Channel("fake", [path], connect_timeout=5)
    yield ch
    ch.close()
    server.close()


def test_run_returns_rc_stdout_and_stderr(channel: Channel) -> None:
    result = channel.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(VmCommandError, match="exit status 3"):
        result.check()


def test_output_streams_to_the_log_and_stdin_is_passed(channel: Channel,
                                                       tmp_path: Path) -> None:
    with open(tmp_path / "log", "wb") as log:
        result = channel.run(["tr", "a-z", "A-Z"], timeout=10, input=b"hello\n", log=log)
    assert result.stdout == "HELLO\n" and (tmp_path / "log").read_bytes() == b"HELLO\n"


def test_commands_run_concurrently_on_one_port(channel: Channel) -> None:
    results: list[str] = []
    slow = threading.Thread(target=lambda: results.append(
        channel.run(["sh", "-c", "sleep 1; echo slow"], timeout=10).stdout))
    slow.start()
    assert channel.run(["echo", "fast"], timeout=5).stdout == "fast\n"
    assert results == []  # the fast one came back while the slow one still ran
    slow.join()
    assert results == ["slow\n"]


def test_timeout_kills_the_whole_process_group(channel: Channel, tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    result = channel.run(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"], timeout=0.5)
    assert result.timed_out and not result.ok
    channel.run(["sleep", "2.5"], timeout=5)
    assert not marker.exists()


def test_missing_program_is_rc_127_like_a_shell(channel: Channel) -> None:
    result = channel.run(["/nonexistent/tool"], timeout=5)
    assert result.rc == 127 and "/nonexistent/tool" in result.stderr


def test_spawned_process_outlives_the_request(channel: Channel, tmp_path: Path) -> None:
    log = tmp_path / "spawned.log"
    pid = channel.spawn(["sh", "-c", "echo started; sleep 0.3; echo done"], str(log))
    assert pid > 0
    channel.run(["sleep", "0.8"], timeout=5)
    assert log.read_text() == "started\ndone\n"
    assert not os.path.exists(f"/proc/{pid}")  # exited, and reaped by the agent
