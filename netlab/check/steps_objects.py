"""The steps that read objects: the Service, its selector, its pods, ports and endpoints.

Debug Services steps 2, 6 and 7 ("Does the Service exist?", "Is the Service
defined correctly?", "Does the Service have endpoints?"), split so that each
breakage fails exactly one of them: a selector that matches nothing, pods that
are not Ready, a targetPort no pod has, slices without ready endpoints.
"""

from __future__ import annotations

from netlab.check import facts
from netlab.check.context import SvcContext
from netlab.check.model import Outcome, failed, not_applicable, passed
from netlab.proxy.model import LABEL_SERVICE_NAME


def service_exists(ctx: SvcContext) -> Outcome:
    if ctx.service is None:
        return failed(f"create it (knetlab apply -f ...), or check the name and namespace: "
                      f"knetlab get svc -n {ctx.namespace}",
                      f"no Service {ctx.ref} (kubectl get svc {ctx.name} -n {ctx.namespace})")
    return passed(f"Service {ctx.ref}: " + facts.describe(ctx.service)[0])


def _no_selector(ctx: SvcContext) -> Outcome | None:
    svc = ctx.svc
    if facts.svc_type(svc) == "ExternalName":
        return not_applicable("an ExternalName Service selects no pods")
    if not facts.spec(svc).get("selector"):
        return not_applicable("the Service has no selector: its EndpointSlices are "
                              "managed by hand")
    return None


def selector_matches(ctx: SvcContext) -> Outcome:
    if (skip := _no_selector(ctx)) is not None:
        return skip
    selector = facts.spec(ctx.svc)["selector"]
    wanted = facts.labels_text(selector)
    chosen = facts.selected(ctx.svc, ctx.pods)
    if chosen:
        names = ", ".join(p["metadata"]["name"] for p in chosen)
        return passed(f"selector {wanted} matches {len(chosen)} pod(s) in {ctx.namespace}: "
                      f"{names}")
    same_ns = [p for p in ctx.pods if p["metadata"].get("namespace", "default") == ctx.namespace]
    evidence = [f"selector {wanted} matches no pod in namespace {ctx.namespace} "
                f"({len(same_ns)} pods there)"]
    evidence += [f"near miss: {line}" for line in facts.near_misses(selector, same_ns)]
    if same_ns and len(evidence) == 1:
        evidence.append(f"label keys of the pods there: {', '.join(facts.label_keys(same_ns))}")
    elsewhere = [facts.key(p) for p in ctx.pods
                 if p["metadata"].get("namespace", "default") != ctx.namespace
                 and all((p["metadata"].get("labels") or {}).get(k) == v
                         for k, v in selector.items())]
    if elsewhere:
        evidence.append(f"matching pods in other namespaces (a Service selects in its own "
                        f"only): {', '.join(elsewhere[:5])}")
    return failed("fix the Service's selector or the pods' labels: "
                  f"knetlab get pods -n {ctx.namespace} -o wide; knetlab describe svc "
                  f"{ctx.name} -n {ctx.namespace}", *evidence)


def pods_ready(ctx: SvcContext) -> Outcome:
    if (skip := _no_selector(ctx)) is not None:
        return skip
    states = [facts.pod_state(p) for p in facts.selected(ctx.svc, ctx.pods)]
    evidence = [s.line() for s in states]
    serving = [s for s in states if s.serving]
    if not serving:
        return failed("no selected pod is Running and Ready, so none can be an endpoint: "
                      "check the readiness probe and the pod's logs (knetlab describe pod "
                      "NAME; knetlab logs agent-NODE)", *evidence)
    if len(serving) < len(states):
        evidence.append(f"{len(serving)} of {len(states)} pods serve; the others get no traffic")
    return passed(*evidence)


def target_port(ctx: SvcContext) -> Outcome:
    if (skip := _no_selector(ctx)) is not None:
        return skip
    chosen = facts.selected(ctx.svc, ctx.pods)
    ports = facts.spec(ctx.svc).get("ports") or []
    if not ports:
        return failed("a Service needs at least one port", "the Service has no ports")
    evidence, bad = [], False
    for port in ports:
        label, target = facts.port_label(port), facts.target_of(port)
        wrong = {p["metadata"]["name"]: why for p in chosen
                 if (why := facts.target_port_problem(port, p)) is not None}
        if wrong:
            bad = True
            for pod_name, why in wrong.items():
                pod = next(p for p in chosen if p["metadata"]["name"] == pod_name)
                evidence.append(f"{label}: targetPort {target} does not fit pod {pod_name}: "
                                f"{why} (its ports: {facts.container_ports_text(pod)})")
            continue
        numbers = sorted({n for p in chosen if (n := facts.resolved_target(port, p))})
        where = ", ".join(str(n) for n in numbers)
        evidence.append(f"{label}: targetPort {target} -> containerPort {where} on "
                        f"{len(chosen)} pod(s)")
    if bad:
        return failed("set targetPort to a containerPort (number or name) the pods have, "
                      "with the same protocol: knetlab get svc "
                      f"{ctx.name} -n {ctx.namespace} -o yaml", *evidence)
    return passed(*evidence)


def endpoints(ctx: SvcContext) -> Outcome:
    if facts.svc_type(ctx.svc) == "ExternalName":
        return not_applicable("an ExternalName Service has no endpoints")
    if not ctx.slices:
        return failed(f"no EndpointSlice labelled {LABEL_SERVICE_NAME}={ctx.name}: "
                      "a Service without a selector needs slices written by hand",
                      f"kubectl get endpointslices -l {LABEL_SERVICE_NAME}={ctx.name} "
                      f"-n {ctx.namespace}: none")
    by_port = facts.backends(ctx.svc, ctx.slices, ctx.pods)
    evidence, empty = [], []
    for label, backs in by_port.items():
        ready = [b for b in backs if b.ready]
        evidence.append(f"{label}: {len(ready)} ready of {len(backs)}: "
                        + ("; ".join(b.line() for b in backs) or "<none>"))
        if not ready:
            empty.append(label)
    slices = ", ".join(s["metadata"]["name"] for s in ctx.slices)
    evidence.insert(0, f"EndpointSlices: {slices}")
    if empty:
        return failed("no ready endpoint for " + ", ".join(empty) + ": traffic to it is "
                      "rejected; compare the selected pods' readiness and ports with "
                      f"knetlab describe endpointslices -n {ctx.namespace}", *evidence)
    return passed(*evidence)
