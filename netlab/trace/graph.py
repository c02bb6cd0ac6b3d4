"""The lab as a picture: machines, bridges, pods, the overlay, Services and their endpoints.

`to_text` needs nothing; `to_dot` writes Graphviz, which `render_image` turns
into SVG or PNG with the `dot` program (apt package graphviz). With a trace,
the places its hops crossed are drawn in red and numbered in hop order, so the
path of a packet can be read off the lab's map.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

from netlab.errors import NetlabError
from netlab.node.cni import BRIDGE
from netlab.trace.labview import LabView, Machine
from netlab.trace.model import Action, Hop, Trace

PATH_COLOUR = "red"


def _svc_key(svc: dict) -> str:  # type: ignore[type-arg]
    return f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"


def _endpoints(view: LabView, svc: dict) -> list[str]:  # type: ignore[type-arg]
    ns, name = _svc_key(svc).split("/", 1)
    return [ip for eps in view.slices_of(ns, name) for ep in eps.get("endpoints") or []
            for ip in ep.get("addresses") or []]


def _svc_ports(svc: dict) -> str:  # type: ignore[type-arg]
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}" + (f":{p['nodePort']}" if p.get("nodePort") else "")
                    + f"/{p.get('protocol', 'TCP')}" for p in ports)


def _hop_nodes(view: LabView, hop: Hop) -> Iterator[str]:
    """The graph nodes (ids) a hop touched."""
    if hop.pod:
        yield _id("pod", hop.pod)
    elif hop.node == "underlay":
        yield "underlay"
    elif hop.node == "ext":
        yield _id("m", "ext")
    elif hop.stage.startswith("bridge"):
        yield _id("dev", hop.node, BRIDGE)
    elif hop.stage.startswith("vxlan"):
        yield _id("dev", hop.node, view.vxlan_device)
    elif hop.stage in ("ingress", "egress"):
        yield _id("dev", hop.node, hop.interface or "eth0")
    else:
        yield _id("m", hop.node)
    if hop.action == Action.TRANSLATED and hop.k8s_ref and hop.k8s_ref.service:
        yield _id("svc", hop.k8s_ref.service)


def path_of(view: LabView, trace: Trace) -> list[str]:
    """Graph node ids along the trace, without immediate repeats."""
    out: list[str] = []
    for hop in trace.hops:
        for node in _hop_nodes(view, hop):
            if not out or out[-1] != node:
                out.append(node)
    return out


def _id(*parts: str) -> str:
    return "_".join(parts).replace("-", "_").replace("/", "__").replace(".", "_")


def _machine_lines(view: LabView, m: Machine) -> list[str]:
    lines = [f'  subgraph "cluster_{_id("m", m.name)}" {{',
             f'    label="{m.name}\\n{m.address}"; style=rounded;',
             f'    "{_id("m", m.name)}" [label="{m.name} (root ns)", shape=box3d];',
             f'    "{_id("dev", m.name, "eth0")}" [label="eth0\\n{m.address}", shape=cds];']
    if m.is_node:
        lines.append(f'    "{_id("dev", m.name, BRIDGE)}" [label="{BRIDGE}\\n'
                     f'{m.bridge_address}/24", shape=box];')
        if view.config.backend == "vxlan":
            lines.append(f'    "{_id("dev", m.name, view.vxlan_device)}" [label="'
                         f'{view.vxlan_device}\\n{m.vtep_address}", shape=box];')
        for pod in sorted(view.pods.values(), key=lambda p: p.key):
            if pod.node == m.name:
                lines.append(f'    "{_id("pod", pod.key)}" [label="{pod.key}\\n{pod.ip}", '
                             'shape=ellipse];')
                lines.append(f'    "{_id("pod", pod.key)}" -> "{_id("dev", m.name, BRIDGE)}" '
                             f'[label="{pod.host_veth}", arrowhead=none];')
        lines.append(f'    "{_id("dev", m.name, BRIDGE)}" -> "{_id("m", m.name)}" '
                     '[arrowhead=none];')
        if view.config.backend == "vxlan":
            lines.append(f'    "{_id("dev", m.name, view.vxlan_device)}" -> '
                         f'"{_id("m", m.name)}" [arrowhead=none];')
    lines.append(f'    "{_id("m", m.name)}" -> "{_id("dev", m.name, "eth0")}" '
                 '[arrowhead=none];')
    lines.append("  }")
    lines.append(f'  "{_id("dev", m.name, "eth0")}" -> "underlay" [label="{m.underlay_port}", '
                 'arrowhead=none];')
    return lines


def to_dot(view: LabView, trace: Trace | None = None) -> str:
    lines = [f'digraph "{view.name}" {{', "  rankdir=TB; compound=true; fontname=Helvetica;",
             '  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];',
             f'  "underlay" [label="br-underlay\\n{view.underlay_cidr}", shape=box, '
             'style=filled, fillcolor=lightgrey];']
    for machine in view.machines.values():
        lines += _machine_lines(view, machine)
    if view.config.backend == "vxlan":
        nodes = view.nodes
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                lines.append(f'  "{_id("dev", a.name, view.vxlan_device)}" -> '
                             f'"{_id("dev", b.name, view.vxlan_device)}" [style=dashed, '
                             f'dir=both, color=steelblue, label="VXLAN vni '
                             f'{view.config.vxlan_vni}"];')
    for svc in view.services:
        key = _svc_key(svc)
        ip = (svc.get("spec") or {}).get("clusterIP")
        lines.append(f'  "{_id("svc", key)}" [label="svc {key}\\n{ip} {_svc_ports(svc)}", '
                     'shape=hexagon, style=filled, fillcolor=lightyellow];')
        for ep in _endpoints(view, svc):
            pod = view.pod_by_ip(ep)
            if pod is not None:
                lines.append(f'  "{_id("svc", key)}" -> "{_id("pod", pod.key)}" '
                             '[style=dotted, color=darkgoldenrod];')
    if trace is not None:
        path = path_of(view, trace)
        for i, (a, b) in enumerate(zip(path, path[1:], strict=False), start=1):
            lines.append(f'  "{a}" -> "{b}" [color={PATH_COLOUR}, penwidth=2.5, '
                         f'fontcolor={PATH_COLOUR}, label="{i}", constraint=false];')
        lines.append(f'  label="trace {trace.trace_id}: {trace.source} -> '
                     f'{trace.destination}: {trace.verdict.value}"; labelloc=t;')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_image(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG bytes from Graphviz `dot`."""
    try:
        proc = subprocess.run(["dot", f"-T{fmt}"], input=dot_text.encode(),
                              capture_output=True, check=False)
    except FileNotFoundError:
        raise NetlabError("Graphviz `dot` is not installed (apt install graphviz, or "
                          "scripts/install); -o text or -o dot need nothing") from None
    if proc.returncode != 0:
        raise NetlabError(f"dot -T{fmt}: {proc.stderr.decode().strip()}")
    return proc.stdout


