"""An exercise's checks: real traffic and real state inside the lab, never a flag.

A checker asks what the learner's users would notice (does the client get an answer
from the Service, does the name resolve, does a large response arrive), so any fix
that makes the cluster work passes, whichever command made it. Each check returns
its verdict with the evidence: what was sent, from where, and what came back.

    http     GET from a pod, node or ext, each request a new TCP connection
    udp      one datagram per request, optionally from a fixed source port
    resolve  getent in a pod, with the pod's own resolv.conf
    exec     a command in a namespace; passes on exit 0 (and a matching output)
    script   a script on the host; passes on exit 0
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab.api.selectors import matches, parse_selector
from netlab.exercises.model import Exercise, ExerciseError, Step
from netlab.exercises.values import LabValues
from netlab.kernel import netns


@dataclass(frozen=True)
class CheckResult:
    title: str
    ok: bool
    evidence: str


@dataclass(frozen=True)
class CheckReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def run_in_netns(namespace: str, command: str, timeout: float) -> tuple[int | None, str]:
    """(exit status or None on timeout, output) of a shell command, as `knetlab exec` runs it."""
    try:
        proc = subprocess.run(["ip", "netns", "exec", namespace, "sh", "-c", command],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return None, out
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def script_env(values: LabValues, exercise: Exercise) -> dict[str, str]:
    """What an exercise's script finds in its environment."""
    return {**os.environ, "KNETLAB_LAB": values.lab.name,
            "KNETLAB": f"{sys.executable} -m netlab",
            "KNETLAB_EXERCISE_DIR": str(exercise.folder)}


class Checker:
    """Runs check steps of one exercise against one lab."""

    def __init__(self, exercise: Exercise, values: LabValues) -> None:
        self.exercise = exercise
        self.values = values
        self.kinds: dict[str, Callable[[dict[str, Any]], tuple[bool, str]]] = {
            "http": self._http, "udp": self._udp, "resolve": self._resolve,
            "exec": self._exec, "script": self._script}

    def run(self, steps: tuple[Step, ...]) -> CheckReport:
        return CheckReport(tuple(self.one(step) for step in steps))

    def one(self, step: Step) -> CheckResult:
        try:
            args = self.values.resolve(step.args, step.where)
            ok, evidence = self.kinds[step.kind](args if isinstance(args, dict) else
                                                 {"file": args})
        except (ExerciseError, OSError) as exc:
            # The check could not look: that is a failure, with the reason as evidence.
            ok, evidence = False, f"could not check: {exc}"
        return CheckResult(step.title or self._describe(step), ok, evidence)

    @staticmethod
    def _describe(step: Step) -> str:
        args = step.args
        if step.kind in ("http", "udp"):
            return f"{step.kind} from {args['from']} to {args['to']}:{args.get('port', 80)}"
        if step.kind == "resolve":
            return f"{args['from']} resolves {args['name']}"
        return step.describe()

    # -- traffic -------------------------------------------------------------------------

    def _destinations(self, args: dict[str, Any]) -> tuple[str, list[str]]:
        """(source namespace, destination IPs): an address, or `pods:SELECTOR` (each pod)."""
        to = args["to"]
        if to.startswith("pods:"):
            wanted = parse_selector(to.removeprefix("pods:"))
            ips = [p["status"]["podIP"] for p in self.values.lab.pods("default")
                   if matches(wanted, p["metadata"].get("labels") or {})
                   and (p.get("status") or {}).get("podIP")]
            if not ips:
                raise ExerciseError(f"no pod with an IP matches {to.removeprefix('pods:')}")
            return self.values.lab.netns(args["from"]), ips
        try:
            ipaddress.ip_address(to)
        except ValueError:
            raise ExerciseError(f"`to: {to}` is not an IP address (use ${{svc.NAME.ip}}, "
                                "${pod.NAME.ip} or pods:SELECTOR)") from None
        return self.values.lab.netns(args["from"]), [to]

    def _expected(self, args: dict[str, Any]) -> Callable[[str], bool] | None:
        expect = args.get("expect") or {}
        if "body" in expect:
            return lambda body: body == expect["body"]
        if "pods" in expect:
            wanted = parse_selector(expect["pods"])
            names = {p["metadata"]["name"] for p in self.values.lab.pods("default")
                     if matches(wanted, p["metadata"].get("labels") or {})}
            return lambda body: body in names
        return None

    def _traffic(self, args: dict[str, Any], describe: Callable[[str], str],
                 ask: Callable[[str, str], str],
                 good: Callable[[str], bool]) -> tuple[bool, str]:
        """Ask each destination `count` times; all must be answered (or fail) as expected."""
        source, ips = self._destinations(args)
        failing = (args.get("expect") or {}).get("error")
        results = [_repeat(describe(ip), args.get("count", 1), lambda ip=ip: ask(source, ip),
                           good, args.get("timeout", 2), failing) for ip in ips]
        return all(ok for ok, _ in results), "; ".join(text for _, text in results)

    def _http(self, args: dict[str, Any]) -> tuple[bool, str]:
        port, timeout = args.get("port", 80), args.get("timeout", 2)
        path = args.get("path", "/hostname")
        if "echo" in args:
            path = "/echo?msg=" + "x" * args["echo"]
        shown = path if "echo" not in args else f"/echo?msg=<{args['echo']} bytes>"
        wanted = self._expected(args)

        def good(body: str) -> bool:
            if "echo" in args:
                return body == "x" * args["echo"]
            return wanted is None or wanted(body)

        return self._traffic(
            args, lambda ip: f"GET http://{ip}:{port}{shown} from {args['from']}",
            lambda source, ip: http_get(source, ip, port, path, timeout), good)

    def _udp(self, args: dict[str, Any]) -> tuple[bool, str]:
        port, timeout = args["port"], args.get("timeout", 2)
        message, source_port = args.get("message", "hostname"), args.get("source_port")
        wanted = self._expected(args)
        src = f" (source port {source_port})" if source_port else ""
        return self._traffic(
            args, lambda ip: f"UDP {message!r} to {ip}:{port} from {args['from']}{src}",
            lambda source, ip: udp_ask(source, ip, port, message, timeout, source_port),
            lambda body: wanted is None or wanted(body))

    # -- state ---------------------------------------------------------------------------

    def _resolve(self, args: dict[str, Any]) -> tuple[bool, str]:
        namespace = self.values.lab.netns(args["from"])
        timeout = args.get("timeout", 10)
        status, out = run_in_netns(namespace, f"getent ahostsv4 {args['name']}", timeout)
        what = f"getent ahostsv4 {args['name']} in {args['from']}"
        if status is None:
            return False, f"{what}: no answer within {timeout:g}s"
        if status != 0 or not out:
            return False, f"{what}: does not resolve (exit {status})"
        address = out.split()[0]
        if "expect" in args and address != args["expect"]:
            return False, f"{what}: {address}, expected {args['expect']}"
        return True, f"{what}: {address}"

    def _exec(self, args: dict[str, Any]) -> tuple[bool, str]:
        targets = places(self.values, args["on"])
        timeout = args.get("timeout", 10)
        for target in targets:
            status, out = run_in_netns(self.values.lab.netns(target), args["run"], timeout)
            shown = f"`{args['run']}` on {target}"
            if status is None:
                return False, f"{shown}: no result within {timeout:g}s"
            if status != 0:
                return False, f"{shown}: exit {status}: {_tail(out)}"
            if "expect_output" in args and not re.search(args["expect_output"], out):
                return False, f"{shown}: output does not match {args['expect_output']!r}: " \
                              f"{_tail(out)}"
        return True, f"`{args['run']}` on {', '.join(targets)}: ok"

    def _script(self, args: dict[str, Any]) -> tuple[bool, str]:
        path = self.exercise.path(args["file"])
        try:
            proc = subprocess.run(["sh", str(path)], capture_output=True, text=True,
                                  cwd=self.exercise.folder, timeout=120,
                                  env=script_env(self.values, self.exercise))
        except subprocess.TimeoutExpired:
            return False, f"{path.name}: no result within 120s"
        out = (proc.stdout + proc.stderr).strip()
        return proc.returncode == 0, f"{path.name}: exit {proc.returncode}: {_tail(out)}"


