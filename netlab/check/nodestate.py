"""What a node's kernel and processes say: the agent process, healthz, bridge ports, conntrack.

Thin readers for the proxy and hairpin steps; each returns plain data the
step turns into evidence. The agent process bundles kube-proxy's role, so
"is kube-proxy running" is "is the node's agent alive and not stopped", and
its health server answers on :10256 inside the node as kube-proxy's does.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from netlab.check import traffic
from netlab.kernel import netns
from netlab.kernel.commands import run_in
from netlab.lab.state import StateDir, process_state
from netlab.node.agent import PROXY_HEALTHZ_PORT
from netlab.proxy.conntrack import Flow

PROCESS_STATES = {"R": "running", "S": "running", "D": "in disk wait", "T": "stopped",
                  "t": "stopped by a tracer", "Z": "a zombie", "X": "dead"}


@dataclass(frozen=True)
class AgentProcess:
    role: str
    pid: int | None
    state: str  # a PROCESS_STATES value, or "not running"

    @property
    def alive(self) -> bool:
        return self.state == "running"


def agent_process(state: StateDir, node: str) -> AgentProcess:
    """The node agent's latest recorded process and what the kernel says of it."""
    role = f"agent-{node}"
    record = next((p for p in state.processes() if p.role == role), None)
    if record is None:
        return AgentProcess(role, None, "not running")
    letter = process_state(record.pid) if record.alive() else None
    return AgentProcess(role, record.pid, PROCESS_STATES.get(letter or "", "not running"))


def healthz(node_netns: str, timeout: float) -> tuple[int, str]:
    """kube-proxy's /healthz as seen from inside the node: (status, body); (0, why) on failure."""
    try:
        return traffic.http_get(node_netns, "127.0.0.1", PROXY_HEALTHZ_PORT, "/healthz",
                                timeout)
    except OSError as exc:
        return 0, traffic.failure(exc).text


def hairpin(node_netns: str, port: str) -> bool | None:
    """A cni0 port's hairpin flag (`bridge -d link show dev PORT`); None: no such port."""
    proc = run_in(node_netns, ["bridge", "-d", "-j", "link", "show", "dev", port], check=False)
    if proc.returncode != 0:
        return None
    links = json.loads(proc.stdout or "[]")
    return bool(links[0].get("hairpin")) if links else None


def udp_flows(node_netns: str) -> list[Flow]:
    """Every UDP conntrack entry of the node, as (original dst, reply src) pairs."""
    from pyroute2.conntrack import Conntrack, NFCTAttrTuple

    with netns.entered(node_netns):  # pyroute2 opens its socket on first use: stay inside
        ct = Conntrack()
        try:
            return [Flow(e.tuple_orig.daddr, e.tuple_orig.dport, e.tuple_reply.saddr,
                         e.tuple_reply.sport)
                    for e in ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))]
        finally:
            ct.close()
