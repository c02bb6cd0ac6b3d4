"""Waiting out a store that does not answer yet: etcd starting, restarting, or unreachable.

Components on separate machines start in any order, and a restarted etcd takes a
moment; a call that needs the store is retried with a capped back-off instead of
ending the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from netlab.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_store(call: Callable[[], T], what: str, stop: threading.Event,
                max_backoff: float = 5.0) -> T | None:
    """call() until the store answers (None if stop is set first), logging the wait.

    Components on other machines start in any order: etcd may not be up yet, or be
    restarting.
    """
    backoff = 0.2
    while not stop.is_set():
        try:
            return call()
        except StoreError as exc:
            log.warning("%s: store unavailable (%s); retrying in %.1fs", what, exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
    return None
