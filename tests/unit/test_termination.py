"""How long a terminating pod keeps serving: CoreDNS' lameduck, capped by the grace period."""

from __future__ import annotations

from netlab.dns.addon import coredns_deployment
from netlab.node.termination import DNS_LAMEDUCK_SECONDS, stop_delay
from tests.integration.labs import pod


def dns_pod(grace: int | None = None) -> dict:
    template = coredns_deployment(1)["spec"]["template"]
    meta = {"name": "coredns-x", "namespace": "kube-system", **template["metadata"]}
    if grace is not None:
        meta["deletionGracePeriodSeconds"] = grace
    return {"metadata": meta, "spec": template["spec"]}


def test_a_coredns_pod_answers_through_its_lameduck():
    assert stop_delay(dns_pod()) == DNS_LAMEDUCK_SECONDS == 5.0
    assert stop_delay(dns_pod(grace=30)) == 5.0


def test_the_grace_period_cuts_the_lameduck_short():
    assert stop_delay(dns_pod(grace=2)) == 2.0
    assert stop_delay(dns_pod(grace=0)) == 0.0  # kubectl delete --grace-period=0


def test_other_workloads_exit_at_once():
    assert stop_delay(pod("web")) == 0.0
