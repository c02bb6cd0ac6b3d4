"""Cluster DNS from inside pods (issue 4): what a pod's resolver gets back, over real packets.

One lab serves the module. Queries leave the `client` pod (worker-1) for the
kube-dns ClusterIP 10.96.0.10, cross kube-proxy's DNAT (and the overlay, for the DNS
pod on another node), and are answered by the DNS server the runtime runs inside the
two CoreDNS pods. Most tests run `dig` in the pod, as a learner would (`knetlab exec
client -- dig +search web`); the timing tests ask with dnspython over a socket made in
the pod's namespace, so they can poll every few milliseconds. Objects a test adds it
removes; the lab's host footprint is checked at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from netlab.kernel import netns
from netlab.lab import lifecycle
from netlab.lab.session import RunningLab, start_lab
from tests.hoststate import HostState
from tests.integration.labs import WEB, lab_data, pod

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

LAB = "dn-int"
DNS_IP = "10.96.0.10"
MANY = 32  # endpoints of `many`: their A records need more than 512 bytes
PROGRAMMING_BUDGET = 1.0  # seconds from a scale write to the new A record
LAMEDUCK = 5.0  # kubeadm's Corefile: health { lameduck 5s }
RESOLVER_TIMEOUT = 5.0  # glibc's per-try timeout (resolv.conf `options timeout:`)


def service(name: str, ports: list[dict[str, Any]] | None = None, namespace: str = "default",
            selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A Service selecting `app: <name>` unless given another selector."""
    body: dict[str, Any] = {"selector": selector or {"app": name}, **spec}
    if ports is not None:
        body["ports"] = ports
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def deployment(name: str, replicas: int) -> dict[str, Any]:
    """A netexec Deployment labelled app=<name>, no readiness probe (Ready once running)."""
    obj = copy.deepcopy(WEB)
    obj["metadata"] = {"name": name, "labels": {"app": name}}
    obj["spec"]["replicas"] = replicas
    obj["spec"]["selector"] = {"matchLabels": {"app": name}}
    obj["spec"]["template"]["metadata"]["labels"] = {"app": name}
    del obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    return obj


def peer(name: str, hostname: str | None) -> dict[str, Any]:
    """A pod behind the headless Service `peers`, with its own DNS name if it has a hostname."""
    spec: dict[str, Any] = {"subdomain": "peers"}
    if hostname:
        spec["hostname"] = hostname
    obj = pod(name, "worker-2", **spec)
    obj["metadata"]["labels"] = {"app": "peers"}
    obj["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
    return obj


def gate_pod(name: str, ready: bool) -> dict[str, Any]:
    """A pod selected by `gated` and `gated-all`; one whose probe can never pass if not ready."""
    obj = pod(name, "worker-1")
    obj["metadata"]["labels"] = {"app": "gate"}
    port = 8080 if ready else 9999
    obj["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": port},
                                                      "periodSeconds": 1}
    return obj


HTTP = [{"name": "http", "port": 8080, "targetPort": 8080}]
OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}},
    WEB,
    service("web", [{"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "udp", "port": 8081, "targetPort": "udp", "protocol": "UDP"}]),
    service("web", HTTP, namespace="other"),
    pod("client", "worker-1"),
    service("peers", HTTP, clusterIP="None"),
    peer("peer-0", "peer-0"), peer("peer-1", "peer-1"), peer("loner", None),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "docs"},
     "spec": {"type": "ExternalName", "externalName": "docs.example.com"}},
    service("nobody", HTTP, clusterIP="None"),
    deployment("many", MANY), service("many", HTTP, clusterIP="None"),
    deployment("scaled", 1), service("scaled", HTTP, clusterIP="None"),
    service("gated", HTTP, clusterIP="None", selector={"app": "gate"}),
    service("gated-all", HTTP, clusterIP="None", selector={"app": "gate"},
            publishNotReadyAddresses=True),
]


