"""The steps that send real traffic: pods directly, DNS, the ClusterIP, NodePorts, hairpin.

Debug Services steps 1/8 ("are the pods working?", each endpoint hit
directly), 4 (DNS by name from a pod, with its resolv.conf), 5 (the Service by
IP), NodePort reachability from outside, and 10 (a pod reaching itself through
its Service: hairpin). Every exchange is a fresh connection from inside a lab
namespace (check/traffic.py), so the kernel's rules decide each one.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from typing import NamedTuple

from netlab.check import facts, nodestate, resolv, traffic
from netlab.check.context import SvcContext
from netlab.check.model import Outcome, failed, not_applicable, passed
from netlab.node.podfiles import ETC_NETNS

MAX_TRIES = 12
STOP_AFTER_FAILURES = 2  # a port that failed twice has made its point; timeouts are slow
HAIRPIN_PODS = 4  # backends tried for hairpin; their cni0 ports are what differs


def _source(ctx: SvcContext) -> tuple[str, str] | None:
    """(ns/name, netns) of the pod traffic comes from."""
    if ctx.source is None:
        return None
    return facts.key(ctx.source), ctx.netns_of(ctx.source)


def _no_source() -> Outcome:
    return not_applicable("no running pod to send traffic from (give one with --from)")


def _speech(ctx: SvcContext, backend: facts.Backend) -> str:
    return facts.speaks(ctx.pod_by_key(backend.pod), backend.protocol, backend.port)


def _ask(ctx: SvcContext, netns: str, ip: str, port: int, speech: str) -> traffic.Answer:
    """One exchange; a DNS server is asked for the cluster's own `kubernetes` Service."""
    return traffic.ask(netns, ip, port, speech, ctx.timeout,
                       f"kubernetes.default.svc.{ctx.config.cluster_domain}.")


def pods_answer(ctx: SvcContext) -> Outcome:
    src = _source(ctx)
    if src is None:
        return _no_source()
    by_port = facts.backends(ctx.svc, ctx.slices, ctx.pods)
    if not any(b.ready for backs in by_port.values() for b in backs):
        return not_applicable("no ready endpoint to send to")
    evidence, bad = [f"from pod {src[0]}"], False
    for label, backs in by_port.items():
        for b in (b for b in backs if b.ready):
            answer = _ask(ctx, src[1], b.ip, b.port, _speech(ctx, b))
            text = answer.text
            if not answer.ok:  # one more try: a lost datagram is not a broken app
                answer = _ask(ctx, src[1], b.ip, b.port, _speech(ctx, b))
                text = f"{text}, then {answer.text}"
            who = f" ({b.pod.split('/', 1)[-1]})" if b.pod else ""
            evidence.append(f"{label}: {b.address}/{b.protocol}{who}: {text}")
            bad = bad or not answer.ok
    if bad:
        return failed("the app does not answer on the targetPort: is it listening there? "
                      "(knetlab exec POD -- ss -lntu; knetlab logs runtime-NODE). This is "
                      "the app or the pod network, not the Service", *evidence)
    return passed(*evidence)


def _tally(answers: Iterable[traffic.Answer]) -> str:
    counts = collections.Counter(a.hostname or a.text for a in answers)
    return ", ".join(f"{what} x{n}" if n > 1 else what for what, n in counts.most_common())


def _exchange(ctx: SvcContext, netns: str, ip: str, port: int, speech: str,
              tries: int) -> list[traffic.Answer]:
    """`tries` new connections, stopping early once STOP_AFTER_FAILURES have failed."""
    answers: list[traffic.Answer] = []
    for _ in range(tries):
        answers.append(_ask(ctx, netns, ip, port, speech))
        if sum(not a.ok for a in answers) >= STOP_AFTER_FAILURES:
            break
    return answers


class PortPlan(NamedTuple):
    """How to probe one Service port through the Service."""

    label: str
    port: int
    node_port: int  # 0: none
    speech: str  # as facts.speaks says for its backends
    ready: list[facts.Backend]


