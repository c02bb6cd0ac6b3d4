#!/usr/bin/env python3
"""Compare Python etcd clients for the store: watch latency and behaviour in an outage.

    python scripts/bench_etcd_client.py [--puts 200] [--clients gateway,etcd3gw,pyetcd]

Starts a throw-away etcd on 127.0.0.1 (free ports, temp dir; needs the etcd binary
from etcd-server) and, for each client that imports:

- latency: one watch on a prefix, then N puts one after another; put -> event seen
  by the watch consumer (median, p99), and the put's own round trip;
- outage: with the watch running, SIGKILL etcd; what the running watch does within
  3 s, what a get does while etcd is down (error type, time to fail); restart etcd
  on the same data; whether the same client object works again, whether the old
  watch delivers a put made after the restart, and whether a new watch from a
  revision replays it.

Candidates: `gateway` is netlab's own store (netlab/store/etcd.py: h11 over sockets
to etcd's JSON gateway); `etcd3gw` is OpenStack's gateway client (requests);
`pyetcd` is etcd-sdk-python, the maintained fork of python-etcd3 (gRPC); `etcd3` is
python-etcd3 0.12 itself, which imports only with
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python on protobuf >= 4. The third-party
clients are not dependencies of kube-netlab: install them in a scratch venv
(`pip install etcd3gw etcd-sdk-python`) to compare. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab.store.etcd_server import LocalEtcd, etcd_binary  # noqa: E402

OnEvent = Callable[[str], None]
OnError = Callable[[BaseException | None], None]


class Candidate:
    """One client behind the few calls the benchmark makes."""

    name = ""

    def __init__(self, member: LocalEtcd) -> None:
        self.member = member

    def put(self, key: str, value: str) -> int: ...  # returns the revision if known, else 0

    def get(self, key: str) -> Any: ...

    def watch(self, prefix: str, start_revision: int | None, on_event: OnEvent,
              on_error: OnError) -> Callable[[], None]: ...  # returns cancel

    def close(self) -> None: ...


class Gateway(Candidate):
    name = "gateway"

    def __init__(self, member: LocalEtcd) -> None:
        super().__init__(member)
        from netlab.store import open_store

        self.store = open_store(member.url)

    def put(self, key: str, value: str) -> int:
        return self.store.put(key, {"v": value})

    def get(self, key: str) -> Any:
        return self.store.get(key)

    def watch(self, prefix: str, start_revision: int | None, on_event: OnEvent,
              on_error: OnError) -> Callable[[], None]:
        stop = threading.Event()
        start = start_revision or self.store.revision() + 1

        def run() -> None:
            try:
                for batch in self.store.watch([prefix], start, poll_timeout=0.2):
                    if stop.is_set():
                        return
                    for ev in batch:
                        on_event(ev.key)
            except Exception as exc:  # noqa: BLE001 (reported, not handled)
                on_error(exc)

        threading.Thread(target=run, daemon=True).start()
        return stop.set

    def close(self) -> None:
        self.store.close()


class Etcd3gw(Candidate):
    name = "etcd3gw"

    def __init__(self, member: LocalEtcd) -> None:
        super().__init__(member)
        etcd3gw = importlib.import_module("etcd3gw")
        self.client = etcd3gw.client(host="127.0.0.1", port=member.client_port, timeout=5)

    def put(self, key: str, value: str) -> int:
        # client.put() returns only True; the raw call gives the revision to resume from.
        answer = self.client.post(self.client.get_url("/kv/put"), json={
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(value.encode()).decode()})
        return int(answer["header"]["revision"])

    def get(self, key: str) -> Any:
        return self.client.get(key)

    def watch(self, prefix: str, start_revision: int | None, on_event: OnEvent,
              on_error: OnError) -> Callable[[], None]:
        kwargs = {"prev_kv": True}
        if start_revision:
            kwargs["start_revision"] = start_revision
        events, cancel = self.client.watch_prefix(prefix, **kwargs)

        def run() -> None:
            try:
                for ev in events:
                    key = ev["kv"]["key"]
                    on_event(key.decode() if isinstance(key, bytes) else key)
                on_error(None)  # the iterator ended
            except Exception as exc:  # noqa: BLE001
                on_error(exc)

        threading.Thread(target=run, daemon=True).start()
        return cancel

    def close(self) -> None:
        self.client.session.close()


class Grpc(Candidate):
    """python-etcd3's API, shared by its fork etcd-sdk-python (module pyetcd)."""

    module = "pyetcd"

    def __init__(self, member: LocalEtcd) -> None:
        super().__init__(member)
        lib = importlib.import_module(self.module)
        self.client = lib.client(host="127.0.0.1", port=member.client_port, timeout=5)

    def put(self, key: str, value: str) -> int:
        return int(self.client.put(key, value).header.revision)

    def get(self, key: str) -> Any:
        return self.client.get(key)

    def watch(self, prefix: str, start_revision: int | None, on_event: OnEvent,
              on_error: OnError) -> Callable[[], None]:
        def callback(response: Any) -> None:
            if isinstance(response, BaseException) or response is None:
                on_error(response)
                return
            for ev in response.events:
                on_event(ev.key.decode())

        kwargs: dict[str, Any] = {"prev_kv": True}
        if start_revision:
            kwargs["start_revision"] = start_revision
        watch_id = self.client.add_watch_prefix_callback(prefix, callback, **kwargs)
        return lambda: self.client.cancel_watch(watch_id)

    def close(self) -> None:
        self.client.close()


