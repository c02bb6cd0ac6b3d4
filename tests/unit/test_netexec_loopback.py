"""The netexec-compatible server on 127.0.0.1, in the current namespace (no root).

Pods ask for port 0, so the kernel picks free ports and PodInfo reports them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator

import pytest

from netlab.apps.container import SERVE_HOSTNAME
from netlab.apps.netexec import PodInfo
from netlab.apps.runner import PodServerThread
from netlab.errors import KernelError

LOCAL = "127.0.0.1"


@pytest.fixture
def server() -> Iterator[PodServerThread]:
    with PodServerThread(bind_address=LOCAL, dial_timeout=1.0, call_timeout=10.0) as running:
        yield running


@pytest.fixture
def pod_a(server: PodServerThread) -> PodInfo:
    return server.add_pod("default/a", None, "pod-a", [0], [0])


@pytest.fixture
def pod_b(server: PodServerThread) -> PodInfo:
    return server.add_pod("default/b", None, "pod-b", [0], [0])


def get(pod: PodInfo, path: str, conn: http.client.HTTPConnection | None = None,
        method: str = "GET") -> tuple[int, str]:
    conn = conn or http.client.HTTPConnection(LOCAL, pod.http_ports[0], timeout=5)
    conn.request(method, path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def udp(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (LOCAL, port))
        return sock.recv(2048)


def test_hostname_answers_the_pod_name(pod_a: PodInfo) -> None:
    assert get(pod_a, "/hostname") == (200, "pod-a")
    assert get(pod_a, "/hostName") == (200, "pod-a")


def test_clientip_is_the_peer_ip_and_port(pod_a: PodInfo) -> None:
    conn = http.client.HTTPConnection(LOCAL, pod_a.http_ports[0], timeout=5)
    status, body = get(pod_a, "/clientip", conn)
    assert conn.sock is not None
    assert (status, body) == (200, "{}:{}".format(*conn.sock.getsockname()))


def test_keep_alive_serves_many_requests_on_one_connection(pod_a: PodInfo) -> None:
    conn = http.client.HTTPConnection(LOCAL, pod_a.http_ports[0], timeout=5)
    first = get(pod_a, "/clientip", conn)
    assert get(pod_a, "/hostname", conn) == (200, "pod-a")
    assert get(pod_a, "/clientip", conn) == first


def test_pipelined_requests_get_answers_in_order(pod_a: PodInfo) -> None:
    with socket.create_connection((LOCAL, pod_a.http_ports[0]), timeout=5) as sock:
        sock.sendall(b"GET /echo?msg=one HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /echo?msg=two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"\r\n\r\none") < data.index(b"\r\n\r\ntwo")


def test_echo_returns_msg_with_optional_status(pod_a: PodInfo) -> None:
    assert get(pod_a, "/echo?msg=hello%20world") == (200, "hello world")
    assert get(pod_a, "/echo?msg=gone&code=404") == (404, "gone")
    assert get(pod_a, "/echo?msg=x&code=abc")[0] == 400


def test_health_and_readiness_are_ok(pod_a: PodInfo) -> None:
    assert get(pod_a, "/healthz") == (200, "ok")
    assert get(pod_a, "/readyz") == (200, "ok")


def test_head_request_gets_headers_only(pod_a: PodInfo) -> None:
    assert get(pod_a, "/hostname", method="HEAD") == (200, "")


def test_unknown_path_answers_now_like_netexec(pod_a: PodInfo) -> None:
    status, body = get(pod_a, "/anything")
    assert status == 200
    assert body.startswith("NOW: ")


def test_serve_hostname_mode_answers_hostname_everywhere(server: PodServerThread) -> None:
    pod = server.add_pod("default/h", None, "hostnames-1", [0], [0], mode=SERVE_HOSTNAME)
    assert get(pod, "/") == (200, "hostnames-1")
    assert udp(pod.udp_ports[0], b"anything") == b"hostnames-1"


def test_header_returns_one_value_or_all_as_json(pod_a: PodInfo) -> None:
    conn = http.client.HTTPConnection(LOCAL, pod_a.http_ports[0], timeout=5)
    conn.request("GET", "/header?key=x-trace-id", headers={"X-Trace-Id": "abc"})
    assert conn.getresponse().read() == b"abc"
    conn.request("GET", "/header", headers={"x-trace-id": "abc"})
    headers = json.loads(conn.getresponse().read())
    assert headers["X-Trace-Id"] == ["abc"]
    assert "Host" not in headers


def test_malformed_request_gets_400(pod_a: PodInfo) -> None:
    with socket.create_connection((LOCAL, pod_a.http_ports[0]), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_udp_answers_hostname_echo_and_clientip(pod_a: PodInfo) -> None:
    port = pod_a.udp_ports[0]
    assert udp(port, b"hostname") == b"pod-a"
    assert udp(port, b"echo hello\n") == b"hello"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((LOCAL, port))
        sock.send(b"clientip")
        assert sock.recv(2048).decode() == "{}:{}".format(*sock.getsockname())


def test_udp_ignores_unknown_commands(pod_a: PodInfo) -> None:
    with pytest.raises(TimeoutError):
        udp(pod_a.udp_ports[0], b"what", timeout=0.3)


def test_dial_http_reaches_another_pod_each_try(pod_a: PodInfo, pod_b: PodInfo) -> None:
    status, body = get(pod_a, f"/dial?request=hostname&protocol=http&host={LOCAL}"
                              f"&port={pod_b.http_ports[0]}&tries=3")
    assert status == 200
    assert json.loads(body) == {"responses": ["pod-b", "pod-b", "pod-b"]}


def test_dial_http_request_may_carry_a_query(pod_a: PodInfo, pod_b: PodInfo) -> None:
    _, body = get(pod_a, f"/dial?request=echo%3Fmsg%3Dhi&host={LOCAL}&port={pod_b.http_ports[0]}")
    assert json.loads(body) == {"responses": ["hi"]}


def test_dial_udp_reaches_another_pod(pod_a: PodInfo, pod_b: PodInfo) -> None:
    _, body = get(pod_a, f"/dial?request=hostname&protocol=udp&host={LOCAL}"
                         f"&port={pod_b.udp_ports[0]}&tries=2")
    assert json.loads(body) == {"responses": ["pod-b", "pod-b"]}


def test_dial_to_closed_port_reports_refusal_in_errors(pod_a: PodInfo,
                                                       server: PodServerThread) -> None:
    closed = server.add_pod("default/gone", None, "gone", [0], [0])
    server.remove_pod("default/gone")
    _, body = get(pod_a, f"/dial?request=hostname&protocol=http&host={LOCAL}"
                         f"&port={closed.http_ports[0]}")
    [error] = json.loads(body)["errors"]
    assert "connection refused" in error
    _, body = get(pod_a, f"/dial?request=hostname&protocol=udp&host={LOCAL}"
                         f"&port={closed.udp_ports[0]}")
    [error] = json.loads(body)["errors"]
    assert error.startswith("reading from udp connection failed")
    assert "connection refused" in error


def test_dial_times_out_on_a_silent_server(pod_a: PodInfo) -> None:
    with socket.socket() as silent:
        silent.bind((LOCAL, 0))
        silent.listen(1)
        _, body = get(pod_a, f"/dial?request=hostname&host={LOCAL}"
                             f"&port={silent.getsockname()[1]}")
    [error] = json.loads(body)["errors"]
    assert "Client.Timeout exceeded" in error


@pytest.mark.parametrize("query", [
    "request=hostname&host=127.0.0.1&port=80&protocol=sctp",
    "request=hostname&host=127.0.0.1&port=80&tries=many",
    "host=127.0.0.1&port=80",
    "request=hostname&host=127.0.0.1&port=http",
])
def test_dial_with_bad_parameters_is_a_400(pod_a: PodInfo, query: str) -> None:
    assert get(pod_a, f"/dial?{query}")[0] == 400


def test_dial_to_a_name_reports_that_only_ips_are_dialled(pod_a: PodInfo) -> None:
    _, body = get(pod_a, "/dial?request=hostname&host=hostnames.default&port=80")
    [error] = json.loads(body)["errors"]
    assert "lookup hostnames.default" in error


def test_remove_pod_closes_listeners_and_open_connections(server: PodServerThread,
                                                          pod_a: PodInfo) -> None:
    conn = http.client.HTTPConnection(LOCAL, pod_a.http_ports[0], timeout=5)
    assert get(pod_a, "/hostname", conn) == (200, "pod-a")
    assert server.remove_pod("default/a") is True
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(pod_a, "/hostname", conn)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOCAL, pod_a.http_ports[0]), timeout=2).close()
    assert "default/a" not in server.pods()
    assert server.remove_pod("default/a") is False


def test_adding_the_same_pod_twice_keeps_its_sockets(server: PodServerThread,
                                                     pod_a: PodInfo) -> None:
    again = server.add_pod("default/a", None, "pod-a", pod_a.http_ports, pod_a.udp_ports)
    assert again == pod_a
    assert get(pod_a, "/hostname") == (200, "pod-a")


def test_port_already_taken_raises_and_leaves_nothing_open(server: PodServerThread,
                                                           pod_a: PodInfo) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(KernelError, match="tcp port"):
        server.add_pod("default/c", None, "pod-c", [0, pod_a.http_ports[0]], [0])
    assert "default/c" not in server.pods()
    assert len(os.listdir("/proc/self/fd")) == fds_before