def _port_plan(ctx: SvcContext) -> list[PortPlan]:
    by_label = facts.backends(ctx.svc, ctx.slices, ctx.pods)
    plan = []
    for p in facts.spec(ctx.svc).get("ports") or []:
        ready = [b for b in by_label.get(facts.port_label(p), []) if b.ready]
        speech = _speech(ctx, ready[0]) if ready else \
            ("udp" if p.get("protocol", "TCP") == "UDP" else "tcp")
        plan.append(PortPlan(facts.port_label(p), int(p["port"]), int(p.get("nodePort") or 0),
                             speech, ready))
    return plan


def dns_resolves(ctx: SvcContext) -> Outcome:
    if not ctx.config.dns_enabled:
        return not_applicable("the lab runs no cluster DNS (dns.enabled: false)")
    if facts.svc_type(ctx.svc) == "ExternalName":
        return not_applicable("an ExternalName Service resolves to a CNAME; not checked")
    src = _source(ctx)
    if src is None:
        return _no_source()
    path = os.path.join(ETC_NETNS, src[1], "resolv.conf")
    try:
        with open(path) as f:
            conf = resolv.parse(f.read())
    except FileNotFoundError:
        return failed("kubelet writes each pod a resolv.conf pointing at the cluster DNS",
                      f"pod {src[0]} has no resolv.conf ({path})")
    domain = ctx.config.cluster_domain
    same_ns = (ctx.source or {}).get("metadata", {}).get("namespace", "default") == ctx.namespace
    short = ctx.name if same_ns else f"{ctx.name}.{ctx.namespace}"  # as a user would type it
    fqdn = f"{ctx.name}.{ctx.namespace}.svc.{domain}."  # absolute: the search path is skipped
    want = _expected_addresses(ctx)
    evidence = [f"resolv.conf of pod {src[0]}: {conf.line()}"]
    if not conf.nameservers:
        return failed("the pod's resolv.conf names no nameserver", *evidence)
    server = conf.nameservers[0]
    results = {}
    for name in (short, fqdn):
        got, line = _lookup(src[1], server, name, conf, ctx.timeout)
        results[name] = got
        evidence.append(line)
    evidence.append(f"expected: {', '.join(sorted(want)) or 'no address (no ready endpoint)'}")
    if all(set(got) == want for got in results.values()):
        return passed(*evidence)
    if set(results[fqdn]) == want:
        hint = (f"the FQDN resolves but {short!r} does not: the pod's search path must "
                f"list {ctx.namespace}.svc.{domain} svc.{domain} {domain} (kubelet's "
                "ClusterFirst resolv.conf)")
    else:
        hint = (f"the cluster DNS does not answer {fqdn} with the Service's address: check "
                f"it with knetlab check svc kube-system/kube-dns (nameserver {server})")
    return failed(hint, *evidence)


def _expected_addresses(ctx: SvcContext) -> set[str]:
    ip = facts.spec(ctx.svc).get("clusterIP")
    if ip and ip != "None":
        return {ip}
    return {b.ip for backs in facts.backends(ctx.svc, ctx.slices, ctx.pods).values()
            for b in backs if b.ready}


def _lookup(netns: str, server: str, name: str, conf: resolv.ResolvConf,
            timeout: float) -> tuple[list[str], str]:
    """Resolve as the pod's stub resolver would; (addresses, evidence line)."""
    tried = []
    for candidate in resolv.candidates(name, conf):
        try:
            rcode, addresses = traffic.dns_query(netns, server, candidate, timeout)
        except OSError as exc:
            tried.append(f"{candidate} {traffic.failure(exc).text}")
            return [], f"{name}: " + "; ".join(tried)
        if addresses:
            tried.append(f"{candidate} A {', '.join(addresses)}")
            return addresses, f"{name}: " + "; ".join(tried)
        tried.append(f"{candidate} {rcode}")
    return [], f"{name}: " + "; ".join(tried)


