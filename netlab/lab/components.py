"""A lab's processes as its supervisor's forks run them: no command line in between.

Each reads what it needs from the lab's state dir (the store's URL, the cluster
config) and its node's entry in lab.json; the fork has entered the node's network
namespace already. On a machine the same components run as `knetlab
control-plane|agent|runtime` (cli/components.py), configured by options and the
store. Calling them directly keeps the CLI's imports (click, rich: a fifth of a
second of CPU) off the way from `knetlab up` to a ready lab.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netlab.daemon import configure_logging, stop_event
from netlab.lab.state import StateDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    """A component of `kind` (control-plane, agent, runtime); node components run for
    `node`, their entry in lab.json."""

    kind: str
    node: dict[str, Any] | None = None

    @property
    def role(self) -> str:
        """Its name in the state dir's records and logs: control-plane, agent-<node>, ..."""
        return self.kind if self.node is None else f"{self.kind}-{self.node['name']}"

    @property
    def netns(self) -> str | None:
        return None if self.node is None else self.node["netns"]


def run(component: Component, state: StateDir) -> None:
    """Run the component until SIGTERM."""
    configure_logging(component.role)
    stop = stop_event()
    config = state.read_config()
    if component.node is None:
        from netlab.control.manager import run as run_control_plane

        run_control_plane(state.store_url, config, stop)
    elif component.kind == "agent":
        from netlab.node import hostnet
        from netlab.node.agent import Agent

        iface, address = hostnet.choose_interface(hostnet.host_addresses(),
                                                  address=component.node["address"])
        log.info("node interface %s, address %s", iface, address)
        agent = Agent(state.node_store_url, state, config, component.node["name"], address,
                      component.node["role"], iface)
        agent.run_until(stop)
    else:
        from netlab.node.runtime import Runtime

        Runtime(state.node_store_url, config, component.node["name"]).run(stop)
