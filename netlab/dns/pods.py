"""DNS servers for the CoreDNS pods of one node, on one event loop thread.

Each DNS pod gets its own DnsServer (sockets opened inside the pod's namespace:
53/UDP+TCP, 9153 metrics, 8080 /health, 8181 /ready) with its own index, fed from
the runtime's watch. A server added later is first given every object the runtime
has seen, then marked synced, so it never answers from a half-read state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Iterable
from typing import Any

from netlab.dns.records import RecordIndex, RecordOptions
from netlab.dns.resolver import ResolverConfig
from netlab.dns.server import DnsServer, open_listeners
from netlab.kernel import netns

DNS_KINDS = ("Service", "EndpointSlice", "Pod", "Namespace")
CALL_TIMEOUT = 30.0


class DnsPods:
    def __init__(self, zone: str, ttl: int, upstreams: tuple[str, ...] = ()) -> None:
        self.zone = zone
        self.ttl = ttl
        self.upstreams = upstreams
        self.servers: dict[str, DnsServer] = {}
        # servers in their lameduck, until they stop: they still get record changes
        self._lameducks: dict[concurrent.futures.Future[None], DnsServer] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dns",
                                        daemon=True)
        self._thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    def add(self, key: str, netns_name: str, pod_ip: str,
            objects: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Serve DNS in the pod, primed with (kind, object) pairs already known."""
        if key in self.servers:
            return
        server = DnsServer(RecordIndex(RecordOptions(pods="insecure")),
                           ResolverConfig(zone=self.zone, ttl=self.ttl, local_ips=(pod_ip,)),
                           upstreams=self.upstreams)
        listeners = open_listeners("0.0.0.0", 53,
                                   socket_factory=functools.partial(netns.socket_in, netns_name))
        for kind, obj in objects:
            server.apply(kind, "ADDED", obj)
        server.mark_synced()
        self._call(server.start(listeners))
        self.servers[key] = server

    def remove(self, key: str, lameduck: float = 0.0) -> None:
        """Stop serving the pod; with `lameduck`, it keeps answering (not ready) that long.

        A lameduck runs on the server's loop without holding the caller, which is the
        runtime's informer thread.
        """
        server = self.servers.pop(key, None)
        if server is None:
            return
        if lameduck > 0:
            stopping = asyncio.run_coroutine_threadsafe(server.stop(lameduck), self._loop)
            self._lameducks[stopping] = server
            stopping.add_done_callback(lambda done: self._lameducks.pop(done, None))
        else:
            self._call(server.stop())

    @property
    def serving(self) -> bool:
        """Whether any server (lameducks included) wants record changes."""
        return bool(self.servers or self._lameducks)

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        for server in [*self.servers.values(), *self._lameducks.values()]:
            server.apply_threadsafe(kind, event_type, obj)

    def close(self) -> None:
        for key in list(self.servers):
            self.remove(key)
        for stopping in list(self._lameducks):  # the process is going: no lameduck left
            stopping.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
