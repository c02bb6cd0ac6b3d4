"""The agent column of `up`'s and `status`' node table, for namespace and VM nodes."""

from __future__ import annotations

from netlab.cli.progress import agent_state

REGISTERED = {"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "192.168.10.3"}}}


def test_a_namespace_node_shows_its_agent_process():
    assert agent_state("worker-1", REGISTERED, {"agent-worker-1": True}) == "running"
    assert agent_state("worker-1", REGISTERED, {"agent-worker-1": False}) == "down"


def test_a_vm_node_is_running_when_its_guest_runs_and_its_agent_registered():
    assert agent_state("worker-1", REGISTERED, {"vm-worker-1": True}) == "running (in its VM)"
    assert agent_state("worker-1", {}, {"vm-worker-1": True}) == "down"
    assert agent_state("worker-1", REGISTERED, {"vm-worker-1": False}) == "down"
    assert agent_state("worker-1", REGISTERED, {}) == "down"
