"""What a pod answers: agnhost netexec's HTTP endpoints and UDP commands.

Kept apart from sockets so the answers can be read and tested as plain data. The
behaviour follows kubernetes test/images/agnhost/netexec: e2e-style tests parse
these bodies (`/hostname`, `/clientip` as "ip:port", `/dial` JSON), so their exact
shape matters more than their elegance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from netlab.apps.container import NETEXEC

TEXT = "text/plain; charset=utf-8"

# Endpoints of real netexec that would run programs or end the process; a shared
# server cannot do either for one pod, so they answer 501 rather than pretend.
_UNSUPPORTED = frozenset({"/shell", "/shellCommand", "/exit", "/shutdown", "/upload",
                          "/redirect"})


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: tuple[str, int]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = TEXT


@dataclass(frozen=True)
class DialQuery:
    """A parsed `/dial`: the pod makes `tries` requests to host:port and reports."""

    protocol: str
    host: str
    port: int
    request: str
    tries: int


# (protocol, host, port, request) -> the peer's answer; raises DialFailed.
Dialer = Callable[[str, str, int, str], Awaitable[str]]


class DialFailed(Exception):
    """One /dial try failed; the message goes into the JSON "errors" list."""


def format_peer(peer: tuple[str, int]) -> str:
    """Go's RemoteAddr form: "ip:port", "[ip6]:port"."""
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: "x-forwarded-for" -> "X-Forwarded-For"."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def go_now() -> str:
    """time.Now() as Go's %v prints it (without the monotonic suffix)."""
    now = time.time()
    local = time.localtime(now)
    nanos = int((now % 1) * 1e9)
    return time.strftime(f"%Y-%m-%d %H:%M:%S.{nanos:09d} %z %Z", local)


def form_values(request: Request) -> dict[str, list[str]]:
    """Go's Request.Form: URL-encoded body values first, then the query string."""
    values: dict[str, list[str]] = {}
    content_type = _header(request, "content-type").split(";", 1)[0].strip().lower()
    if request.method in ("POST", "PUT", "PATCH") and \
            content_type == "application/x-www-form-urlencoded":
        values = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    for name, items in parse_qs(urlsplit(request.target).query, keep_blank_values=True).items():
        values.setdefault(name, []).extend(items)
    return values


def parse_dial(query: dict[str, list[str]]) -> DialQuery | Reply:
    """The /dial parameters, or the 400 reply netexec gives for bad ones."""
    def get(name: str) -> str:
        return query.get(name, [""])[0]

    raw_tries = get("tries")
    try:
        tries = int(raw_tries) if raw_tries else 1
    except ValueError:
        return _bad_request(f"tries parameter is invalid. {raw_tries!r} is not a number")
    request = get("request")
    if not request:
        return _bad_request("request parameter not specified.")
    protocol = (get("protocol") or "http").lower()
    if protocol not in ("http", "udp"):
        return _bad_request(f"unsupported protocol. {protocol}")
    raw_port = get("port")
    try:
        port = int(raw_port)
    except ValueError:
        return _bad_request(f"port parameter is invalid. {raw_port!r} is not a number")
    if not 0 < port < 65536:
        return _bad_request(f"port parameter is invalid. {port} is outside 1-65535")
    host = get("host").strip("[]") or "127.0.0.1"
    return DialQuery(protocol, host, port, request, max(tries, 0))


async def run_dial(dial: DialQuery, dialer: Dialer) -> Reply:
    """Make the tries one after the other, as netexec does, and report them as JSON.

    "responses" and "errors" each appear when not empty; netexec answers 200 either
    way (its help text promises 417 on failure, its code does not).
    """
    responses: list[str] = []
    errors: list[str] = []
    for _ in range(dial.tries):
        try:
            responses.append(await dialer(dial.protocol, dial.host, dial.port, dial.request))
        except DialFailed as exc:
            errors.append(str(exc))
    output: dict[str, list[str]] = {}
    if responses:
        output["responses"] = responses
    if errors:
        output["errors"] = errors
    return Reply(200, json.dumps(output, separators=(",", ":")).encode())


async def respond(request: Request, *, hostname: str, mode: str, dialer: Dialer) -> Reply:
    """The reply of a pod named `hostname` to one HTTP request."""
    path = urlsplit(request.target).path or "/"
    if path in ("/hostname", "/hostName"):
        return Reply(200, hostname.encode())
    if path == "/clientip":
        return Reply(200, format_peer(request.peer).encode())
    if path in ("/healthz", "/readyz"):
        return Reply(200, b"ok")
    if path == "/echo":
        return _echo(form_values(request))
    if path == "/header":
        return _header_reply(request, form_values(request))
    if path == "/dial":
        dial = parse_dial(form_values(request))
        return dial if isinstance(dial, Reply) else await run_dial(dial, dialer)
    if path in _UNSUPPORTED:
        return Reply(501, f"{path} is not supported by kube-netlab's netexec\n".encode())
    if mode == NETEXEC:
        return Reply(200, f"NOW: {go_now()}".encode())
    return Reply(200, hostname.encode())


def udp_reply(payload: bytes, peer: tuple[str, int], *, hostname: str,
              mode: str) -> bytes | None:
    """The datagram a pod sends back, or None for no reply (netexec's rules).

    The command is trimmed and lower-cased before matching, so `echo` answers in
    lower case, as netexec does.
    """
    text = payload.decode("utf-8", "replace").strip().lower()
    if text == "hostname":
        return hostname.encode()
    if text.startswith("echo "):
        return text[len("echo "):].encode()
    if text == "clientip":
        return format_peer(peer).encode()
    if mode != NETEXEC:
        return hostname.encode()
    return None


def _echo(form: dict[str, list[str]]) -> Reply:
    msg = form.get("msg", [""])[0]
    raw_code = form.get("code", [""])[0]
    if not raw_code:
        return Reply(200, msg.encode())
    try:
        code = int(raw_code)
    except ValueError:
        return _bad_request(f"code parameter is invalid. {raw_code!r} is not a number")
    if not 200 <= code <= 599:
        return _bad_request(f"code parameter is invalid. {code} is outside 200-599")
    return Reply(code, msg.encode())


def _header_reply(request: Request, form: dict[str, list[str]]) -> Reply:
    """One header's value for ?key=, else all headers as Go's JSON map (no Host)."""
    key = form.get("key", [""])[0]
    if key:
        return Reply(200, _header(request, key).encode())
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name.lower() != "host":
            headers.setdefault(canonical_header(name), []).append(value)
    return Reply(200, json.dumps(dict(sorted(headers.items())),
                                 separators=(",", ":")).encode())


def _header(request: Request, name: str) -> str:
    wanted = name.lower()
    return next((value for key, value in request.headers if key.lower() == wanted), "")


def _bad_request(message: str) -> Reply:
    return Reply(400, f"{message}\n".encode())
