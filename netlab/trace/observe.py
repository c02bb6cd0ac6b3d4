"""Thin readers of kernel state inside lab namespaces, for the live trace.

Each function enters one namespace on the calling thread, asks the kernel, and
returns plain data (the types of routing.py, netfilter.py and model.py), so
assemble.py can explain a trace without touching the kernel and its tests can
replay recorded observations.
"""

from __future__ import annotations

import errno
import functools
import gzip
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from netlab.errors import KernelError
from netlab.kernel import netns
from netlab.trace.labview import Listener
from netlab.trace.model import Conntrack, FlowTuple
from netlab.trace.netfilter import Ruleset, parse_save
from netlab.trace.routing import NetState, Route

COUNTED_TABLES = ("nat", "filter")
_iptc_lock = threading.Lock()  # python-iptables keeps one handle per table, process-wide
_ROUTE_KINDS = {1: "unicast", 2: "local", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
RTNH_F_ONLINK = 4
_PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}
_TCP_LISTEN = "0A"


def ruleset_text(netns_name: str) -> str:
    """`iptables-legacy-save` in the namespace: the rules as the simulator reads them."""
    from netlab.proxy.iptables.kernel import IptablesKernel

    return IptablesKernel(netns_name).save()


def nft_table_text(netns_name: str) -> str:
    """`nft list table ip kube-proxy` in the namespace; "" when the table is not there."""
    from netlab.kernel.commands import run_in

    proc = run_in(netns_name, ["nft", "list", "table", "ip", "kube-proxy"], check=False)
    return proc.stdout if proc.returncode == 0 else ""


def nft_listing(netns_name: str) -> tuple[list[dict[str, Any]], str]:
    """kube-proxy's nftables table: its JSON items and its `nft -a` text ([], "" if absent)."""
    from netlab.proxy.nftables.kernel import NftKernel

    return NftKernel(netns_name).list_table()


def nft_rule_counters(netns_name: str) -> dict[tuple[str, str, int], int]:
    """Packet counters of every rule of kube-proxy's nftables table, keyed like RuleHit."""
    from netlab.proxy.nftables.kernel import NftKernel
    from netlab.trace import nft

    return nft.counters(NftKernel(netns_name).list_table()[0])


def node_rules(netns_name: str, proxy_mode: str) -> Ruleset:
    """A node's installed rules: iptables-legacy, kube-proxy's nftables table in nftables
    mode, and the session-affinity lists the rules consult (xt_recent)."""
    from netlab.trace import nft

    rules = parse_save(ruleset_text(netns_name))
    if proxy_mode == "nftables":
        rules.nft = nft.parse_table(*nft_listing(netns_name))
    rules.recent = recent_lists(netns_name)
    return rules


def recent_lists(netns_name: str) -> dict[str, dict[str, float]]:
    """xt_recent lists of the namespace: list -> address -> seconds since last seen.

    kube-proxy's iptables mode keeps one list per endpoint (`KUBE-SEP-…`) for
    sessionAffinity: ClientIP. The kernel prints times in jiffies.
    """
    lists: dict[str, dict[str, float]] = {}
    with netns.entered(netns_name):
        folder = "/proc/thread-self/net/xt_recent"
        if not os.path.isdir(folder):
            return lists
        now = _jiffies()
        for name in os.listdir(folder):
            with open(f"{folder}/{name}") as f:
                lists[name] = parse_recent(f.read(), now, _hz())
    return lists


