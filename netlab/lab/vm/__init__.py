"""The VM node tier: small QEMU guests running a distribution kernel.

A guest boots the newest kernel in /boot (or KNETLAB_VM_KERNEL) with a tiny
initramfs of our own, mounts the host's root filesystem read-only over 9p (tmpfs
or overlays where a machine must write), and runs `netlab.lab.vm.agent`, which
executes commands the host sends over virtio-serial. So a guest runs the host's
Python, the repo and the kernel tools, with its own kernel (ip_vs, dummy, vxlan as
modules). Guests talk to each other on an L2 bridge inside a namespace the caller
owns; nothing touches the host's root namespace.

    kernel.py     which guest kernel, and which of its modules the initramfs needs
    initramfs.py  the initramfs (busybox, modules, init.sh) as a newc cpio archive
    qemu.py       the QEMU command line (pure) and the accelerator choice
    network.py    the L2 between guests: a bridge and tap devices in a namespace
    channel.py    host side of the command channel (run argv, get rc/stdout/stderr)
    agent.py      guest side of the command channel
    machine.py    one guest: boot, run, shut down, clean up by recorded pid
"""
