"""What a pod's containers would listen on, read from the Pod spec alone.

Our pods run no container images; one server per node answers for every pod. To
answer where the real image would, the spec is read the way the image would read
its own command line: agnhost's `netexec` and `serve-hostname` subcommands listen
where their flags say (not where `containerPorts` claim, so a wrong targetPort
fails here as it fails in a cluster), and any other image is taken at its word:
HTTP on each declared TCP port, the UDP server on each declared UDP port. SCTP
ports are accepted and not served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netlab.errors import ManifestError

NETEXEC = "netexec"
SERVE_HOSTNAME = "serve-hostname"

NETEXEC_HTTP_PORT = 8080
NETEXEC_UDP_PORT = 8081
SERVE_HOSTNAME_PORT = 9376

# Flags of netexec and serve-hostname that take no value (Go's boolean flags);
# every other flag takes one, as `--name=value` or `--name value`.
_BOOL_FLAGS = frozenset({"http", "udp", "tcp"})


@dataclass(frozen=True)
class ServePlan:
    """Ports to serve for a container (or a whole pod) and how `/` answers.

    `mode` is NETEXEC (unknown paths answer "NOW: <time>", as agnhost netexec does)
    or SERVE_HOSTNAME (unknown paths and unknown UDP datagrams answer the hostname,
    as serve_hostname does; also used for images we do not know, so that curling a
    Service shows which pod answered).
    """

    http_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    mode: str = SERVE_HOSTNAME

    @property
    def empty(self) -> bool:
        return not self.http_ports and not self.udp_ports


def plan_for_container(container: Mapping[str, Any], *, field: str = "container") -> ServePlan:
    """The ports one container (a Pod spec's container dict) would listen on.

    `field` names the container in errors, e.g. "spec.containers[0]".
    """
    argv = [str(a) for a in (container.get("command") or [])]
    argv += [str(a) for a in (container.get("args") or [])]
    image = str(container.get("image") or "")
    subcommand = _agnhost_subcommand(image, argv)
    if subcommand == NETEXEC:
        return _netexec_plan(argv, field)
    if subcommand == SERVE_HOSTNAME:
        return _serve_hostname_plan(argv, field)
    return _declared_ports_plan(container.get("ports") or [], field)


def plan_for_pod(containers: Sequence[Mapping[str, Any]]) -> ServePlan:
    """All containers of a pod merged: they share the pod's network namespace.

    The pod answers in NETEXEC mode if any container runs netexec (the e2e test
    pods), otherwise like serve_hostname.
    """
    plans = [plan_for_container(c, field=f"spec.containers[{i}]")
             for i, c in enumerate(containers)]
    return merge_plans(plans)


def merge_plans(plans: Iterable[ServePlan]) -> ServePlan:
    plans = list(plans)
    mode = NETEXEC if any(p.mode == NETEXEC for p in plans) else SERVE_HOSTNAME
    return ServePlan(
        http_ports=tuple(sorted({port for p in plans for port in p.http_ports})),
        udp_ports=tuple(sorted({port for p in plans for port in p.udp_ports})),
        mode=mode,
    )


def _agnhost_subcommand(image: str, argv: list[str]) -> str | None:
    """NETEXEC or SERVE_HOSTNAME when the container runs one of them, else None.

    Recognised: the agnhost image with the subcommand as first argument, a command
    line naming the subcommand (`/agnhost netexec`, `/netexec`), and the older
    single-purpose images (`.../netexec:1.1`, `.../serve_hostname:1.1`).
    """
    names = [a.rsplit("/", 1)[-1] for a in argv if not a.startswith("-")]
    for name in names[:2]:
        if name == NETEXEC:
            return NETEXEC
        if name in (SERVE_HOSTNAME, "serve_hostname"):
            return SERVE_HOSTNAME
    repo = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    if repo == NETEXEC:
        return NETEXEC
    if repo in ("serve_hostname", SERVE_HOSTNAME):
        return SERVE_HOSTNAME
    return None


def _flags(argv: list[str], field: str) -> dict[str, str]:
    """Go `flag` package syntax: -name, --name, -name=value, --name value."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq:
            if name in _BOOL_FLAGS:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise ManifestError(f"flag needs an argument: {arg}", field=field)
        flags[name] = value
    return flags


def _port(flags: dict[str, str], name: str, default: int, field: str,
          *, may_disable: bool = False) -> int | None:
    raw = flags.get(name)
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ManifestError(f"--{name}={raw} is not a port number", field=field) from None
    if may_disable and port == -1:
        return None
    if not 1 <= port <= 65535:
        raise ManifestError(f"--{name}={raw} is outside 1-65535", field=field)
    return port


def _bool(flags: dict[str, str], name: str, default: bool, field: str) -> bool:
    raw = flags.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "t", "true"):
        return True
    if raw.lower() in ("0", "f", "false"):
        return False
    raise ManifestError(f"--{name}={raw} is not a boolean", field=field)


def _netexec_plan(argv: list[str], field: str) -> ServePlan:
    where = f"{field}.args"
    flags = _flags(argv, where)
    http = _port(flags, "http-port", NETEXEC_HTTP_PORT, where)
    udp = _port(flags, "udp-port", NETEXEC_UDP_PORT, where, may_disable=True)
    return ServePlan(http_ports=(http,) if http else (),
                     udp_ports=(udp,) if udp else (), mode=NETEXEC)


def _serve_hostname_plan(argv: list[str], field: str) -> ServePlan:
    """serve-hostname: one --port (9376) for --http (on by default) and --udp.

    Its raw `--tcp` mode (hostname written on connect, no HTTP) is not emulated.
    """
    where = f"{field}.args"
    flags = _flags(argv, where)
    port = _port(flags, "port", SERVE_HOSTNAME_PORT, where)
    http = _bool(flags, "http", True, where)
    udp = _bool(flags, "udp", False, where)
    return ServePlan(http_ports=(port,) if http and port else (),
                     udp_ports=(port,) if udp and port else (), mode=SERVE_HOSTNAME)


def _declared_ports_plan(ports: Sequence[Mapping[str, Any]], field: str) -> ServePlan:
    http: set[int] = set()
    udp: set[int] = set()
    for i, entry in enumerate(ports):
        where = f"{field}.ports[{i}]"
        raw = entry.get("containerPort")
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
            raise ManifestError(f"containerPort {raw!r} is not a port number (1-65535)",
                                field=f"{where}.containerPort")
        protocol = str(entry.get("protocol") or "TCP").upper()
        if protocol == "TCP":
            http.add(raw)
        elif protocol == "UDP":
            udp.add(raw)
        elif protocol != "SCTP":
            raise ManifestError(f"protocol {protocol} is not TCP, UDP or SCTP",
                                field=f"{where}.protocol")
    return ServePlan(http_ports=tuple(sorted(http)), udp_ports=tuple(sorted(udp)))
