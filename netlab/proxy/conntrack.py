"""Stale UDP conntrack cleanup, shared by every mode (kube-proxy's conntrack reconciler).

UDP has no FIN: a client that keeps one socket open keeps refreshing a
conntrack entry DNATed to an endpoint that is gone, and DNS lookups from that
client black-hole until the entry is deleted (kubernetes #19029, #125467). So
after syncs in which a UDP port lost a serving endpoint or gained its first,
every UDP entry addressed to a service frontend (ClusterIP, externalIP or LB
IP with its port, or a NodePort) whose reply does not come from a serving
endpoint is deleted. TCP is left alone, as kube-proxy does: the dead peer's
RST or a timeout ends those connections.

`stale_flows` is the pure decision; `ConntrackReconciler` reads and deletes
entries over netlink (pyroute2) inside the node's namespace.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from netlab.errors import KernelError
from netlab.kernel import netns as netns_mod
from netlab.proxy.model import Endpoint, ServicePort, ServicePortName

log = logging.getLogger(__name__)


class Flow(NamedTuple):
    """The parts of a UDP conntrack entry the cleanup looks at."""

    orig_dst: str
    orig_dport: int
    reply_src: str
    reply_sport: int


def stale_flows(flows: Iterable[Flow], services: Mapping[ServicePortName, ServicePort],
                endpoints: Mapping[ServicePortName, tuple[Endpoint, ...]]) -> list[Flow]:
    """UDP flows to a service frontend that no serving endpoint answers.

    Services without serving endpoints are skipped: their traffic is rejected
    by the rules, and there is nothing better to send an old flow to.
    """
    frontends: dict[tuple[str, int], frozenset[tuple[str, int]]] = {}
    nodeports: dict[int, frozenset[tuple[str, int]]] = {}
    for spn, svc in services.items():
        if spn.protocol != "UDP":
            continue
        serving = frozenset((ep.ip, ep.port) for ep in endpoints.get(spn, ()) if ep.serving)
        if not serving:
            continue
        for ip in (svc.cluster_ip, *svc.external_ips, *svc.load_balancer_ips):
            frontends[(ip, svc.port)] = serving
        if svc.node_port:
            nodeports[svc.node_port] = serving
    stale = []
    for flow in flows:
        reply = (flow.reply_src, flow.reply_sport)
        backends = frontends.get((flow.orig_dst, flow.orig_dport))
        if backends is None:
            backends = nodeports.get(flow.orig_dport)
        if backends is not None and reply not in backends:
            stale.append(flow)
    return stale


class ConntrackReconciler:
    """Deletes stale UDP entries in one network namespace (None: this process's)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    @contextlib.contextmanager
    def _conntrack(self) -> Iterator[Any]:
        from pyroute2.conntrack import Conntrack

        # pyroute2 opens the netlink socket lazily, on first use, so the whole
        # conversation has to happen inside the namespace.
        cm = netns_mod.entered(self.netns) if self.netns else contextlib.nullcontext()
        with cm:
            ct = Conntrack()
            try:
                yield ct
            finally:
                ct.close()

    def reconcile(self, services: Mapping[ServicePortName, ServicePort],
                  endpoints: Mapping[ServicePortName, tuple[Endpoint, ...]]) -> int:
        """Delete stale UDP flows; returns how many were deleted."""
        from pyroute2.conntrack import NFCTAttrTuple

        try:
            with self._conntrack() as ct:
                entries = {}
                for entry in ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP)):
                    orig, reply = entry.tuple_orig, entry.tuple_reply
                    flow = Flow(orig.daddr, orig.dport, reply.saddr, reply.sport)
                    entries.setdefault(flow, []).append(entry)
                deleted = 0
                for flow in stale_flows(entries, services, endpoints):
                    for entry in entries[flow]:
                        try:
                            ct.delete(entry)
                            deleted += 1
                        except Exception as exc:  # the entry may have expired meanwhile
                            log.debug("conntrack delete %s: %s", flow, exc)
                return deleted
        except OSError as exc:
            raise KernelError(f"conntrack: {exc}") from exc
