#!/bin/busybox sh
# The guest's first process, run from the initramfs (netlab/lab/vm/initramfs.py).
#
# Loads the drivers listed in /modules.order, mounts the host's root read-only over
# 9p, gives the machine the writable places it needs (tmpfs on /run and /tmp,
# tmpfs-backed overlays on the dirs named in netlab.overlay), configures eth0 from
# the kernel command line, and switches to the host's root, where a shell stays
# PID 1 (it reaps orphans) and keeps the command agent running.
#
# Kernel command line (dotted names: the kernel keeps them out of init's argv):
#   netlab.python=PATH   interpreter that runs netlab.lab.vm.agent
#   netlab.path=DIR      PYTHONPATH for it (the folder holding the netlab package)
#   netlab.overlay=A,B   directories made writable (changes stay in the guest)
#   netlab.hostname=NAME netlab.ip=ADDR/LEN netlab.gw=ADDR netlab.mtu=N

/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin:/sbin

fail() {
    echo "netlab-init: $*" >&2
    echo "netlab-init: powering off" >&2
    poweroff -f
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
cmdline=$(cat /proc/cmdline)

param() {
    for word in $cmdline; do
        case "$word" in "netlab.$1="*) echo "${word#netlab.$1=}"; return;; esac
    done
}

for module in $(cat /modules.order); do
    insmod "/modules/$module" || fail "insmod $module failed"
done

mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /newroot \
    || fail "cannot mount the host's root filesystem (9p tag hostroot)"
# A checkout under the host's /tmp or /run (a clone in /tmp) would vanish under the
# guest's own tmpfs: bring it back from a view of the host's root taken before them.
mkdir -p /hostroot
mount --bind /newroot /hostroot || fail "bind the host's root"
mount -t tmpfs -o mode=0755 run /newroot/run || fail "tmpfs /run"
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fail "tmpfs /tmp"
src=$(param path)
case "$src" in
    /tmp/*|/run/*)
        mkdir -p "/newroot$src"
        mount --bind "/hostroot$src" "/newroot$src" || fail "bind the checkout $src";;
esac
umount /hostroot
n=0
for dir in $(param overlay | tr ',' ' '); do
    [ -d "/newroot$dir" ] || continue
    n=$((n + 1))
    rw="/newroot/run/.overlay/$n"
    mkdir -p "$rw/upper" "$rw/work"
    mount -t overlay overlay -o "lowerdir=/newroot$dir,upperdir=$rw/upper,workdir=$rw/work" \
        "/newroot$dir" || fail "overlay on $dir"
done
for fs in proc sys dev; do
    mount --move "/$fs" "/newroot/$fs" || fail "move /$fs"
done
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm

hostname "$(param hostname)"
ip link set lo up
ip_addr=$(param ip)
if [ -n "$ip_addr" ]; then
    mtu=$(param mtu)
    ip link set eth0 ${mtu:+mtu "$mtu"} up || fail "no eth0"
    ip addr add "$ip_addr" dev eth0 || fail "address $ip_addr on eth0"
    gw=$(param gw)
    [ -z "$gw" ] || ip route add default via "$gw" dev eth0 || fail "default route via $gw"
fi

python=$(param python)
# Tested inside the new root: a virtualenv's python is a symlink to an absolute path.
chroot /newroot test -x "$python" || fail "no interpreter $python in the host's filesystem"
echo "netlab-init: root mounted, starting the agent"
# The interpreter's folder first: `python3` in the guest is the host's (with its packages).
exec switch_root /newroot /usr/bin/env -i \
    PATH="${python%/*}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root \
    PYTHONPATH="$(param path)" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    /bin/sh -c "while :; do '$python' -m netlab.lab.vm.agent; sleep 1; done"