class Pyetcd(Grpc):
    name = "pyetcd"
    module = "pyetcd"


class Etcd3(Grpc):
    name = "etcd3"
    module = "etcd3"


CANDIDATES: dict[str, type[Candidate]] = {c.name: c for c in (Gateway, Etcd3gw, Pyetcd, Etcd3)}


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure_latency(client: Candidate, puts: int) -> dict[str, Any]:
    seen: queue.Queue[tuple[str, float]] = queue.Queue()
    errors: list[BaseException | None] = []
    cancel = client.watch("/bench/lat/", None, lambda key: seen.put((key, time.perf_counter())),
                          errors.append)
    time.sleep(0.3)  # let the watch be created before the first put
    watch_ms, put_ms = [], []
    for i in range(puts):
        key = f"/bench/lat/{i:04d}"
        t0 = time.perf_counter()
        client.put(key, "x" * 200)
        put_ms.append((time.perf_counter() - t0) * 1e3)
        while True:
            got, when = seen.get(timeout=10)
            if got == key:
                watch_ms.append((when - t0) * 1e3)
                break
    watch_errors = len(errors)
    cancel()
    return {"watch_median_ms": statistics.median(watch_ms),
            "watch_p99_ms": _percentile(watch_ms, 99),
            "put_median_ms": statistics.median(put_ms), "watch_errors": watch_errors}


def measure_outage(client: Candidate, member: LocalEtcd) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[BaseException | None] = queue.Queue()
    before = client.put("/bench/out/before", "1")
    cancel = client.watch("/bench/out/", None, seen.put, errors.put)
    time.sleep(0.3)
    member.kill()
    killed = time.perf_counter()
    try:
        err = errors.get(timeout=3)
        out["running_watch_on_kill"] = (f"error after {time.perf_counter() - killed:.2f}s: "
                                        f"{_name(err)}")
    except queue.Empty:
        out["running_watch_on_kill"] = "nothing within 3s (silent)"
    t0 = time.perf_counter()
    try:
        client.get("/bench/out/before")
        out["get_while_down"] = "answered?!"
    except Exception as exc:  # noqa: BLE001
        out["get_while_down"] = f"{_name(exc)} after {time.perf_counter() - t0:.2f}s"
    member.start()
    t0 = time.perf_counter()
    deadline = t0 + 20
    while True:
        try:
            client.get("/bench/out/before")
            out["same_client_after_restart"] = f"works ({time.perf_counter() - t0:.2f}s)"
            break
        except Exception as exc:  # noqa: BLE001
            if time.perf_counter() > deadline:
                out["same_client_after_restart"] = f"still failing after 20s: {_name(exc)}"
                break
            time.sleep(0.1)
    try:
        client.put("/bench/out/after", "1")
    except Exception as exc:  # noqa: BLE001
        out["put_after_restart"] = type(exc).__name__
    try:
        key = seen.get(timeout=3)
        out["old_watch_after_restart"] = f"delivered {key}"
    except queue.Empty:
        out["old_watch_after_restart"] = "nothing (must be re-created)"
    _quietly(cancel)
    resumed: queue.Queue[str] = queue.Queue()
    try:
        cancel = client.watch("/bench/out/", before + 1 if before else None, resumed.put,
                              lambda e: None)
        key = resumed.get(timeout=3)
        out["new_watch_from_revision"] = f"replayed {key}" if before else \
            f"no revision from put; saw {key}"
        _quietly(cancel)
    except queue.Empty:
        out["new_watch_from_revision"] = "nothing within 3s"
    except Exception as exc:  # noqa: BLE001
        out["new_watch_from_revision"] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
    return out


def _name(exc: BaseException | None) -> str:
    return "end of iterator" if exc is None else f"{type(exc).__name__}: {str(exc)[:70]}"


def _quietly(call: Callable[[], object]) -> None:
    """Cancel a watch that may be dead already (how it fails is not measured)."""
    with contextlib.suppress(Exception):
        call()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--clients", default="gateway,etcd3gw,pyetcd")
    parser.add_argument("--json", action="store_true", help="print one JSON object per client")
    args = parser.parse_args()
    if etcd_binary() is None:
        print("etcd is not installed (apt-get install etcd-server)", file=sys.stderr)
        return 2
    for name in args.clients.split(","):
        with LocalEtcd() as member:
            try:
                client = CANDIDATES[name](member)
            except Exception as exc:  # noqa: BLE001
                print(f"{name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            result = {"client": name, **measure_latency(client, args.puts),
                      **measure_outage(client, member)}
            client.close()
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{name}: watch latency median {result['watch_median_ms']:.2f} ms, "
                  f"p99 {result['watch_p99_ms']:.2f} ms; put median "
                  f"{result['put_median_ms']:.2f} ms")
            for k, v in result.items():
                if k not in ("client", "watch_median_ms", "watch_p99_ms", "put_median_ms"):
                    print(f"    {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
