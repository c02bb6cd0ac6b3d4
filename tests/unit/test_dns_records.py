"""The record index: which names exist and what they hold (CoreDNS kubernetes-plugin rules)."""

from __future__ import annotations

import pytest

from netlab.dns.objects import dashed, undashed
from netlab.dns.records import Entry, NameError_, RecordIndex, RecordOptions
from tests.unit.dns_k8s_objects import endpoint, endpoint_slice, namespace, pod, service


def labels(name: str) -> tuple[str, ...]:
    return tuple(name.split("."))


@pytest.fixture
def index() -> RecordIndex:
    idx = RecordIndex(clock=lambda: 1_700_000_000)
    idx.apply("Service", "ADDED", service("web", "prod", "10.96.0.20",
                                          ports=(("http", 80, "TCP"), ("", 9090, "TCP"))))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("web", "prod", [
        endpoint("10.244.1.5", hostname="web-a"), endpoint("10.244.2.6")]))
    idx.apply("Service", "ADDED", service("db", "prod", headless=True,
                                          ports=(("pg", 5432, "TCP"),)))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("db", "prod", [
        endpoint("10.244.1.7", hostname="db-0"), endpoint("10.244.2.8"),
        endpoint("10.244.2.9", ready=False)], ports=(("pg", 5432, "TCP"),)))
    idx.mark_synced()
    return idx


def find(index: RecordIndex, name: str) -> list[Entry]:
    return index.find(labels(name))


def test_clusterip_service_resolves_to_its_cluster_ip_once_per_port(index: RecordIndex) -> None:
    entries = find(index, "web.prod.svc")
    assert {(e.host, e.port) for e in entries} == {("10.96.0.20", 80), ("10.96.0.20", 9090)}
    assert all(e.name == ("web", "prod", "svc") for e in entries)


def test_named_port_query_matches_port_and_protocol_case_insensitively(index: RecordIndex) -> None:
    assert [e.port for e in find(index, "_http._tcp.web.prod.svc")] == [80]
    assert [e.port for e in find(index, "http.tcp.web.prod.svc")] == [80]  # underscores optional
    with pytest.raises(NameError_):
        find(index, "_http._udp.web.prod.svc")
    with pytest.raises(NameError_):
        find(index, "_metrics._tcp.web.prod.svc")


def test_headless_service_lists_only_ready_endpoints(index: RecordIndex) -> None:
    hosts = [e.host for e in find(index, "db.prod.svc")]
    assert hosts == ["10.244.1.7", "10.244.2.8"]


def test_headless_endpoint_names_use_hostname_else_dashed_ip(index: RecordIndex) -> None:
    assert [e.host for e in find(index, "db-0.db.prod.svc")] == ["10.244.1.7"]
    assert [e.host for e in find(index, "10-244-2-8.db.prod.svc")] == ["10.244.2.8"]
    with pytest.raises(NameError_):  # has a hostname, so not reachable by its dashed IP
        find(index, "10-244-1-7.db.prod.svc")
    with pytest.raises(NameError_):  # not ready
        find(index, "10-244-2-9.db.prod.svc")


def test_headless_srv_targets_are_per_endpoint_names(index: RecordIndex) -> None:
    entries = find(index, "_pg._tcp.db.prod.svc")
    assert [(e.name[0], e.port) for e in entries] == [("db-0", 5432), ("10-244-2-8", 5432)]


def test_endpoint_names_also_work_under_clusterip_services(index: RecordIndex) -> None:
    assert [e.host for e in find(index, "web-a.web.prod.svc")] == ["10.244.1.5"]
    assert [e.host for e in find(index, "10-244-2-6.web.prod.svc")] == ["10.244.2.6"]


def test_publish_not_ready_addresses_publishes_every_endpoint(index: RecordIndex) -> None:
    index.apply("Service", "MODIFIED", service("db", "prod", headless=True,
                                               ports=(("pg", 5432, "TCP"),),
                                               publish_not_ready=True))
    assert "10.244.2.9" in [e.host for e in find(index, "db.prod.svc")]


def test_ready_condition_missing_counts_as_ready() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("h", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("h", endpoints=[
        endpoint("10.244.0.9", ready=None)]))
    assert [e.host for e in find(idx, "h.default.svc")] == ["10.244.0.9"]


def test_headless_service_without_ready_endpoints_does_not_exist() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("h", headless=True))
    with pytest.raises(NameError_):
        find(idx, "h.default.svc")
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("h", endpoints=[
        endpoint("10.244.0.9", ready=False)]))
    with pytest.raises(NameError_):
        find(idx, "h.default.svc")


def test_clusterip_service_without_endpoints_still_resolves() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("empty", ip="10.96.0.99"))
    assert [e.host for e in find(idx, "empty.default.svc")] == ["10.96.0.99"]


