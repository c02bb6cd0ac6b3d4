"""The steps that look at kube-proxy on every node: alive, its rules, UDP conntrack.

Debug Services step 9 ("Is kube-proxy working?"): the process runs and is
healthy (its :10256/healthz, as kube-proxy serves it), and its rules for the
Service exist on each node, read from the kernel (python-iptables or nft, by
the lab's proxy mode) and compared with the endpoints kube-proxy should use
there. For UDP Services, the conntrack entries must lead to serving endpoints:
UDP has no FIN, so an entry to a vanished backend black-holes its client.
"""

from __future__ import annotations

import json
import time

from netlab.check import facts, nodestate, rules
from netlab.check.context import NodeRef, SvcContext
from netlab.check.model import Outcome, failed, not_applicable, passed
from netlab.proxy.conntrack import Flow, stale_flows
from netlab.proxy.rules_view import read_rules

RULE_MODES = ("iptables", "nftables")


def _local_nodes(ctx: SvcContext) -> tuple[list[NodeRef], list[str]]:
    """Nodes this host can look into, and evidence lines for the others."""
    here = [n for n in ctx.nodes if n.netns]
    away = [f"{n.name}: runs on its own machine, not checked from here"
            for n in ctx.nodes if not n.netns]
    return here, away


def kube_proxy(ctx: SvcContext) -> Outcome:
    nodes, evidence = _local_nodes(ctx)
    evidence.insert(0, f"proxy mode {ctx.config.proxy_mode} (the agent runs kube-proxy's role)")
    sick: list[nodestate.AgentProcess] = []
    for node in nodes:
        agent = nodestate.agent_process(ctx.state, node.name)
        status, body = nodestate.healthz(node.netns or "", ctx.timeout)
        health = _health_text(status, body, ctx.timeout)
        pid = f" pid {agent.pid}" if agent.pid else ""
        evidence.append(f"{node.name}: {agent.role}{pid} {agent.state}; healthz {health}")
        if not agent.alive or status != 200:
            sick.append(agent)
    if sick:
        first = sick[0]
        resume = (f"a stopped agent resumes with kill -CONT {first.pid}"
                  if first.state == "stopped" else
                  "the supervisor restarts an agent that exits")
        return failed(f"kube-proxy is not healthy on "
                      f"{', '.join(a.role.removeprefix('agent-') for a in sick)}: "
                      f"knetlab logs {first.role}; {resume}", *evidence)
    return passed(*evidence)


def _health_text(status: int, body: str, timeout: float) -> str:
    if not status:
        return body or f"no HTTP answer within {timeout:g}s"
    try:
        healthy = json.loads(body).get("healthy")
    except (ValueError, AttributeError):
        healthy = None
    return f"{status}" + (f" healthy={str(healthy).lower()}" if healthy is not None else "")


def proxy_rules(ctx: SvcContext) -> Outcome:
    if (why := facts.not_proxied(ctx.svc)) is not None:
        return not_applicable(why)
    mode = ctx.config.proxy_mode
    if mode not in RULE_MODES:
        return not_applicable(f"reading {mode} mode's state is not supported; "
                              f"{' and '.join(RULE_MODES)} are")
    nodes, away = _local_nodes(ctx)
    evidence, bad = _compare_rules(ctx, nodes, mode)
    if bad:  # the proxy applies a change at most every minSyncPeriod: look once more
        wait = ctx.config.min_sync_period + 0.5
        time.sleep(wait)
        evidence, bad = _compare_rules(ctx, nodes, mode)
        evidence.append(f"(read twice, {wait:.1f}s apart, past the proxy's minSyncPeriod: "
                        "both disagree)" if bad else
                        f"(the first read disagreed; {wait:.1f}s later the rules matched: "
                        "the proxy was catching up)")
    evidence += away
    if bad:
        return failed(f"kube-proxy's rules on {', '.join(bad)} do not match the endpoints: "
                      f"knetlab proxy rules {bad[0]} --service {ctx.ref}; the proxy "
                      "rewrites them on its next sync (knetlab logs "
                      f"agent-{bad[0]})", *evidence)
    return passed(*evidence)


def _compare_rules(ctx: SvcContext, nodes: list[NodeRef], mode: str) -> tuple[list[str], list[str]]:
    """(evidence, names of nodes whose rules are wrong)."""
    evidence, bad = [], []
    ports = facts.service_port_map(ctx.svc)
    for node in nodes:
        view = read_rules(node.netns, service=ctx.ref, mode=mode)
        found = {p.port: p.rules for p in view.services.get(ctx.ref, [])}
        expected = facts.expected_on_node(ctx.svc, ctx.slices, node.name)
        for spn, port in ports.items():
            have = rules.found(found.get(spn.port, []), port)
            required, allowed = expected[spn]
            label = f"{node.name} {spn.port or port.port}/{spn.protocol}"
            wrong = rules.problems(have, port, required, allowed)
            if wrong:
                evidence.append(f"{label}: " + "; ".join(wrong))
                if node.name not in bad:
                    bad.append(node.name)
            else:
                evidence.append(f"{label}: {rules.summary(have, port)}")
    return evidence, bad


def conntrack(ctx: SvcContext) -> Outcome:
    if (why := facts.not_proxied(ctx.svc)) is not None:
        return not_applicable(why)
    ports = {spn: p for spn, p in facts.service_port_map(ctx.svc).items()
             if spn.protocol == "UDP"}
    if not ports:
        return not_applicable("no UDP port: TCP connections end with the backend, UDP "
                              "conntrack entries are what can go stale")
    frontends = {(p.cluster_ip, p.port) for p in ports.values()}
    node_ports = {p.node_port for p in ports.values() if p.node_port}
    nodes, evidence = _local_nodes(ctx)
    stale_nodes: list[tuple[str, Flow]] = []
    for node in nodes:
        flows = nodestate.udp_flows(node.netns or "")
        mine = [f for f in flows if (f.orig_dst, f.orig_dport) in frontends
                or f.orig_dport in node_ports]
        stale = stale_flows(mine, ports, facts.slice_endpoints(ctx.slices, node.name))
        if stale:
            stale_nodes.append((node.name, stale[0]))
            evidence += [f"{node.name}: stale: to {f.orig_dst}:{f.orig_dport} answered by "
                         f"{f.reply_src}:{f.reply_sport}, no serving endpoint" for f in stale]
        else:
            evidence.append(f"{node.name}: {len(mine)} UDP entries for the Service, "
                            "all answered by serving endpoints")
    if stale_nodes:
        node, flow = stale_nodes[0]
        return failed("clients keep sending into entries whose backend is gone: delete them "
                      f"(knetlab exec {node} -- conntrack -D -p udp --orig-dst "
                      f"{flow.orig_dst} --orig-port-dst {flow.orig_dport}); kube-proxy "
                      "deletes them when a UDP port's endpoints change", *evidence)
    return passed(*evidence)
