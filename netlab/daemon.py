"""What every long-running process of a cluster sets up first, whoever starts it
(systemd on a machine, a lab's supervisor): log lines that name its role, and a stop
event that SIGTERM and SIGINT set, so that it stops cleanly."""

from __future__ import annotations

import logging
import signal
import threading


def configure_logging(role: str) -> None:
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")


def stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