def test_ignore_empty_service_hides_clusterip_services_without_ready_endpoints() -> None:
    idx = RecordIndex(RecordOptions(ignore_empty_service=True))
    idx.apply("Service", "ADDED", service("empty", ip="10.96.0.99"))
    with pytest.raises(NameError_):
        find(idx, "empty.default.svc")


def test_headless_service_without_ports_answers_addresses_but_no_srv_port() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("bare", headless=True, ports=()))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("bare", endpoints=[
        endpoint("10.244.0.20")], ports=()))
    assert [(e.host, e.port) for e in find(idx, "bare.default.svc")] == [("10.244.0.20", -1)]


def test_external_name_service_points_at_its_target_and_has_no_subnames() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("ext", external="db.example.org."))
    assert [e.host for e in find(idx, "ext.default.svc")] == ["db.example.org"]
    for name in ("_http._tcp.ext.default.svc", "anything.ext.default.svc"):
        with pytest.raises(NameError_):
            find(idx, name)


def test_external_name_that_is_an_ip_is_not_published() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("ip", external="1.2.3.4"))
    with pytest.raises(NameError_):
        find(idx, "ip.default.svc")


def test_dual_stack_service_keeps_both_cluster_ips() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("dual", ips=["10.96.0.3", "fd00:10:96::3"]))
    assert [e.host for e in find(idx, "dual.default.svc")] == ["10.96.0.3", "fd00:10:96::3"]


@pytest.mark.parametrize("name", ["", "svc", "pod", "prod.svc"])
def test_zone_apex_bare_svc_pod_and_existing_namespace_exist_without_data(
        index: RecordIndex, name: str) -> None:
    assert index.find(tuple(name.split(".")) if name else ()) == []


@pytest.mark.parametrize("name", [
    "nosuch.svc",                       # namespace that does not exist
    "web.nosuch.svc",
    "foo",                              # neither svc nor pod under the zone
    "dns-version",
    "nosuch.prod.svc",                  # unknown service
    "bogus.web.prod.svc",               # unknown endpoint
    "_tcp.web.prod.svc",                # empty non-terminal: parsed as an endpoint label
    "a.b.c.web.prod.svc",               # too many labels
    "*.db.prod.svc",                    # wildcards were removed from CoreDNS in 1.9.0
])
def test_names_that_do_not_exist(index: RecordIndex, name: str) -> None:
    with pytest.raises(NameError_):
        find(index, name)


def test_builtin_namespaces_always_exist() -> None:
    assert RecordIndex().find(("kube-system", "svc")) == []


def test_namespace_objects_make_namespaces_exist_until_deleted() -> None:
    idx = RecordIndex()
    idx.apply("Namespace", "ADDED", namespace("team"))
    assert idx.find(("team", "svc")) == []
    idx.apply("Namespace", "DELETED", namespace("team"))
    with pytest.raises(NameError_):
        idx.find(("team", "svc"))


def test_namespaces_option_hides_other_namespaces(index: RecordIndex) -> None:
    index.options = RecordOptions(namespaces=frozenset({"other"}))
    with pytest.raises(NameError_):
        find(index, "web.prod.svc")


def test_pod_names_in_insecure_mode_parse_the_ip_without_checking() -> None:
    idx = RecordIndex()
    assert [e.host for e in find(idx, "10-244-1-5.default.pod")] == ["10.244.1.5"]
    assert [e.host for e in find(idx, "fd00--1.default.pod")] == ["fd00::1"]
    with pytest.raises(NameError_):
        find(idx, "not-an-ip.default.pod")
    with pytest.raises(NameError_):
        find(idx, "10-244-1-5.nosuch.pod")


def test_pod_names_in_verified_mode_need_a_pod_with_that_ip_in_that_namespace() -> None:
    idx = RecordIndex(RecordOptions(pods="verified"))
    idx.apply("Pod", "ADDED", pod("client", "team", "10.244.3.4"))
    assert [e.host for e in find(idx, "10-244-3-4.team.pod")] == ["10.244.3.4"]
    with pytest.raises(NameError_):
        find(idx, "10-244-3-5.team.pod")
    with pytest.raises(NameError_):
        find(idx, "10-244-3-4.default.pod")
    idx.apply("Pod", "DELETED", pod("client", "team", "10.244.3.4"))
    with pytest.raises(NameError_):
        find(idx, "10-244-3-4.team.pod")


def test_pod_names_disabled_are_nxdomain_but_bare_pod_exists() -> None:
    idx = RecordIndex(RecordOptions(pods="disabled"))
    assert idx.find(("pod",)) == []
    for name in ("default.pod", "10-244-1-5.default.pod"):
        with pytest.raises(NameError_):
            find(idx, name)


def test_reverse_of_cluster_ip_is_the_service_name(index: RecordIndex) -> None:
    assert index.reverse("10.96.0.20") == [("web", "prod", "svc")]


