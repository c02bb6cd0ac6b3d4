"""Assertions the trace integration modules share (one per behaviour, for every proxy mode)."""

from __future__ import annotations

from typing import Any

from netlab.trace.model import Trace, Verdict
from netlab.trace.observe import forget_affinity
from tests.integration.trace_manifests import pinned


def agrees_with_model(t: Trace) -> None:
    assert t.diff == [], "\n".join(str(d) for d in t.diff or [])
    assert t.twin is not None and t.minimal == t.twin.minimal


def cluster_ip(lab: Any, name: str) -> str:
    return lab.objects.get("Service", "default", name)["spec"]["clusterIP"]


def answer_is_un_natted(t: Trace, undone: list[str], source: str) -> None:
    """The answer came back, conntrack undid the NAT in this order, the client saw `source`."""
    assert t.reply_verdict == Verdict.DELIVERED, t.reply_reason
    assert [h.match.split()[0] for h in t.reply_at("netfilter:nat")] == undone
    assert t.reply_source == source


def session_affinity_pins_the_chosen_endpoint(trace: Any, lab: Any) -> None:
    """sessionAffinity ClientIP: unpinned, either endpoint (1/2 each) and the probe leaves
    no pin; once a real connection pinned the client, that endpoint and no other."""
    client = lab.pod_ip("client")
    worker = "worker-1"  # the client's node: where the DNAT (and the pin) happens
    assert client not in pinned(lab, worker)
    try:
        first = trace("client", "sticky", mode="diff")
        assert first.dnat is not None
        assert first.dnat.after.dst in (lab.pod_ip("server"), lab.pod_ip("peer"))
        assert [a.probability for a in first.dnat.alternatives] == [0.5]
        agrees_with_model(first)
        assert client not in pinned(lab, worker)  # the probe's own pin was taken away
        served = lab.exec("client", "curl", "-s", "--max-time", "5",
                          f"http://{cluster_ip(lab, 'sticky')}/hostname").stdout.strip()
        assert client in pinned(lab, worker)
        for _ in range(2):
            t = trace("client", "sticky", mode="diff")
            assert t.dnat is not None and t.dnat.after.dst == lab.pod_ip(served)
            assert t.dnat.alternatives == ()
            assert any(f"{client} is pinned" in n for n in t.notes)
            agrees_with_model(t)
    finally:
        netns = next(n["netns"] for n in lab.info["nodes"] if n["name"] == worker)
        rules = _affinity_names(lab, netns)
        forget_affinity(netns, [(name, client) for name in rules])
    assert client not in pinned(lab, worker)


def _affinity_names(lab: Any, netns: str) -> list[str]:
    from netlab.trace import nft
    from netlab.trace.observe import node_rules

    rules = node_rules(netns, lab.config.proxy_mode)
    names = list(rules.recent)
    if rules.nft is not None:
        names += list(nft.affinity_entries(rules.nft))
    return names
