"""PodServer for synchronous callers: its loop runs in a background thread.

The node agent is synchronous; it hands pods over with plain method calls that
return when the pod's sockets are listening (or raise KernelError), while every
connection of every pod is served by the one loop thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from netlab.apps.container import NETEXEC
from netlab.apps.netexec import PodInfo, PodServer

T = TypeVar("T")


class PodServerThread:
    """A running PodServer with thread-safe, blocking `add_pod/remove_pod/pods/close`."""

    def __init__(self, *, bind_address: str = "0.0.0.0", dial_timeout: float = 5.0,
                 call_timeout: float = 30.0) -> None:
        self.server = PodServer(bind_address=bind_address, dial_timeout=dial_timeout)
        self._call_timeout = call_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netlab-apps",
                                        daemon=True)
        self._thread.start()

    def add_pod(self, key: str, netns_name: str | None, hostname: str,
                http_ports: Iterable[int], udp_ports: Iterable[int],
                *, mode: str = NETEXEC) -> PodInfo:
        return self._call(self.server.add_pod(key, netns_name, hostname, list(http_ports),
                                              list(udp_ports), mode=mode))

    def remove_pod(self, key: str) -> bool:
        return self._call(self.server.remove_pod(key))

    def pods(self) -> dict[str, PodInfo]:
        async def snapshot() -> dict[str, PodInfo]:
            return self.server.pods()
        return self._call(snapshot())

    def close(self) -> None:
        """Stop serving every pod, then stop the thread; safe to call twice."""
        if self._loop.is_closed():
            return
        self._call(self.server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> PodServerThread:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("PodServerThread called from its own loop; await PodServer")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._call_timeout)