def test_reverse_of_endpoint_ip_uses_hostname_or_dashed_ip(index: RecordIndex) -> None:
    assert index.reverse("10.244.1.7") == [("db-0", "db", "prod", "svc")]
    assert index.reverse("10.244.2.6") == [("10-244-2-6", "web", "prod", "svc")]
    assert index.reverse("10.244.2.9") == []  # not ready
    assert index.reverse("192.0.2.1") == []


def test_reverse_of_ip_backing_two_services_names_both() -> None:
    idx = RecordIndex()
    for svc in ("a", "b"):
        idx.apply("Service", "ADDED", service(svc, headless=True))
        idx.apply("EndpointSlice", "ADDED", endpoint_slice(svc, endpoints=[
            endpoint("10.244.0.5")]))
    assert idx.reverse("10.244.0.5") == [("10-244-0-5", "a", "default", "svc"),
                                          ("10-244-0-5", "b", "default", "svc")]


def test_endpoint_pod_names_option_uses_the_pod_name_label() -> None:
    idx = RecordIndex(RecordOptions(endpoint_pod_names=True))
    idx.apply("Service", "ADDED", service("h", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("h", endpoints=[
        endpoint("10.244.0.5", pod="h-7d9f")]))
    assert [e.host for e in find(idx, "h-7d9f.h.default.svc")] == ["10.244.0.5"]


def test_nameservers_are_the_service_backed_by_our_own_ip() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("kube-dns", "kube-system", "10.96.0.10",
                                          ports=(("dns", 53, "UDP"),)))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("kube-dns", "kube-system", [
        endpoint("10.244.0.2"), endpoint("10.244.1.2")], ports=(("dns", 53, "UDP"),)))
    assert idx.nameservers(["10.244.0.2"]) == [(("kube-dns", "kube-system", "svc"), "10.96.0.10")]
    assert idx.nameservers(["10.244.9.9"]) == []


def test_updates_replace_old_data_and_bump_version_and_serial() -> None:
    now = [1000.0]
    idx = RecordIndex(clock=lambda: now[0])
    idx.apply("Service", "ADDED", service("web", ip="10.96.0.20"))
    version = idx.version
    now[0] = 2000.0
    assert idx.apply("Service", "MODIFIED", service("web", ip="10.96.0.21"))
    assert [e.host for e in find(idx, "web.default.svc")] == ["10.96.0.21"]
    assert idx.reverse("10.96.0.20") == []
    assert (idx.version, idx.serial) == (version + 1, 2000)


def test_an_update_that_changes_nothing_dns_cares_about_is_not_a_change() -> None:
    idx = RecordIndex()
    svc = service("web")
    idx.apply("Service", "ADDED", svc)
    version = idx.version
    svc["metadata"]["resourceVersion"] = "2"
    svc["metadata"]["labels"] = {"app": "web"}
    assert not idx.apply("Service", "MODIFIED", svc)
    assert idx.version == version


def test_deleting_objects_removes_their_names() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("h", headless=True))
    sl = endpoint_slice("h", endpoints=[endpoint("10.244.0.9")])
    idx.apply("EndpointSlice", "ADDED", sl)
    idx.apply("EndpointSlice", "DELETED", sl)
    assert idx.reverse("10.244.0.9") == []
    with pytest.raises(NameError_):
        find(idx, "h.default.svc")
    idx.apply("Service", "DELETED", service("h", headless=True))
    with pytest.raises(NameError_):
        find(idx, "h.default.svc")


def test_endpoints_of_one_service_merge_across_slices() -> None:
    idx = RecordIndex()
    idx.apply("Service", "ADDED", service("h", headless=True))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("h", name="h-1", endpoints=[
        endpoint("10.244.0.1")]))
    idx.apply("EndpointSlice", "ADDED", endpoint_slice("h", name="h-2", endpoints=[
        endpoint("fd00::2")], family="IPv6"))
    assert [e.host for e in find(idx, "h.default.svc")] == ["10.244.0.1", "fd00::2"]


def test_unknown_kinds_and_events_are_ignored() -> None:
    idx = RecordIndex()
    assert not idx.apply("ConfigMap", "ADDED", {"metadata": {"name": "x"}})
    assert not idx.apply("Service", "BOOKMARK", service("web"))
    assert idx.version == 0


def test_mark_synced_is_a_change_for_caches() -> None:
    idx = RecordIndex()
    idx.mark_synced()
    assert idx.synced and idx.version == 1


def test_dashed_ip_labels_round_trip() -> None:
    assert dashed("10.244.2.22") == "10-244-2-22"
    assert dashed("fd00::") == "fd00--0"
    assert undashed("10-244-2-22") == "10.244.2.22"
    assert undashed("fd00--1") == "fd00::1"
    assert undashed("1-2-3") is None
