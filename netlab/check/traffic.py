"""Real traffic from inside a lab namespace: one connection or datagram per call.

The thin kernel side of the traffic steps. Each call opens a fresh socket in
the source namespace (netlab.kernel.netns.socket_in, no fork), so every
connection is new to conntrack and the proxy's rules decide it, as each `wget`
of the Debug Services page does. Failures are answers, not exceptions: the
step wants to show "refused" or "timed out" as evidence.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from netlab.kernel import netns

DNS_PORT = 53


@dataclass(frozen=True)
class Answer:
    ok: bool
    text: str  # the hostname that answered, "connected", or what went wrong
    hostname: str = ""  # netexec's /hostname (or UDP hostname) answer, when there is one


def failure(exc: OSError) -> Answer:
    if isinstance(exc, ConnectionRefusedError):
        return Answer(False, "refused")
    if isinstance(exc, TimeoutError):
        return Answer(False, "timed out")
    return Answer(False, exc.strerror or str(exc))


def ask(source_netns: str, ip: str, port: int, speech: str, timeout: float,
        dns_name: str = "kubernetes.default.svc.cluster.local.") -> Answer:
    """One exchange with ip:port from the namespace; `speech` as facts.speaks decides.

    A DNS server is asked for `dns_name`; any answer shows it serves.
    """
    try:
        if speech == "http":
            return _http_hostname(source_netns, ip, port, timeout)
        if speech == "tcp":
            with netns.socket_in(source_netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect((ip, port))
            return Answer(True, "connected")
        if speech == "dns":
            rcode, _ = dns_query(source_netns, ip, dns_name, timeout, port)
            return Answer(True, f"DNS answer {rcode}")
        return _udp_hostname(source_netns, ip, port, timeout)
    except OSError as exc:
        return failure(exc)


def _http_hostname(source_netns: str, ip: str, port: int, timeout: float) -> Answer:
    status, body = http_get(source_netns, ip, port, "/hostname", timeout)
    if status != 200:
        return Answer(False, f"HTTP {status}" if status else "connected, no HTTP answer")
    return Answer(True, body.strip(), body.strip())


def _udp_hostname(source_netns: str, ip: str, port: int, timeout: float) -> Answer:
    with netns.socket_in(source_netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.send(b"hostname")
        name = sock.recv(2048).decode(errors="replace").strip()
    return Answer(True, name, name)


def http_get(source_netns: str, ip: str, port: int, path: str,
             timeout: float) -> tuple[int, str]:
    """(status, body) of an HTTP/1.0 GET; status 0 when the answer is not HTTP.

    Raises OSError when the connection fails.
    """
    with netns.socket_in(source_netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except TimeoutError:
            if not chunks:
                return 0, ""
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) < 2 or not first[0].startswith(b"HTTP/") or not first[1].isdigit():
        return 0, ""
    return int(first[1]), body.decode(errors="replace")


def dns_query(source_netns: str, server: str, name: str, timeout: float,
              port: int = DNS_PORT) -> tuple[str, list[str]]:
    """(rcode text, A addresses) for `name` asked of server over UDP; OSError on no answer."""
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype

    query = dns.message.make_query(name, dns.rdatatype.A)
    with netns.socket_in(source_netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        sock.send(query.to_wire())
        while True:
            try:
                reply = dns.message.from_wire(sock.recv(4096))
            except dns.exception.DNSException as exc:
                raise OSError(f"malformed DNS answer from {server}: {exc}") from exc
            if reply.id == query.id:
                break
    addresses = [r.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
                 for r in rrset]
    return dns.rcode.to_text(reply.rcode()), addresses
