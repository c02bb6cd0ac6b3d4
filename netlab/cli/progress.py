"""What long commands show: live progress while `up` works, then a table and the time."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netlab.api import keys
from netlab.cli.render import pod_row
from netlab.lab.state import StateDir
from netlab.store import open_store
from netlab.store.objects import Objects

PHASES = {"machines": "creating machines", "nodes": "nodes joining",
          "pods": "pods becoming Ready"}


class UpProgress:
    """A progress bar per phase of `up` (quiet when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=self.console, disable=not self.console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> UpProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(PHASES.get(phase, phase), total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)


def agent_state(name: str, node: dict, alive: dict[str, bool]) -> str:
    """Whether the node's agent runs: its process here, or, on a VM node, its guest (the
    agent runs inside, where this host cannot see it) and the node it registered."""
    if f"agent-{name}" in alive:
        return "running" if alive[f"agent-{name}"] else "down"
    registered = keys.overlay_annotated(node)
    return "running (in its VM)" if alive.get(f"vm-{name}") and registered else "down"


def print_summary(state: StateDir, elapsed: float | None) -> None:
    """Nodes and pods in a table, the processes behind them, and the elapsed time."""
    console = Console()
    objects = Objects(open_store(state.store_url))
    lab = state.read_lab()
    nodes = {n["metadata"]["name"]: n for n in objects.list("Node")[0]}
    pods, _ = objects.list("Pod")
    per_node: dict[str, int] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName") or "<none>"
        per_node[node] = per_node.get(node, 0) + 1
    alive = {p.role: p.alive() for p in state.processes()}
    table = Table(title=f"lab {state.lab} ({lab.get('source') or 'lab file'})")
    for col in ("node", "role", "address", "pod CIDR", "pods", "agent"):
        table.add_column(col)
    for spec in lab["nodes"]:
        node = nodes.get(spec["name"], {})
        table.add_row(spec["name"], spec["role"], spec["address"],
                      node.get("spec", {}).get("podCIDR", "-"),
                      str(per_node.get(spec["name"], 0)), agent_state(spec["name"], node, alive))
    table.add_row("ext", "client", lab["ext"]["address"], "-", "-", "-")
    console.print(table)
    if pods:
        pod_table = Table(show_edge=False, box=None)
        for col in ("NAMESPACE", "NAME", "READY", "STATUS", "IP", "NODE"):
            pod_table.add_column(col)
        for pod in pods[:40]:
            row = pod_row(pod, wide=True)
            pod_table.add_row(pod["metadata"]["namespace"], row[0], row[1], row[2], row[5],
                              row[6])
        console.print(pod_table)
        if len(pods) > 40:
            console.print(f"... and {len(pods) - 40} more pods (knetlab get pods -A)")
    if elapsed is not None:
        console.print(f"lab {state.lab} is up: {len(nodes)} nodes, {len(pods)} pods "
                      f"in {elapsed:.1f}s")
