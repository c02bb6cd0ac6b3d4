"""host-local IPAM, laid out as the CNI plugin lays it out on disk.

One file per allocated address (`<dir>/<ip>`, holding the container ID and the
interface name) plus `last_reserved_ip.0`; allocation scans from the address after
the last one reserved and skips the network, gateway and broadcast addresses.
Because the state is files, a restarted agent finds every pod's address where it
left it. The directory lives in the lab's state dir, never in the host's
/var/lib/cni.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass

from netlab.errors import NetlabError

LAST_RESERVED = "last_reserved_ip.0"


class AddressPoolExhausted(NetlabError):
    """Every usable address of the node's pod subnet is taken."""


@dataclass(frozen=True)
class Allocation:
    ip: str
    container_id: str
    ifname: str


def _overwrite(path: str, text: str) -> None:
    """Replace a small file's content in place.

    Not open(path, "w"): on ext4 (auto_da_alloc) truncating a file to zero and
    rewriting it starts writeback on close, ~0.4 ms per pod here where /run is ext4.
    """
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class HostLocalIPAM:
    """Allocate pod addresses from one subnet, persisting each allocation as a file."""

    def __init__(self, directory: str, subnet: str, gateway: str | None = None) -> None:
        self.directory = directory
        self.subnet = ipaddress.ip_network(subnet)
        self.gateway = ipaddress.ip_address(gateway) if gateway else self.subnet[1]
        os.makedirs(directory, exist_ok=True)
        self._by_container = {a.container_id: a for a in self._read_all()}
        self._taken = {a.ip for a in self._by_container.values()}

    def _read_all(self) -> list[Allocation]:
        found = []
        for name in os.listdir(self.directory):
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                continue
            if ip not in self.subnet:
                continue
            with open(os.path.join(self.directory, name)) as f:
                lines = f.read().splitlines() + ["", ""]
            found.append(Allocation(name, lines[0].strip(), lines[1].strip()))
        return found

    def _usable(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip not in (self.subnet.network_address, self.subnet.broadcast_address,
                          self.gateway)

    def _last_reserved(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            with open(os.path.join(self.directory, LAST_RESERVED)) as f:
                ip = ipaddress.ip_address(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        return ip if ip in self.subnet else None

    def get(self, container_id: str) -> Allocation | None:
        return self._by_container.get(container_id)

    def allocate(self, container_id: str, ifname: str = "eth0") -> Allocation:
        """The container's address: its existing allocation, else the next free one."""
        existing = self._by_container.get(container_id)
        if existing:
            return existing
        hosts = self.subnet.num_addresses
        last = self._last_reserved()
        start = (int(last) - int(self.subnet.network_address) + 1) if last else 1
        for step in range(hosts):
            ip = self.subnet.network_address + (start + step) % hosts
            if self._usable(ip) and str(ip) not in self._taken:
                return self._reserve(str(ip), container_id, ifname)
        raise AddressPoolExhausted(f"no free address left in {self.subnet}")

    def _reserve(self, ip: str, container_id: str, ifname: str) -> Allocation:
        fd = os.open(os.path.join(self.directory, ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"{container_id}\n{ifname}")
        _overwrite(os.path.join(self.directory, LAST_RESERVED), ip)
        allocation = Allocation(ip, container_id, ifname)
        self._by_container[container_id] = allocation
        self._taken.add(ip)
        return allocation

    def release(self, container_id: str) -> None:
        """Release by container ID; releasing an unknown container is not an error (CNI DEL)."""
        allocation = self._by_container.pop(container_id, None)
        if allocation is None:
            return
        self._taken.discard(allocation.ip)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, allocation.ip))

    def allocations(self) -> list[Allocation]:
        return sorted(self._by_container.values(), key=lambda a: ipaddress.ip_address(a.ip))
