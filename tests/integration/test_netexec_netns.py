"""Two pods in two real namespaces joined by a veth pair, served by one process.

a: 10.99.0.1/24 on nlt-apps-va, b: 10.99.0.2/24 on nlt-apps-vb. The test client
enters a namespace with netns.entered, so its traffic crosses the veth as a
pod's would.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from netlab.apps.netexec import PodInfo
from netlab.apps.runner import PodServerThread
from netlab.kernel import netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
]

NS_A, NS_B = "nlt-apps-a", "nlt-apps-b"
IP_A, IP_B = "10.99.0.1", "10.99.0.2"


def _configure(name: str, ifname: str, address: str) -> None:
    with netns.entered(name), IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=24)
        ipr.link("set", index=index, state="up")


@pytest.fixture
def two_namespaces() -> Iterator[None]:
    run_dir_existed = os.path.isdir(netns.NETNS_RUN_DIR)
    made: list[str] = []
    try:
        for name in (NS_A, NS_B):
            netns.create(name)
            made.append(name)
        peer_fd = os.open(netns.path_of(NS_B), os.O_RDONLY)
        try:
            with netns.entered(NS_A), IPRoute() as ipr:
                ipr.link("add", ifname="nlt-apps-va", kind="veth",
                         peer={"ifname": "nlt-apps-vb", "net_ns_fd": peer_fd})
        finally:
            os.close(peer_fd)
        _configure(NS_A, "nlt-apps-va", IP_A)
        _configure(NS_B, "nlt-apps-vb", IP_B)
        yield
    finally:
        for name in made:
            netns.delete(name)
        if not run_dir_existed:
            netns.release_run_dir()


@pytest.fixture
def pods(two_namespaces: None) -> Iterator[tuple[PodServerThread, PodInfo, PodInfo]]:
    with PodServerThread(dial_timeout=2.0) as server:
        a = server.add_pod("default/a", NS_A, "pod-a", [8080], [8081])
        b = server.add_pod("default/b", NS_B, "pod-b", [8080], [8081])
        yield server, a, b


def get_from(name: str, host: str, path: str) -> tuple[int, str]:
    with netns.entered(name):
        conn = http.client.HTTPConnection(host, 8080, timeout=5)
        conn.connect()
    conn.request("GET", path)
    response = conn.getresponse()
    result = response.status, response.read().decode()
    conn.close()
    return result


def test_pod_sees_the_other_namespace_as_client(pods: tuple) -> None:
    status, body = get_from(NS_B, IP_A, "/clientip")
    assert status == 200
    assert body.rsplit(":", 1)[0] == IP_B
    assert get_from(NS_B, IP_A, "/hostname") == (200, "pod-a")


def test_dial_leaves_from_the_pods_own_namespace(pods: tuple) -> None:
    _, body = get_from(NS_B, IP_A, f"/dial?request=hostname&protocol=http&host={IP_B}"
                                   "&port=8080&tries=2")
    assert json.loads(body) == {"responses": ["pod-b", "pod-b"]}
    _, body = get_from(NS_B, IP_A, f"/dial?request=clientip&protocol=udp&host={IP_B}&port=8081")
    [answer] = json.loads(body)["responses"]
    assert answer.rsplit(":", 1)[0] == IP_A


def test_udp_commands_cross_the_veth(pods: tuple) -> None:
    with netns.entered(NS_B):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.connect((IP_A, 8081))
        sock.send(b"echo hello\n")
        assert sock.recv(2048) == b"hello"


def test_remove_pod_closes_its_listener_in_its_namespace(pods: tuple) -> None:
    server, _, _ = pods
    assert server.remove_pod("default/a")
    with netns.entered(NS_B):
        sock = socket.socket()
    with sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(3)
        sock.connect((IP_A, 8080))
    assert get_from(NS_A, IP_B, "/hostname") == (200, "pod-b")