def host_state() -> HostState:
    """The host's root namespace as HostState sees it, and what in it could be this lab's.

    The machine is shared: other labs and test modules create and remove their own
    namespaces, mounts and processes while this lab runs, and say nothing about its
    cleanup. So lists of names keep only those that carry this lab's name; links,
    routes and rules of the root namespace are compared whole.
    """
    state = HostState.capture(LAB)

    def ours(items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(i for i in items if f"nl-{LAB}-" in i or f"/knetlab/{LAB}" in i)

    return dataclasses.replace(state, netns=ours(state.netns), etc_netns=ours(state.etc_netns),
                               run_netns=ours(state.run_netns), mounts=ours(state.mounts),
                               processes=ours(state.processes))


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    before = host_state()
    running = start_lab(lab_data(LAB), LAB)
    try:
        running.apply(copy.deepcopy(OBJECTS))
        running.wait_ready(timeout=120)
        running.wait_for(lambda: len([p for p in dns_pods(running) if ready(p)]) == 2
                         and resolves(running), timeout=60, what="cluster DNS to answer")
        running.wait_for(lambda: curl_web(running), timeout=30,
                         what="the web Service to carry traffic")
        yield running
    finally:
        lifecycle.down(LAB)
    assert host_state().differences(before) == []


# -- asking -------------------------------------------------------------------------


@dataclass
class Reply:
    """What dig printed, split into the parts the tests look at."""

    text: str
    status: str = ""
    flags: set[str] = field(default_factory=set)
    sections: dict[str, list[list[str]]] = field(default_factory=dict)

    def records(self, section: str = "ANSWER", rtype: str | None = None) -> list[list[str]]:
        """Records as fields: owner, TTL, class, type, rdata..."""
        return [r for r in self.sections.get(section, []) if rtype is None or r[3] == rtype]

    def data(self, rtype: str, section: str = "ANSWER") -> list[str]:
        return sorted(" ".join(r[4:]) for r in self.records(section, rtype))

    @property
    def over_tcp(self) -> bool:
        return bool(re.search(r"^;; SERVER: .*\(TCP\)$", self.text, re.M))


def parse_dig(text: str) -> Reply:
    reply = Reply(text)
    current = None
    for line in text.splitlines():
        if line.startswith(";; ->>HEADER<<-"):
            reply.status = re.search(r"status: ([A-Z]+)", line).group(1)  # type: ignore[union-attr]
            reply.sections = {}
        elif line.startswith(";; flags:"):
            reply.flags = set(line[len(";; flags:"):].split(";")[0].split())
        elif (section := re.fullmatch(r";; (\w+) SECTION:", line)) is not None:
            current = section.group(1)
            reply.sections[current] = []
        elif not line.strip():
            current = None
        elif current and current != "QUESTION" and not line.startswith(";"):
            reply.sections[current].append(line.split())
    return reply


def dig(lab: RunningLab, *args: str, source: str = "client") -> Reply:
    result = lab.exec(source, "dig", "+time=2", "+tries=2", *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return parse_dig(result.stdout)


def client_socket(lab: RunningLab, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    sock = netns.socket_in(lab.netns("client"), socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


def addresses(lab: RunningLab, name: str, server: str = DNS_IP) -> set[str]:
    """The A records for name, asked from the client pod with room for every record."""
    query = dns.message.make_query(name, "A", use_edns=0, payload=4096)
    with client_socket(lab) as sock:
        response = dns.query.udp(query, server, timeout=2, sock=sock)
    return {rr.address for rrset in response.answer for rr in rrset}


def resolves(lab: RunningLab) -> bool:
    """Does the kube-dns ClusterIP answer the client yet (DNS pods Ready, proxy synced)?"""
    try:
        return bool(addresses(lab, "web.default.svc.cluster.local"))
    except (OSError, dns.exception.DNSException):
        return False


def dns_pods(lab: RunningLab) -> list[dict[str, Any]]:
    return [p for p in lab.pods("kube-system")
            if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"]


def ready(pod_obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod_obj.get("status") or {}).get("conditions") or [])


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def cluster_ip(lab: RunningLab, name: str, namespace: str = "default") -> str:
    return lab.objects.get("Service", namespace, name)["spec"]["clusterIP"]


def pod_ips(lab: RunningLab, app: str) -> set[str]:
    return {p["status"]["podIP"] for p in lab.pods()
            if p["metadata"].get("labels", {}).get("app") == app and ready(p)}


# -- names through the search path -------------------------------------------------


def test_short_name_resolves_through_the_search_path(lab):
    reply = dig(lab, "+search", "web")
    assert reply.status == "NOERROR"
    assert reply.records()[0][0] == "web.default.svc.cluster.local."
    assert reply.data("A") == [cluster_ip(lab, "web")]


def test_fqdn_answer_is_authoritative_with_the_configured_ttl(lab):
    reply = dig(lab, "web.default.svc.cluster.local")
    assert reply.data("A") == [cluster_ip(lab, "web")]
    assert "aa" in reply.flags
    assert reply.records()[0][1] == "30"


def test_service_in_another_namespace_resolves_as_name_dot_namespace(lab):
    other = cluster_ip(lab, "web", "other")
    assert other != cluster_ip(lab, "web")
    reply = dig(lab, "+search", "web.other")
    assert reply.records()[0][0] == "web.other.svc.cluster.local."
    assert reply.data("A") == [other]


def test_glibc_resolver_of_the_pod_finds_the_short_name(lab):
    out = lab.exec("client", "getent", "hosts", "web").stdout.split()
    assert out == [cluster_ip(lab, "web"), "web.default.svc.cluster.local"]


def curl_web(lab: RunningLab) -> str:
    return lab.exec("client", "curl", "-s", "--max-time", "5",
                    "http://web.default.svc.cluster.local/hostname", check=False).stdout


def test_curl_by_service_name_reaches_a_backend(lab):
    out = curl_web(lab)
    web_pods = {p["metadata"]["name"] for p in lab.pods()
                if p["metadata"]["labels"].get("app") == "web"}
    assert out in web_pods


# -- each record type ---------------------------------------------------------------


def test_srv_for_named_ports_points_at_the_service(lab):
    reply = dig(lab, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert reply.data("SRV") == ["0 100 80 web.default.svc.cluster.local."]
    assert reply.data("A", "ADDITIONAL") == [cluster_ip(lab, "web")]
    udp = dig(lab, "_udp._udp.web.default.svc.cluster.local", "SRV")
    assert udp.data("SRV") == ["0 100 8081 web.default.svc.cluster.local."]


def test_ptr_of_a_cluster_ip_names_the_service(lab):
    reply = dig(lab, "-x", cluster_ip(lab, "web"))
    assert reply.data("PTR") == ["web.default.svc.cluster.local."]


def test_headless_service_answers_every_ready_endpoint(lab):
    reply = dig(lab, "peers.default.svc.cluster.local")
    expected = {lab.pod_ip("peer-0"), lab.pod_ip("peer-1"), lab.pod_ip("loner")}
    assert set(reply.data("A")) == expected and len(reply.data("A")) == 3


def test_headless_pods_with_hostname_and_subdomain_get_their_own_names(lab):
    assert dig(lab, "peer-0.peers.default.svc.cluster.local").data("A") == [lab.pod_ip("peer-0")]
    assert dig(lab, "+search", "peer-1.peers").data("A") == [lab.pod_ip("peer-1")]
    loner = lab.pod_ip("loner")  # no hostname: published under its dashed IP
    assert dig(lab, f"{dashed(loner)}.peers.default.svc.cluster.local").data("A") == [loner]
    srv = dig(lab, "_http._tcp.peers.default.svc.cluster.local", "SRV")
    assert srv.data("SRV") == sorted([
        "0 33 8080 peer-0.peers.default.svc.cluster.local.",
        "0 33 8080 peer-1.peers.default.svc.cluster.local.",
        f"0 33 8080 {dashed(loner)}.peers.default.svc.cluster.local."])
    assert set(srv.data("A", "ADDITIONAL")) == {lab.pod_ip("peer-0"), lab.pod_ip("peer-1"), loner}


def test_ptr_of_a_headless_endpoint_names_its_hostname_or_dashed_ip(lab):
    assert dig(lab, "-x", lab.pod_ip("peer-0")).data("PTR") == [
        "peer-0.peers.default.svc.cluster.local."]
    loner = lab.pod_ip("loner")
    assert dig(lab, "-x", loner).data("PTR") == [
        f"{dashed(loner)}.peers.default.svc.cluster.local."]


def test_external_name_is_a_cname_to_the_outside_name(lab):
    cname = dig(lab, "docs.default.svc.cluster.local", "CNAME")
    assert cname.data("CNAME") == ["docs.example.com."]
    # An A query gets the CNAME; with forwarding off nothing resolves the target.
    a = dig(lab, "docs.default.svc.cluster.local", "A")
    assert a.status == "NOERROR"
    assert a.data("CNAME") == ["docs.example.com."] and a.data("A") == []


def test_pod_a_record_is_read_from_the_dashed_ip(lab):
    ip = lab.pod_ip("client")
    assert dig(lab, f"{dashed(ip)}.default.pod.cluster.local").data("A") == [ip]


def test_schema_version_is_published_as_txt(lab):
    reply = dig(lab, "dns-version.cluster.local", "TXT")
    assert reply.data("TXT") == ['"1.1.0"']


def test_zone_apex_has_soa_and_ns_pointing_at_kube_dns(lab):
    soa = dig(lab, "cluster.local", "SOA").data("SOA")
    assert len(soa) == 1
    assert soa[0].split()[:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]
    assert soa[0].split()[3:] == ["7200", "1800", "86400", "30"]
    ns = dig(lab, "cluster.local", "NS")
    assert ns.data("NS") == ["kube-dns.kube-system.svc.cluster.local."]
    assert ns.data("A", "ADDITIONAL") == [DNS_IP]


# -- readiness ----------------------------------------------------------------------


def test_not_ready_endpoints_are_left_out_unless_the_service_publishes_them(lab):
    lab.apply([gate_pod("gate-ready", ready=True), gate_pod("gate-never", ready=False)])
    try:
        lab.wait_for(lambda: all(lab.objects.get("Pod", "default", n) and
                                 lab.pod(n).get("status", {}).get("podIP")
                                 for n in ("gate-ready", "gate-never")), what="gate pods")
        ok, never = lab.pod_ip("gate-ready"), lab.pod_ip("gate-never")
        lab.wait_for(lambda: addresses(lab, "gated-all.default.svc.cluster.local") == {ok, never},
                     what="gated-all to publish both pods")
        lab.wait_for(lambda: addresses(lab, "gated.default.svc.cluster.local") == {ok},
                     what="gated to publish the ready pod")
        time.sleep(2)  # the probe keeps failing: the answer stays the same
        assert dig(lab, "gated.default.svc.cluster.local").data("A") == [ok]
        assert set(dig(lab, "gated-all.default.svc.cluster.local").data("A")) == {ok, never}
    finally:
        lab.delete("Pod", "gate-ready")
        lab.delete("Pod", "gate-never")


# -- negative answers ---------------------------------------------------------------


def assert_negative(reply: Reply, status: str) -> None:
    assert reply.status == status
    assert reply.records() == []
    assert [r[0] for r in reply.records("AUTHORITY", "SOA")] == ["cluster.local."]
    assert "aa" in reply.flags


def test_existing_name_without_that_type_is_nodata(lab):
    assert_negative(dig(lab, "web.default.svc.cluster.local", "AAAA"), "NOERROR")


def test_namespace_name_alone_is_nodata(lab):
    assert_negative(dig(lab, "default.svc.cluster.local"), "NOERROR")


def test_missing_service_or_namespace_is_nxdomain(lab):
    assert_negative(dig(lab, "nosuch.default.svc.cluster.local"), "NXDOMAIN")
    assert_negative(dig(lab, "web.nosuchns.svc.cluster.local"), "NXDOMAIN")


def test_headless_service_without_ready_endpoints_is_nxdomain(lab):
    assert_negative(dig(lab, "nobody.default.svc.cluster.local"), "NXDOMAIN")


# -- truncation ---------------------------------------------------------------------


def test_udp_answer_over_512_bytes_is_truncated_and_dig_retries_over_tcp(lab):
    name = "many.default.svc.cluster.local"
    truncated = dig(lab, "+noedns", "+ignore", name)
    assert "tc" in truncated.flags
    assert 0 < len(truncated.data("A")) < MANY
    size = int(re.search(r"MSG SIZE\s+rcvd: (\d+)", truncated.text).group(1))  # type: ignore[union-attr]
    assert size <= 512
    full = dig(lab, "+noedns", name)
    assert "Truncated, retrying in TCP mode" in full.text
    assert full.over_tcp and "tc" not in full.flags
    assert set(full.data("A")) == pod_ips(lab, "many") and len(full.data("A")) == MANY


# -- updates ------------------------------------------------------------------------


def test_scaled_deployment_is_answered_within_a_second(lab):
    """DNS programming latency: from the Deployment write to the new pod's A record."""
    name = "scaled.default.svc.cluster.local"
    obj = deployment("scaled", 1)
    latencies = []
    try:
        for replicas in (2, 3, 4):
            before = lab.wait_for(lambda: addresses(lab, name), what="scaled to answer")
            assert len(before) == replicas - 1
            obj["spec"]["replicas"] = replicas
            start = time.monotonic()
            lab.apply([copy.deepcopy(obj)])
            lab.wait_for(lambda r=replicas: len(addresses(lab, name)) == r, timeout=10,
                         what=f"{replicas} A records")
            latencies.append(time.monotonic() - start)
    finally:
        obj["spec"]["replicas"] = 1
        lab.apply([obj])
    assert statistics.median(latencies) < PROGRAMMING_BUDGET, latencies
    lab.wait_for(lambda: len(addresses(lab, name)) == 1, what="scale-down to show in DNS")


# -- malformed input ----------------------------------------------------------------


def _query_bytes(msg_id: int, **fields: Any) -> bytes:
    from scapy.layers.dns import DNS, DNSQR

    fields.setdefault("qd", DNSQR(qname="web.default.svc.cluster.local"))
    return bytes(DNS(id=msg_id, rd=1, **fields))


def _malformed() -> list[tuple[str, bytes, int | None]]:
    """(case, packet, rcode of the reply or None for no reply)."""
    from scapy.layers.dns import DNSQR

    header_only = _query_bytes(0x5103, qd=[], qdcount=1)
    two = [DNSQR(qname="web.default.svc.cluster.local"), DNSQR(qname="web.other.svc.cluster.local")]
    return [
        ("truncated header", _query_bytes(0x5101)[:7], None),
        ("response bit set", _query_bytes(0x5102, qr=1), None),
        ("compression loop", header_only + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),
        ("two questions", _query_bytes(0x5104, qd=two), dns.rcode.FORMERR),
        ("unknown opcode", _query_bytes(0x5105, opcode=3), dns.rcode.NOTIMP),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _malformed()])
def test_malformed_packet_gets_its_rcode_or_is_dropped_and_serving_goes_on(lab, case):
    _, packet, rcode = next(c for c in _malformed() if c[0] == case)
    server = dns_pods(lab)[0]["status"]["podIP"]
    with client_socket(lab) as sock:
        sock.settimeout(1.0)
        sock.sendto(packet, (server, 53))
        try:
            reply = sock.recv(4096)
        except TimeoutError:
            reply = None
    if rcode is None:
        assert reply is None
    else:
        assert reply is not None and reply[:2] == packet[:2]
        assert reply[2] & 0x80, "QR set"
        assert reply[3] & 0x0F == rcode
    assert addresses(lab, "web.default.svc.cluster.local", server) == {cluster_ip(lab, "web")}


# -- the DNS pods -------------------------------------------------------------------


def test_each_dns_pod_serves_metrics_health_and_ready(lab):
    for dns_pod in dns_pods(lab):
        ip = dns_pod["status"]["podIP"]
        addresses(lab, "web.default.svc.cluster.local", ip)
        metrics = lab.exec("client", "curl", "-s", "--max-time", "5",
                           f"http://{ip}:9153/metrics").stdout
        assert re.search(r'^coredns_dns_requests_total\{.*type="A".*\} [1-9]', metrics, re.M)
        for port, path in ((8080, "health"), (8181, "ready")):
            out = lab.exec("client", "curl", "-s", "--max-time", "5", "-w", " %{http_code}",
                           f"http://{ip}:{port}/{path}").stdout
            assert out.endswith(" 200"), (path, out)


def test_a_deleted_dns_pod_answers_through_its_lameduck_then_goes(lab):
    """CoreDNS' `health { lameduck 5s }`: after deletion the pod is Terminating, its /ready
    fails and it still answers queries sent to it (ones already on their way when
    kube-proxy dropped it); after the lameduck the pod and its namespace go."""
    victim = dns_pods(lab)[0]
    name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
    netns_name = lab.netns(f"kube-system/{name}")
    lab.delete("Pod", name, "kube-system")
    deleted_at = time.monotonic()
    answered = []
    while time.monotonic() - deleted_at < LAMEDUCK - 1.5:
        answered.append(addresses(lab, "web.default.svc.cluster.local", server=ip)
                        == {cluster_ip(lab, "web")})
        time.sleep(0.2)
    pod_obj = lab.objects.get("Pod", "kube-system", name)
    assert pod_obj is not None and pod_obj["metadata"].get("deletionTimestamp")
    ready_now = lab.exec("client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                         "--max-time", "2", f"http://{ip}:8181/ready", check=False).stdout
    assert answered and all(answered), answered
    assert ready_now == "503", ready_now
    lab.wait_for(lambda: lab.objects.get("Pod", "kube-system", name) is None, timeout=15,
                 what="the deleted DNS pod to go after its lameduck")
    gone_after = time.monotonic() - deleted_at
    assert gone_after >= LAMEDUCK - 0.5, gone_after
    lab.wait_for(lambda: not netns.exists(netns_name), timeout=10,
                 what="the pod's namespace to go")
    lab.wait_for(lambda: len([p for p in dns_pods(lab) if ready(p)]) == 2, timeout=60,
                 what="the replacement DNS pod to be Ready")


def test_dns_keeps_answering_while_a_dns_pod_is_replaced(lab):
    """A resolver's loop sees no failed lookup while one DNS pod is deleted and replaced.

    Each lookup is one socket, tried twice 5 s apart, as glibc does with a pod's
    resolv.conf: a query caught in flight to the deleted pod is answered on the retry,
    once kube-proxy has dropped the pod and its UDP conntrack entries.
    """
    failures: list[float] = []
    lookups = 0
    stop = threading.Event()
    deleted_at = time.monotonic() + 3600

    def lookup() -> bool:
        query = dns.message.make_query("web.default.svc.cluster.local", "A")
        with client_socket(lab) as sock:
            for _ in range(2):
                try:
                    dns.query.udp(query, DNS_IP, timeout=RESOLVER_TIMEOUT, sock=sock)
                    return True
                except dns.exception.Timeout:
                    continue
        return False

    def loop() -> None:
        nonlocal lookups
        while not stop.is_set():
            started = time.monotonic()
            if not lookup():
                failures.append(round(started - deleted_at, 2))
            lookups += 1
            time.sleep(0.02)

    old = dns_pods(lab)
    victim, survivor = old[0]["metadata"]["name"], old[1]["metadata"]["name"]
    worker = threading.Thread(target=loop)
    worker.start()
    try:
        time.sleep(1)
        deleted_at = time.monotonic()
        lab.delete("Pod", victim, "kube-system")
        lab.wait_for(lambda: lab.objects.get("Pod", "kube-system", victim) is None,
                     what="the deleted DNS pod to go")
        replacement = lab.wait_for(
            lambda: [p for p in dns_pods(lab) if p["metadata"]["name"] != survivor and ready(p)],
            timeout=60, what="a replacement DNS pod to be Ready")
        time.sleep(3)
    finally:
        stop.set()
        worker.join()
    assert failures == [] and lookups > 20, (failures, lookups)
    new_ip = replacement[0]["status"]["podIP"]
    assert addresses(lab, "web.default.svc.cluster.local", new_ip) == {cluster_ip(lab, "web")}