def parse_recent(text: str, now: int | None, hz: int) -> dict[str, float]:
    """Addresses of one xt_recent list and their age in seconds (0 when `now` is unknown)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        fields = dict(zip(line.split()[1::2], line.split()[2::2], strict=False))
        src = line.split()[0].removeprefix("src=") if line.startswith("src=") else None
        if src is None or "last_seen:" not in fields:
            continue
        seen = int(fields["last_seen:"])
        out[src] = max(0.0, (now - seen) / hz) if now is not None else 0.0
    return out


def forget_affinity(netns_name: str, entries: Iterable[tuple[str, str]]) -> None:
    """Remove session-affinity entries (list or set name, address) a probe created.

    The probe is a new connection, so kube-proxy's rules pinned its client to
    the endpoint they chose; a trace leaves that pin behind no more than a
    conntrack entry. xt_recent lists are written through /proc, nftables
    affinity sets with `nft delete element`.
    """
    from netlab.kernel.commands import run_in

    for name, address in entries:
        if name.startswith("affinity-"):
            run_in(netns_name, ["nft", "delete", "element", "ip", "kube-proxy", name,
                                f"{{ {address} }}"], check=False)
            continue
        with netns.entered(netns_name), \
                open(f"/proc/thread-self/net/xt_recent/{name}", "w") as f:
            f.write(f"-{address}\n")


def _jiffies() -> int | None:
    try:
        with open("/proc/timer_list") as f:
            for line in f:
                if line.startswith("jiffies: "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def _hz() -> int:
    """The kernel's tick rate (CONFIG_HZ): from /proc/config.gz, else from the uptime.

    jiffies start 300 s before wrapping 32 bits (INITIAL_JIFFIES), so
    jiffies - 2**32 = HZ * (uptime - 300).
    """
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=")[1])
    except OSError:
        pass
    jiffies = _jiffies()
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    if jiffies is None or uptime < 600:
        return 250
    estimate = (jiffies - 2**32) / (uptime - 300)
    return min((100, 250, 300, 1000), key=lambda hz: abs(hz - estimate))


def rule_counters(netns_name: str) -> dict[tuple[str, str, int], int]:
    """Packet counters of every rule of nat and filter, read with python-iptables."""
    import iptc

    counts: dict[tuple[str, str, int], int] = {}
    with _iptc_lock, netns.entered(netns_name):
        for name in COUNTED_TABLES:
            table = iptc.Table(name)
            table.refresh()  # the cached handle may belong to another namespace
            for chain in table.chains:
                for position, rule in enumerate(chain.rules, start=1):
                    counts[(name, chain.name, position)] = rule.get_counters()[0]
    return counts


def counter_deltas(before: dict[tuple[str, str, int], int],
                   after: dict[tuple[str, str, int], int]) -> dict[tuple[str, str, int], int]:
    return {key: after[key] - before.get(key, 0) for key in after
            if after[key] - before.get(key, 0) > 0}


def net_state(netns_name: str) -> NetState:
    """Routes of the main table, addresses, neighbours and bridge FDB of the namespace."""
    from pyroute2 import IPRoute

    state = NetState()
    with netns.entered(netns_name), IPRoute() as ipr:
        names = {}
        for link in ipr.get_links():
            names[link["index"]] = link.get_attr("IFLA_IFNAME")
            state.mtu[link.get_attr("IFLA_IFNAME")] = link.get_attr("IFLA_MTU")
        for addr in ipr.get_addr(family=socket.AF_INET):
            ip = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
            state.addresses.setdefault(names.get(addr["index"], "?"), []).append(ip)
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = route.get_attr("RTA_DST") or "0.0.0.0"
            state.routes.append(Route(
                f"{dst}/{route['dst_len']}", names.get(route.get_attr("RTA_OIF"), "?"),
                route.get_attr("RTA_GATEWAY"), _ROUTE_KINDS.get(route["type"], "unicast"),
                route.get_attr("RTA_PREFSRC"), bool(route["flags"] & RTNH_F_ONLINK)))
        for neigh in ipr.get_neighbours(family=socket.AF_INET):
            mac = neigh.get_attr("NDA_LLADDR")
            if mac:
                state.neighbours[(names.get(neigh["ifindex"], "?"),
                                  neigh.get_attr("NDA_DST"))] = mac
        for entry in ipr.get_neighbours(family=socket.AF_BRIDGE):
            remote = entry.get_attr("NDA_DST")
            if remote:
                state.fdb[(names.get(entry["ifindex"], "?"), entry.get_attr("NDA_LLADDR"))] = \
                    remote
    return state


def conntrack_entries(netns_name: str, flows: Iterable[FlowTuple],
                      delete: bool = True) -> list[Conntrack]:
    """The entries whose original tuple starts like one of `flows`; deleted after reading.

    Deleting them is the trace cleaning up after itself: the probe's entries
    would otherwise linger (SYN_SENT for two minutes) in the node's table.
    """
    from pyroute2.conntrack import Conntrack as Ct
    from pyroute2.conntrack import NFCTAttrTuple

    found: list[Conntrack] = []
    wanted = {(f.proto, f.src, f.sport) for f in flows}
    try:
        with netns.entered(netns_name):
            ct = Ct()
            try:
                for proto, src, sport in wanted:
                    match = NFCTAttrTuple(proto=_PROTO[proto], saddr=src)
                    # A dump that races with table changes may repeat entries: key by id.
                    entries = {e.id: e for e in ct.dump_entries(tuple_orig=match)
                               if (e.tuple_orig.icmp_id if proto == "icmp"
                                   else e.tuple_orig.sport) == sport}
                    for entry in entries.values():
                        found.append(_entry(proto, entry))
                        if delete:
                            _delete(ct, entry)
            finally:
                ct.close()
    except OSError as exc:
        raise KernelError(f"conntrack in {netns_name}: {exc}") from exc
    return found


def _delete(ct, entry) -> None:  # type: ignore[no-untyped-def]
    """Delete an entry; one that expired since the dump is fine."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ct.delete(entry)
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise


def _entry(proto: str, entry) -> Conntrack:  # type: ignore[no-untyped-def]
    def tup(t) -> FlowTuple:  # type: ignore[no-untyped-def]
        if proto == "icmp":
            return FlowTuple(proto, t.saddr, t.icmp_id or 0, t.daddr, 0)
        return FlowTuple(proto, t.saddr, t.sport, t.daddr, t.dport)

    status = []
    for bit, name in ((4, "SRC_NAT"), (5, "DST_NAT")):
        if entry.status & (1 << bit):
            status.append(name)
    state = entry.protoinfo.state_name() if entry.protoinfo is not None else "NEW"
    return Conntrack(state, tup(entry.tuple_orig), tup(entry.tuple_reply), entry.mark or 0,
                     tuple(status))


def listeners(netns_name: str) -> frozenset[Listener]:
    """TCP sockets in LISTEN and bound UDP sockets, from the namespace's /proc tables."""
    found: set[Listener] = set()
    with netns.entered(netns_name):
        for proto in ("tcp", "udp"):
            with open(f"/proc/thread-self/net/{proto}") as f:
                found |= parse_proc_net(f.read(), proto)
    return frozenset(found)


def parse_proc_net(text: str, proto: str) -> set[Listener]:
    """Listeners from /proc/net/tcp or /proc/net/udp text."""
    found = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        local, state = parts[1], parts[3]
        address, port = local.split(":")
        if proto == "tcp" and state != _TCP_LISTEN:
            continue
        ip = str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1]))
        if proto == "udp" and ip != "0.0.0.0" and ip.startswith("127."):
            continue
        found.add(Listener(proto, int(port, 16)))
    return found
