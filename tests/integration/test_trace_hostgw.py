"""Live traces on a host-gw lab: routes via peer nodes, no tunnel; the host is left as found.

Brought up with the session API (not the plugin's fixture) to check, after the
lab is down, that tracing left nothing on the host either.
"""

from __future__ import annotations

import os

import pytest

from netlab.lab import lifecycle
from netlab.trace.api import trace
from netlab.trace.model import Verdict
from netlab.trace.pytest_plugin import bring_up
from tests.hoststate import HostState
from tests.integration.labs import lab_data
from tests.integration.trace_manifests import manifests

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

NAME = "tr-2"


def leftovers() -> list[str]:
    """Anything of this lab still on the host (other helpers' namespaces come and go)."""
    prefix = f"nl-{NAME}-"
    state = HostState.capture(NAME)
    found = [n for n in state.netns + state.etc_netns + state.run_netns if n.startswith(prefix)]
    found += [m for m in state.mounts if prefix in m]
    found += [p for p in state.processes if f"/{NAME}" in p]
    return found + [f"/run/knetlab/{NAME}"] * os.path.exists(f"/run/knetlab/{NAME}")


@pytest.fixture(scope="module")
def lab():
    assert leftovers() == []
    running = bring_up(lab_data(NAME, backend="host-gw"), manifests=manifests())
    try:
        yield running
    finally:
        lifecycle.down(NAME)
    assert leftovers() == []


def test_pod_to_pod_across_nodes_is_routed_via_the_peer_node(lab):
    t = trace(lab, "client", "server", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert not t.encapsulated()
    routes = [h.match for h in t.hops_at("route")]
    assert f"10.244.2.0/24 via {lab.node_ip('worker-2')} dev eth0" in routes
    assert t.diff == []
    assert t.source_seen_by_server == lab.pod_ip("client")


def test_clusterip_across_nodes_on_host_gw_agrees_with_the_model(lab):
    t = trace(lab, "client", "web", mode="diff")
    assert t.verdict == Verdict.DELIVERED
    assert t.dnat is not None and t.dnat.k8s_ref.pod == "default/server"
    assert t.diff == [], "\n".join(map(str, t.diff or []))


def test_simulation_sends_nothing_and_predicts_the_live_path(lab):
    simulated = trace(lab, "ext", "worker-1:30080", mode="simulated")
    live = trace(lab, "ext", "worker-1:30080")
    assert simulated.mode == "simulated" and simulated.verdict == live.verdict
    assert simulated.minimal == live.minimal
