"""ClusterIP and NodePort allocation behaves like kube-apiserver's, with its error messages."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from netlab.api.cluster import ClusterConfig
from netlab.control import servicealloc
from netlab.control.servicealloc import (
    IPS_KEY,
    NODE_PORTS_KEY,
    Tables,
    admit_service,
    allocate,
    ensure_default_services,
    release_service,
    repair,
)
from netlab.errors import ManifestError
from tests.unit.control_objects import open_objects, service

CONFIG = ClusterConfig()


def fresh() -> Tables:
    return Tables({}, {})


def nodeport(name: str = "web", ns: str = "default", **port: object) -> dict:
    return service(name, ns, selector={"app": name}, type="NodePort",
                   ports=[{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                           **port}])


def test_the_kubernetes_service_gets_the_first_address_and_kube_dns_the_dns_address():
    tables = fresh()
    kubernetes = allocate(servicealloc.kubernetes_service(), None, tables, CONFIG, 0)
    dns = allocate(service("kube-dns", "kube-system"), None, tables, CONFIG, 0)
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
    assert kubernetes["spec"]["clusterIPs"] == ["10.96.0.1"]
    assert dns["spec"]["clusterIP"] == "10.96.0.10"
    assert tables.ips["10.96.0.10"]["owner"] == "kube-system/kube-dns"


def test_an_allocated_address_is_stable_for_a_name_and_outside_the_static_band():
    first = allocate(service("web"), None, fresh(), CONFIG, 0)["spec"]["clusterIP"]
    again = allocate(service("web"), None, fresh(), CONFIG, 0)["spec"]["clusterIP"]
    assert first == again
    address = ipaddress.ip_address(first)
    assert address in ipaddress.ip_network("10.96.0.0/12")
    assert address >= ipaddress.ip_address("10.96.1.1")  # the first 256 stay for requests


def test_a_taken_address_makes_the_next_service_probe_on():
    tables = fresh()
    first = allocate(service("web"), None, tables, CONFIG, 0)["spec"]["clusterIP"]
    tables.ips[first]["owner"] = "other/owner"
    second = allocate(service("web", "prod"), None, tables, CONFIG, 0)["spec"]["clusterIP"]
    assert second != first


def test_a_requested_address_is_honoured():
    svc = allocate(service("web", clusterIP="10.96.5.5"), None, fresh(), CONFIG, 0)
    assert svc["spec"]["clusterIP"] == "10.96.5.5"


@pytest.mark.parametrize("ip", ["10.0.0.1", "10.96.0.0", "10.111.255.255"])
def test_a_requested_address_outside_the_range_is_refused_in_apiserver_words(ip):
    with pytest.raises(ManifestError) as err:
        allocate(service("web", clusterIP=ip), None, fresh(), CONFIG, 0)
    assert str(err.value) == (
        f'spec.clusterIP: Invalid value: "{ip}": provided IP is not in the valid range. '
        "The range of valid IPs is 10.96.0.0/12")


def test_a_requested_address_held_by_another_service_is_refused():
    tables = fresh()
    allocate(service("a", clusterIP="10.96.5.5"), None, tables, CONFIG, 0)
    with pytest.raises(ManifestError, match='spec.clusterIP: Invalid value: "10.96.5.5": '
                                            "provided IP is already allocated"):
        allocate(service("b", clusterIP="10.96.5.5"), None, tables, CONFIG, 0)


@pytest.mark.parametrize("ip", ["10.96.0.1", "10.96.0.10"])
def test_the_reserved_addresses_are_refused_to_other_services(ip):
    with pytest.raises(ManifestError, match="already allocated"):
        allocate(service("web", clusterIP=ip), None, fresh(), CONFIG, 0)


def test_headless_and_external_name_services_get_no_address():
    tables = fresh()
    headless = allocate(service("db", clusterIP="None"), None, tables, CONFIG, 0)
    external = allocate(service("ext", type="ExternalName", externalName="example.com"),
                        None, tables, CONFIG, 0)
    assert headless["spec"]["clusterIPs"] == ["None"]
    assert "clusterIP" not in external["spec"]
    assert tables.ips == {}


def test_an_update_keeps_the_address_and_node_ports_and_refuses_a_new_address():
    tables = fresh()
    created = allocate(nodeport(), None, tables, CONFIG, 0)
    updated = allocate(nodeport(), created, tables, CONFIG, 1)  # manifest without them
    assert updated["spec"]["clusterIP"] == created["spec"]["clusterIP"]
    assert updated["spec"]["ports"][0]["nodePort"] == created["spec"]["ports"][0]["nodePort"]
    with pytest.raises(ManifestError, match="spec.clusterIP: .*field is immutable"):
        allocate(service("web", clusterIP="10.96.7.7"), created, tables, CONFIG, 2)


def test_node_ports_come_from_the_upper_part_of_the_range():
    svc = allocate(nodeport(), None, fresh(), CONFIG, 0)
    assert 30086 <= svc["spec"]["ports"][0]["nodePort"] <= 32767


def test_a_requested_node_port_outside_the_range_is_refused_in_apiserver_words():
    with pytest.raises(ManifestError) as err:
        allocate(nodeport(nodePort=40000), None, fresh(), CONFIG, 0)
    assert str(err.value) == (
        "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid "
        "range. The range of valid ports is 30000-32767")


def test_a_requested_node_port_in_use_is_refused():
    tables = fresh()
    allocate(nodeport("a", nodePort=30080), None, tables, CONFIG, 0)
    with pytest.raises(ManifestError, match="spec.ports\\[0\\].nodePort: Invalid value: "
                                            "30080: provided port is already allocated"):
        allocate(nodeport("b", nodePort=30080), None, tables, CONFIG, 0)


def test_tcp_and_udp_on_the_same_port_share_one_node_port():
    dns = service("dns", type="NodePort", selector={"app": "dns"},
                  ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    ports = allocate(dns, None, fresh(), CONFIG, 0)["spec"]["ports"]
    assert ports[0]["nodePort"] == ports[1]["nodePort"]


def test_turning_a_node_port_service_into_cluster_ip_releases_its_ports():
    tables = fresh()
    created = allocate(nodeport(), None, tables, CONFIG, 0)
    allocate(service("web", selector={"app": "web"}), created, tables, CONFIG, 1)
    assert tables.ports == {}
    assert created["spec"]["clusterIP"] in tables.ips


@pytest.fixture
def objects(tmp_path):
    objs = open_objects(tmp_path)
    yield objs
    objs.store.close()


def test_admit_persists_allocations_and_release_frees_them(objects):
    svc = admit_service(objects, nodeport(), CONFIG)
    ips = objects.store.get(IPS_KEY).value
    ports = objects.store.get(NODE_PORTS_KEY).value
    assert ips["range"] == "10.96.0.0/12" and ports["range"] == "30000-32767"
    assert ips["allocated"][svc["spec"]["clusterIP"]]["owner"] == "default/web"
    assert str(svc["spec"]["ports"][0]["nodePort"]) in ports["allocated"]
    objects.create(svc)
    release_service(objects, svc)
    assert objects.store.get(IPS_KEY).value["allocated"] == {}
    assert objects.store.get(NODE_PORTS_KEY).value["allocated"] == {}


def test_admit_of_a_stored_service_keeps_its_values(objects):
    stored = objects.create(admit_service(objects, nodeport(), CONFIG))
    again = admit_service(objects, nodeport(), CONFIG)
    assert again["spec"]["clusterIP"] == stored["spec"]["clusterIP"]
    assert again["spec"]["ports"] == stored["spec"]["ports"]


def test_concurrent_creators_never_get_the_same_address(objects, tmp_path):
    small = ClusterConfig(service_cidr="10.96.0.0/27")  # 30 addresses: collisions likely
    results: list[str] = []
    lock = threading.Lock()

    def create(worker: int) -> None:
        mine = open_objects(tmp_path)
        for i in range(5):
            svc = admit_service(mine, service(f"svc-{worker}-{i}"), small)
            with lock:
                results.append(svc["spec"]["clusterIP"])
        mine.store.close()

    threads = [threading.Thread(target=create, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20 and len(set(results)) == 20


def test_a_full_range_is_reported(objects):
    tiny = ClusterConfig(service_cidr="10.96.0.0/30", dns_cluster_ip="10.96.0.2")
    admit_service(objects, servicealloc.kubernetes_service(), tiny)
    with pytest.raises(ManifestError, match="range is full"):
        admit_service(objects, service("web"), tiny)


def test_repair_frees_an_allocation_without_a_service_only_after_a_grace_time(objects):
    stored = objects.create(admit_service(objects, service("web"), CONFIG))
    leaked = admit_service(objects, service("never-stored"), CONFIG)  # apply died here
    repair(objects, CONFIG, now=time.time() + 1)
    assert leaked["spec"]["clusterIP"] in objects.store.get(IPS_KEY).value["allocated"]
    repair(objects, CONFIG, now=time.time() + servicealloc.LEAK_GRACE_SECONDS + 1)
    table = objects.store.get(IPS_KEY).value["allocated"]
    assert list(table) == [stored["spec"]["clusterIP"]]


def test_repair_restores_allocations_the_store_lost(objects):
    stored = objects.create(admit_service(objects, nodeport(), CONFIG))
    objects.store.delete(IPS_KEY)
    objects.store.delete(NODE_PORTS_KEY)
    repair(objects, CONFIG)
    assert objects.store.get(IPS_KEY).value["allocated"][stored["spec"]["clusterIP"]][
        "owner"] == "default/web"
    assert str(stored["spec"]["ports"][0]["nodePort"]) in objects.store.get(
        NODE_PORTS_KEY).value["allocated"]


def test_default_services_are_created_once(objects):
    ensure_default_services(objects, CONFIG)
    kubernetes = objects.get("Service", "default", "kubernetes")
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
    assert kubernetes["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP",
                                           "targetPort": 6443}]
    assert "selector" not in kubernetes["spec"]
    revision = objects.store.revision()
    ensure_default_services(objects, CONFIG)
    assert objects.store.revision() == revision
