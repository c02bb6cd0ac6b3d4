"""The lab's own processes, as hidden subcommands the supervisor starts.

`knetlab supervise|control-plane|agent|runtime --state-dir DIR ...`. Each one enters
its node's namespace first (before any thread exists, so every thread inherits it)
and logs to stderr, which the supervisor sends to the state dir.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from netlab.kernel import netns
from netlab.lab.state import StateDir


def _logging(role: str) -> None:
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")


def _state(path: str) -> StateDir:
    return StateDir(os.path.basename(path.rstrip("/")), os.path.dirname(path.rstrip("/")))


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _enter_for_life(name: str) -> None:
    """Move this (still single-threaded) process into the node's namespace for good."""
    if threading.active_count() != 1:
        raise RuntimeError("enter the node namespace before any thread starts")
    netns.enter(name)


state_dir = click.option("--state-dir", required=True, help="the lab's state dir")


@click.command("supervise", hidden=True)
@state_dir
def supervise(state_dir: str) -> None:
    from netlab.lab.supervisor import Supervisor

    _logging("supervisor")
    Supervisor(_state(state_dir)).run()


@click.command("control-plane", hidden=True)
@state_dir
def control_plane(state_dir: str) -> None:
    from netlab.control.manager import run

    _logging("control-plane")
    state = _state(state_dir)
    run(state.store_url, state.read_config(), _stop_event())


@click.command("agent", hidden=True)
@state_dir
@click.option("--node", required=True)
@click.option("--netns", "netns_name", required=True)
@click.option("--address", required=True)
@click.option("--role", default="worker")
@click.option("--iface", default="eth0")
def agent(state_dir: str, node: str, netns_name: str, address: str, role: str,
          iface: str) -> None:
    _enter_for_life(netns_name)
    from netlab.node.agent import Agent

    _logging(f"agent-{node}")
    state = _state(state_dir)
    the_agent = Agent(state.node_store_url, state, state.read_config(), node, address, role, iface)
    stop = _stop_event()
    threading.Thread(target=lambda: (stop.wait(), the_agent.stop.set()), daemon=True).start()
    the_agent.run()


@click.command("runtime", hidden=True)
@state_dir
@click.option("--node", required=True)
@click.option("--netns", "netns_name", required=True)
def runtime(state_dir: str, node: str, netns_name: str) -> None:
    _enter_for_life(netns_name)
    from netlab.node.runtime import Runtime

    _logging(f"runtime-{node}")
    state = _state(state_dir)
    Runtime(state.node_store_url, state.read_config(), node).run(_stop_event())


COMMANDS = [supervise, control_plane, agent, runtime]
