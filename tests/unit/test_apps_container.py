"""Which ports a pod serves, read from its containers as the real images would."""

from __future__ import annotations

import pytest

from netlab.apps.container import (
    NETEXEC,
    SERVE_HOSTNAME,
    ServePlan,
    merge_plans,
    plan_for_container,
    plan_for_pod,
)
from netlab.errors import ManifestError

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"


def test_netexec_without_flags_listens_on_agnhost_defaults() -> None:
    plan = plan_for_container({"image": AGNHOST, "args": ["netexec"]})
    assert plan == ServePlan(http_ports=(8080,), udp_ports=(8081,), mode=NETEXEC)


def test_netexec_ports_come_from_equals_flags() -> None:
    plan = plan_for_container(
        {"image": AGNHOST, "args": ["netexec", "--http-port=9376", "--udp-port=9377"]})
    assert (plan.http_ports, plan.udp_ports) == ((9376,), (9377,))


def test_netexec_ports_come_from_separate_value_flags_and_single_dash() -> None:
    plan = plan_for_container(
        {"image": AGNHOST, "args": ["netexec", "--http-port", "80", "-udp-port", "90"]})
    assert (plan.http_ports, plan.udp_ports) == ((80,), (90,))


def test_udp_port_minus_one_disables_udp() -> None:
    plan = plan_for_container({"image": AGNHOST, "args": ["netexec", "--udp-port=-1"]})
    assert plan.udp_ports == ()
    assert plan.http_ports == (8080,)


def test_netexec_named_in_command_is_recognised_whatever_the_image() -> None:
    plan = plan_for_container({"image": "example.org/tools:1", "command": ["/agnhost", "netexec"],
                               "args": ["--http-port=8000"]})
    assert plan.mode == NETEXEC
    assert plan.http_ports == (8000,)


def test_old_single_purpose_netexec_image_is_recognised() -> None:
    plan = plan_for_container({"image": "gcr.io/kubernetes-e2e-test-images/netexec:1.1"})
    assert plan == ServePlan(http_ports=(8080,), udp_ports=(8081,), mode=NETEXEC)


def test_netexec_ignores_declared_container_ports_as_the_real_binary_does() -> None:
    plan = plan_for_container({"image": AGNHOST, "args": ["netexec", "--http-port=8080"],
                               "ports": [{"containerPort": 9376}]})
    assert plan.http_ports == (8080,)


def test_serve_hostname_defaults_to_http_on_9376() -> None:
    plan = plan_for_container({"image": AGNHOST, "args": ["serve-hostname"]})
    assert plan == ServePlan(http_ports=(9376,), udp_ports=(), mode=SERVE_HOSTNAME)


def test_serve_hostname_udp_only() -> None:
    plan = plan_for_container(
        {"image": AGNHOST, "args": ["serve-hostname", "--udp", "--http=false", "--port", "53"]})
    assert (plan.http_ports, plan.udp_ports) == ((), (53,))


def test_legacy_serve_hostname_image_is_recognised() -> None:
    plan = plan_for_container({"image": "registry.k8s.io/serve_hostname",
                               "ports": [{"containerPort": 9376}]})
    assert plan.http_ports == (9376,)
    assert plan.mode == SERVE_HOSTNAME


def test_unknown_image_serves_its_declared_ports_by_protocol() -> None:
    plan = plan_for_container({"image": "nginx:1.25", "ports": [
        {"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"},
        {"containerPort": 53, "protocol": "TCP"}, {"containerPort": 9999, "protocol": "SCTP"}]})
    assert plan == ServePlan(http_ports=(53, 80), udp_ports=(53,), mode=SERVE_HOSTNAME)


def test_agnhost_running_another_subcommand_serves_declared_ports() -> None:
    plan = plan_for_container({"image": AGNHOST, "args": ["pause"]})
    assert plan.empty


def test_bad_netexec_port_names_the_container_args() -> None:
    with pytest.raises(ManifestError) as caught:
        plan_for_pod([{"image": "pause"},
                      {"image": AGNHOST, "args": ["netexec", "--http-port=http"]}])
    assert caught.value.field == "spec.containers[1].args"


def test_out_of_range_container_port_is_rejected() -> None:
    with pytest.raises(ManifestError) as caught:
        plan_for_container({"image": "x", "ports": [{"containerPort": 70000}]},
                           field="spec.containers[0]")
    assert caught.value.field == "spec.containers[0].ports[0].containerPort"


def test_value_flag_without_value_is_rejected() -> None:
    with pytest.raises(ManifestError):
        plan_for_container({"image": AGNHOST, "args": ["netexec", "--http-port"]})


def test_pod_merges_containers_and_answers_as_netexec_if_any_runs_it() -> None:
    plan = plan_for_pod([
        {"image": AGNHOST, "args": ["netexec", "--http-port=8080", "--udp-port=-1"]},
        {"image": "sidecar", "ports": [{"containerPort": 9090}, {"containerPort": 8080}]},
    ])
    assert plan == ServePlan(http_ports=(8080, 9090), udp_ports=(), mode=NETEXEC)


def test_merging_nothing_is_an_empty_plan() -> None:
    assert merge_plans([]).empty