def cluster_ip(ctx: SvcContext) -> Outcome:
    if (why := facts.not_proxied(ctx.svc)) is not None:
        return not_applicable(why)
    src = _source(ctx)
    if src is None:
        return _no_source()
    ip = facts.spec(ctx.svc)["clusterIP"]
    evidence, bad = [f"from pod {src[0]}"], False
    for plan in _port_plan(ctx):
        tries = min(MAX_TRIES, max(3, 2 * len(plan.ready)))
        answers = _exchange(ctx, src[1], ip, plan.port, plan.speech, tries)
        ok = sum(a.ok for a in answers)
        evidence.append(f"{plan.label}: {ip}:{plan.port} {ok}/{len(answers)} answered: "
                        f"{_tally(answers)}")
        bad = bad or ok < len(answers)
    if bad:
        return failed(f"the pods answer directly but not through the ClusterIP: follow a "
                      f"packet with knetlab trace {src[0]} {ctx.ref}", *evidence)
    return passed(*evidence)


def node_port(ctx: SvcContext) -> Outcome:
    if (why := facts.not_proxied(ctx.svc)) is not None:
        return not_applicable(why)
    plans = [plan for plan in _port_plan(ctx) if plan.node_port]
    if not plans:
        return not_applicable(f"type {facts.svc_type(ctx.svc)}: no NodePort")
    local_only = facts.spec(ctx.svc).get("externalTrafficPolicy") == "Local"
    evidence, bad = ["from ext"], False
    for plan in plans:
        for node in ctx.nodes:
            if local_only and not any(b.node == node.name for b in plan.ready):
                evidence.append(f"{plan.label}: {node.name}: no local endpoint; with "
                                "externalTrafficPolicy: Local it drops NodePort traffic")
                continue
            answers = _exchange(ctx, ctx.ext_netns, node.address, plan.node_port, plan.speech,
                                2)
            ok = sum(a.ok for a in answers)
            evidence.append(f"{plan.label}: {node.name} {node.address}:{plan.node_port} "
                            f"{ok}/{len(answers)} answered: {_tally(answers)}")
            bad = bad or ok < len(answers)
    if bad:
        return failed("the ClusterIP works but a NodePort does not: look at the node's "
                      "KUBE-NODEPORTS rules (knetlab proxy rules NODE --service "
                      f"{ctx.ref}) and trace it: knetlab trace ext NODE:NODEPORT", *evidence)
    return passed(*evidence)


def hairpin(ctx: SvcContext) -> Outcome:
    if (why := facts.not_proxied(ctx.svc)) is not None:
        return not_applicable(why)
    plans = [plan for plan in _port_plan(ctx) if plan.ready]
    if not plans:
        return not_applicable("no ready endpoint to send from")
    plan = next((p for p in plans if p.speech == "http"), plans[0])  # http names who answered
    label, port, speech, ready = plan.label, plan.port, plan.speech, plan.ready
    ip = facts.spec(ctx.svc)["clusterIP"]
    evidence: list[str] = []
    bad: list[tuple[str, str]] = []  # (node, cni0 port) of pods that failed
    pods = [(b, pod) for b in ready if (pod := ctx.pod_by_key(b.pod)) is not None]
    for backend, pod in pods[:HAIRPIN_PODS]:
        name = pod["metadata"]["name"]
        node = ctx.node(backend.node)
        port_name = ctx.host_port(pod)
        flag = nodestate.hairpin(node.netns, port_name) if node and node.netns else None
        flag_text = {True: "on", False: "off", None: "unknown"}[flag]
        tries = min(MAX_TRIES, 3 * len(ready))
        answers, reached = [], False
        for _ in range(tries):
            answer = _ask(ctx, ctx.netns_of(pod), ip, port, speech)
            answers.append(answer)
            if not answer.ok or answer.hostname == name:
                reached = answer.ok
                break
        result = (f"reached itself on try {len(answers)}" if reached
                  else f"{_tally(answers)} in {len(answers)} tries")
        if not reached and all(a.ok and not a.hostname for a in answers):
            result += " (the answers name no pod: the flag decides)"
        evidence.append(f"{name} ({backend.node}, cni0 port {port_name} hairpin {flag_text}) "
                        f"-> {ip}:{port} ({label}): {result}")
        if flag is False or not all(a.ok for a in answers):
            bad.append((backend.node, port_name))
    if bad:
        node, port_name = bad[0]
        return failed("a pod cannot reach itself through its Service: the bridge must send "
                      "the DNATed packet back out the port it came in on (hairpin mode). "
                      f"Look: knetlab exec {node} -- bridge -d link show dev {port_name}",
                      *evidence)
    return passed(*evidence)
