"""`check svc`: the Debug Services walk over one Service, in cause-to-symptom order.

The page starts from the symptom (does the name resolve, does the IP answer)
and digs down; a mechanical check is more useful the other way round, so that
its first failure is the cause: objects first (Service, selector, pods,
targetPort, endpoints), then the pods themselves, then kube-proxy and its
rules, then traffic through the Service (DNS, ClusterIP, NodePort), then the
edge cases (hairpin, stale UDP conntrack). `needs` skips a step whose
prerequisite failed: with no endpoints, probing the ClusterIP only repeats it.
"""

from __future__ import annotations

import time
from typing import Any

from netlab.check import facts, steps_objects, steps_proxy, steps_traffic
from netlab.check.context import SvcContext, load_context
from netlab.check.model import DEFAULT_TIMEOUT, Report, Step
from netlab.check.runner import run_steps

STEPS: tuple[Step[SvcContext], ...] = (
    Step("service", "the Service exists", steps_objects.service_exists),
    Step("selector", "its selector matches pods", steps_objects.selector_matches,
         ("service",)),
    Step("pods-ready", "the selected pods are Running and Ready", steps_objects.pods_ready,
         ("selector",)),
    Step("target-port", "targetPort is a containerPort of the pods", steps_objects.target_port,
         ("selector",)),
    Step("endpoints", "EndpointSlices list ready endpoints", steps_objects.endpoints,
         ("service", "pods-ready", "target-port")),
    Step("pods-answer", "each endpoint answers on its targetPort", steps_traffic.pods_answer,
         ("endpoints",)),
    Step("kube-proxy", "kube-proxy runs and is healthy on every node", steps_proxy.kube_proxy,
         ("service",)),
    Step("proxy-rules", "kube-proxy's rules for the Service exist on every node",
         steps_proxy.proxy_rules, ("endpoints",)),
    Step("dns", "the Service's name resolves from a pod", steps_traffic.dns_resolves,
         ("service",)),
    Step("cluster-ip", "the ClusterIP answers from a pod", steps_traffic.cluster_ip,
         ("pods-answer", "proxy-rules")),
    Step("node-port", "the NodePort answers from outside the cluster", steps_traffic.node_port,
         ("cluster-ip",)),
    Step("hairpin", "a backend reaches itself through the ClusterIP", steps_traffic.hairpin,
         ("cluster-ip",)),
    Step("conntrack", "UDP conntrack entries lead to serving endpoints", steps_proxy.conntrack,
         ("endpoints",)),
)


def run(ctx: SvcContext) -> Report:
    started = time.monotonic()
    results = run_steps(STEPS, ctx)
    summary = tuple(facts.describe(ctx.service)) if ctx.service is not None else ()
    source = facts.key(ctx.source) if ctx.source is not None else None
    return Report(ctx.ref, source, tuple(results), time.monotonic() - started, summary)


def check_service(lab: Any, service: str, namespace: str = "default",
                  source: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Walk the Debug Services steps for `[ns/]name` in a RunningLab (netlab.lab.session).

    `source` (`[ns/]pod`) is where traffic is sent from; by default a pod the
    Service does not select. `timeout` bounds each connection or datagram.
    """
    return run(load_context(lab, service, namespace, source, timeout))