def places(values: LabValues, on: str | list[str]) -> list[str]:
    """Targets of an `on:`; `nodes` stands for every node of the lab."""
    names = on if isinstance(on, list) else [on]
    out: list[str] = []
    for name in names:
        out += [n["name"] for n in values.lab.info["nodes"]] if name == "nodes" else [name]
    return out


def _tail(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def _repeat(what: str, count: int, ask: Callable[[], str], good: Callable[[str], bool],
            timeout: float, failing: str | None = None) -> tuple[bool, str]:
    """Send `count` requests; all must be answered as wanted, or, with `failing`
    (refused, timeout), all must fail that way. Evidence: what came back."""
    answers: dict[str, int] = {}
    for i in range(count):
        error = None
        try:
            body = ask()
        except TimeoutError:
            error = "timeout"
        except ConnectionRefusedError:
            error = "refused"
        except OSError as exc:
            error = str(exc.strerror or exc)
        said = {"timeout": f"no answer within {timeout:g}s",
                "refused": "connection refused"}.get(error or "", error)
        nth = f"request {i + 1} of {count}"
        if failing is not None:
            if error != failing:
                got = said if error else f"answered {_tail(body, 60)!r}"
                return False, f"{what}: {got}, expected it to be {failing} ({nth})"
            continue
        if error is not None:
            return False, f"{what}: {said} ({nth})"
        if not good(body):
            return False, f"{what}: unexpected answer {_tail(body, 80)!r} ({nth})"
        key = _tail(body, 40)
        answers[key] = answers.get(key, 0) + 1
    if failing is not None:
        return True, f"{what}: {failing}, as the symptom says ({count} of {count})"
    seen = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(answers.items()))
    return True, f"{what}: answered ({seen})"


def http_get(namespace: str, ip: str, port: int, path: str, timeout: float) -> str:
    """The body of one HTTP/1.0 GET from a socket made inside `namespace`; OSError on failure."""
    with netns.socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.") or b" 200" not in status:
        raise OSError(f"HTTP answer {status.decode(errors='replace')[:60]!r}")
    return body.decode(errors="replace").strip()


def udp_ask(namespace: str, ip: str, port: int, message: str, timeout: float,
            source_port: int | None = None) -> str:
    """The answer to one datagram sent from inside `namespace`; TimeoutError if none comes."""
    with netns.socket_in(namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if source_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", source_port))
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.send(message.encode())
        return sock.recv(65536).decode(errors="replace").strip()