def to_text(view: LabView, trace: Trace | None = None) -> str:
    on_path = set(path_of(view, trace)) if trace else set()

    def mark(node_id: str) -> str:
        return "*" if node_id in on_path else " "

    cfg = view.config
    overlay = (f"VXLAN {view.vxlan_device} vni {cfg.vxlan_vni} udp {cfg.vxlan_port}"
               if cfg.backend == "vxlan" else "host-gw routes")
    lines = [f"lab {view.name}: {overlay}; pods {cfg.pod_cidr}; services {cfg.service_cidr}",
             f"{mark('underlay')} underlay br-underlay {view.underlay_cidr} "
             f"(gateway {view.underlay_gateway})"]
    for m in view.machines.values():
        port = f"[{m.underlay_port}]"
        if not m.is_node:
            lines.append(f"  {mark(_id('m', m.name))} {m.name:<14} eth0 {m.address:<15} {port}")
            continue
        vtep = f"  {view.vxlan_device} {m.vtep_address}" if cfg.backend == "vxlan" else ""
        lines.append(f"  {mark(_id('m', m.name))} {m.name:<14} eth0 {m.address:<15} {port}  "
                     f"{BRIDGE} {m.bridge_address}{vtep}")
        for pod in sorted(view.pods.values(), key=lambda p: p.key):
            if pod.node == m.name:
                lines.append(f"      {mark(_id('pod', pod.key))} {pod.key:<40} {pod.ip:<15} "
                             f"{pod.host_veth}")
    if view.services:
        lines.append("services")
    for svc in sorted(view.services, key=_svc_key):
        key = _svc_key(svc)
        eps = []
        for ip in _endpoints(view, svc):
            pod = view.pod_by_ip(ip)
            eps.append(f"{pod.key}" if pod else ip)
        ip = (svc.get("spec") or {}).get("clusterIP")
        lines.append(f"  {mark(_id('svc', key))} {key:<32} {ip:<15} {_svc_ports(svc):<18} -> "
                     f"{', '.join(eps) or '(no endpoints)'}")
    if trace is not None:
        lines.append(f"trace {trace.trace_id} ({trace.verdict.value}): "
                     + " -> ".join(_label(view, n) for n in path_of(view, trace)))
    return "\n".join(lines) + "\n"


def _label(view: LabView, node_id: str) -> str:
    for pod in view.pods.values():
        if node_id == _id("pod", pod.key):
            return pod.key
    for svc in view.services:
        if node_id == _id("svc", _svc_key(svc)):
            return f"svc {_svc_key(svc)}"
    for m in view.machines.values():
        for dev in ("eth0", BRIDGE, view.vxlan_device):
            if node_id == _id("dev", m.name, dev):
                return f"{m.name}:{dev}"
        if node_id == _id("m", m.name):
            return m.name
    return node_id
