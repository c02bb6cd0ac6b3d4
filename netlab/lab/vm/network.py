"""The L2 network between guests: a bridge in a namespace the caller owns, one tap per guest.

QEMU runs inside that namespace (nsenter --net), so the taps it opens exist only
there and the host's root namespace never sees a guest's traffic. With a gateway
address on the bridge, the namespace is also where the host reaches the guests
(the lab's CLI dials etcd in the first guest from there), as `underlay` is for
namespace nodes.
"""

from __future__ import annotations

import hashlib

from pyroute2 import IPRoute

from netlab.errors import KernelError
from netlab.kernel import netns

BRIDGE = "br-underlay"  # the same name as the namespace backend's underlay bridge


def create_bridge_netns(name: str, gateway: str | None = None, prefixlen: int = 24,
                        mtu: int = 1500) -> None:
    """A namespace holding an up bridge (with `gateway`/`prefixlen` on it, if given).

    The caller records `name` (state dir, or its own fixture) before calling.
    """
    netns.create(name)
    with netns.entered(name):
        ipr = IPRoute()
    with ipr:
        ipr.link("set", index=1, state="up")
        ipr.link("add", ifname=BRIDGE, kind="bridge", mtu=mtu)
        index = ipr.link_lookup(ifname=BRIDGE)[0]
        if gateway:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")


def add_tap(netns_name: str, tap: str, mtu: int = 1500) -> None:
    """A persistent tap on the namespace's bridge, for QEMU to open by name.

    A tap is made by an ioctl on /dev/net/tun, which acts in the calling thread's
    namespace, not the netlink socket's: the whole call stays inside `entered`.
    """
    with netns.entered(netns_name), IPRoute() as ipr:
        ipr.link("add", ifname=tap, kind="tuntap", mode="tap", no_pi=True)
        found = ipr.link_lookup(ifname=tap)
        if not found:
            raise KernelError(f"tap {tap} did not appear in namespace {netns_name}")
        bridge = ipr.link_lookup(ifname=BRIDGE)[0]
        ipr.link("set", index=found[0], master=bridge, mtu=mtu, state="up")


def mac_for(name: str) -> str:
    """A stable, locally administered MAC for a guest (QEMU's 52:54:00 prefix)."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
