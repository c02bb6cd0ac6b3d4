"""The answer's way back: conntrack undoes the NAT on the node that did it, hop by hop."""

from __future__ import annotations

import json

from netlab.trace.assemble import Observations, SeenFrame, assemble
from netlab.trace.diff import compare
from netlab.trace.model import Action, Trace, Verdict
from netlab.trace.render import render
from netlab.trace.routing import node_state, pod_state
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab
from tests.unit.test_trace_assemble import SPORT, UNDERLAY, C, flow, frames_to

VIEW = trace_lab.view()


def sim(src: str, dst: str, **kw) -> Trace:  # type: ignore[no-untyped-def]
    return simulate(VIEW, trace_lab.rulesets(), resolve_source(VIEW, src),
                    resolve_destination(VIEW, dst, **kw))


def live(frames: list[SeenFrame]) -> tuple[Trace, Trace]:
    nets = {m.netns: node_state(VIEW, m) for m in VIEW.machines.values()}
    nets.update({p.netns: pod_state(VIEW, p) for p in VIEW.pods.values()})
    obs = Observations(frames=frames, nets=nets, rulesets=trace_lab.rulesets())
    src, dst = resolve_source(VIEW, "a"), resolve_destination(VIEW, "web")
    return (assemble(VIEW, src, dst, flow(dst.ip, dst.port), obs),
            simulate(VIEW, trace_lab.rulesets(), src, dst, sport=SPORT))


def test_the_answer_to_a_clusterip_is_un_dnatted_on_the_client_node():
    t = sim("a", "web")
    assert t.reply_verdict == Verdict.DELIVERED
    undone = t.reply_at("netfilter:nat")
    assert [(h.place, h.stage, h.match) for h in undone] == [
        ("worker-1/root", "netfilter:nat/POSTROUTING",
         "un-DNAT 10.244.2.2:8080 -> 10.96.0.20:80 (conntrack)")]
    assert undone[0].conntrack is not None and undone[0].conntrack.status == ("DST_NAT",)
    assert t.reply_source == "10.96.0.20:80"  # what the client dialled, not the endpoint
    assert t.reply[0].place == "worker-2/pod:default/c"
    assert any(h.action == Action.ENCAP and h.encap and h.encap.outer_dst == "192.168.10.3"
               for h in t.reply)  # back across the overlay, worker-2 -> worker-1
    assert t.reply[-1].stage == "socket" and t.reply[-1].place == "worker-1/pod:default/a"


def test_the_answer_to_a_nodeport_is_un_snatted_then_un_dnatted_back_to_ext():
    t = sim("ext", "worker-1:30080")
    assert [(h.stage, h.match.split(" ")[0]) for h in t.reply_at("netfilter:nat")] == [
        ("netfilter:nat/PREROUTING", "un-SNAT"), ("netfilter:nat/POSTROUTING", "un-DNAT")]
    assert t.reply_source == "192.168.10.3:30080"
    assert t.reply[-1].place == "ext"


def test_a_node_client_gets_its_answer_un_dnatted_at_input():
    t = sim("worker-1", "web")
    assert [h.stage for h in t.reply_at("netfilter:nat")] == [
        "netfilter:nat/PREROUTING", "netfilter:nat/INPUT"]
    assert t.reply_source == "10.96.0.20:80"


def test_an_echo_reply_comes_back_without_nat():
    t = sim("a", "c", proto="icmp")
    assert t.reply_verdict == Verdict.DELIVERED and t.reply_at("netfilter") == []
    assert t.reply_source == "10.244.2.2"


def test_a_refused_tcp_port_answers_with_a_reset_and_a_rejected_probe_is_not_followed():
    refused = sim("a", "c", port=9999)
    assert refused.verdict == Verdict.DROPPED and refused.reply_verdict == Verdict.DELIVERED
    rejected = sim("a", "empty")
    assert rejected.reply_verdict is None and rejected.reply == []


def test_detailed_shows_the_way_back_hop_by_hop_and_summary_in_one_line():
    t = sim("a", "web")
    detailed, summary = render(t, "detailed"), render(t, "summary")
    assert " reply: DELIVERED  pod default/a received the answer from 10.96.0.20:80" in detailed
    assert "un-DNAT 10.244.2.2:8080 -> 10.96.0.20:80 (conntrack)" in detailed
    assert "(un-DNAT 10.244.2.2:8080 -> 10.96.0.20:80 on worker-1)" in summary
    data = json.loads(render(t, "json"))
    assert data["reply_verdict"] == "DELIVERED" and data["reply"][0]["seq"] == 1
    assert Trace.from_dict(data).to_dict() == t.to_dict()


def test_a_captured_answer_agrees_with_the_model():
    trace, twin = live(frames_to(C, vip="10.96.0.20"))
    assert trace.reply_verdict == Verdict.DELIVERED
    assert trace.reply_source == "10.96.0.20:80"
    assert compare(twin, trace) == []


def test_an_answer_lost_on_the_way_back_ends_the_reply_where_it_was_last_seen():
    frames = [f for f in frames_to(C, vip="10.96.0.20")
              if not (f.kind == "reply" and f.netns == UNDERLAY)]
    trace, twin = live(frames)
    assert trace.verdict == Verdict.DELIVERED  # the probe itself arrived
    assert trace.reply_verdict == Verdict.TIMEOUT
    assert "answer last seen at worker-2/root" in trace.reply_reason
    assert any(d.key.startswith("reply ") for d in compare(twin, trace))
