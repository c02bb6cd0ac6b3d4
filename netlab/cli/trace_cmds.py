"""`knetlab trace`, `knetlab capture` and `knetlab graph`: packets seen, followed and drawn.

Thin: each command resolves the lab, calls netlab.trace (the same functions the
pytest plugin and scripts call) and prints.
"""

from __future__ import annotations

import os
import queue
import sys
import time

import click

from netlab.errors import NetlabError

name_option = click.option("--name", "lab_name", default=None,
                           help="lab name (optional when one lab runs)")


def _running(lab_name: str | None):  # type: ignore[no-untyped-def]
    from netlab.lab.lifecycle import find_lab
    from netlab.lab.session import RunningLab

    if os.geteuid() != 0:
        raise NetlabError("knetlab needs root (network namespaces): run it with sudo")
    return RunningLab(find_lab(lab_name))


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("-p", "--port", default=None, help="destination port (number or Service port name)")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default=None)
@click.option("--minimal", "level", flag_value="minimal", help="only what changed the packet")
@click.option("--summary", "level", flag_value="summary", default=True,
              help="one line per hop (default)")
@click.option("--detailed", "level", flag_value="detailed",
              help="every rule, counter and conntrack entry")
@click.option("--json", "as_json", is_flag=True, help="the full hop schema as JSON")
@click.option("--live", "mode", flag_value="live", default=True,
              help="send a probe and observe the kernel (default)")
@click.option("--simulate", "mode", flag_value="simulated",
              help="compute the path from the model and the installed rules; send nothing")
@click.option("--diff", "mode", flag_value="diff",
              help="run both and mark where the model and the kernel disagree")
@click.option("--pcap", type=click.Path(dir_okay=False), default=None,
              help="save the probe's packets (pcapng, one interface per namespace/device)")
@click.option("--endpoint", default=None,
              help="--simulate: the endpoint a random rule should pick (IP[:PORT])")
@click.option("--timeout", default=2.0, show_default=True, help="seconds to wait for an answer")
@click.option("--size", type=click.IntRange(min=0), default=None,
              help="probe payload in bytes (DF is set): finds MTU drops, e.g. --size 1472 "
                   "makes a 1500-byte ICMP or UDP probe")
@click.option("-n", "--namespace", default="default", show_default=True)
@name_option
def trace(src: str, dst: str, port: str | None, proto: str | None, level: str, as_json: bool,
          mode: str, pcap: str | None, endpoint: str | None, timeout: float, size: int | None,
          namespace: str, lab_name: str | None) -> None:
    """Follow one packet from SRC (pod, node, ext) to DST, hop by hop.

    DST: a pod, a Service (`[ns/]svc`), a ClusterIP or IP (`IP[:PORT]`), `NODE:NODEPORT`,
    a node, or a cluster DNS name (`web.default.svc.cluster.local`).
    """
    from netlab.trace.api import trace as run_trace
    from netlab.trace.render import render

    if pcap and mode == "simulated":
        raise NetlabError("--pcap needs a live trace (a simulation sends nothing)")
    lab = _running(lab_name)
    result = run_trace(lab, src, dst, namespace=namespace, port=port, proto=proto, mode=mode,
                       endpoint=endpoint, timeout=timeout, pcap=pcap, size=size)
    click.echo(render(result, "json" if as_json else level))
    if pcap:
        click.echo(f"wrote {pcap}", err=True)


@click.command()
@click.argument("target")
@click.option("-w", "--write", "out", default=None,
              help="write pcapng to FILE, or to stdout with `-` (for wireshark -k -i -)")
@click.option("-c", "--count", type=int, default=None, help="stop after this many packets")
@click.option("-f", "--filter", "bpf", default=None, help="tcpdump filter, e.g. 'tcp port 80'")
@click.option("-n", "--namespace", default="default", show_default=True)
@name_option
def capture(target: str, out: str | None, count: int | None, bpf: str | None, namespace: str,
            lab_name: str | None) -> None:
    """Capture packets in a pod, node, `ext` or `underlay`: TARGET[:IFACE] (all interfaces
    by default). Without -w, one line per packet; Ctrl-C stops."""
    from netlab.trace.capture import NamespaceCapture
    from netlab.trace.pcap import PcapngWriter

    lab = _running(lab_name)
    where, _, iface = target.partition(":")
    netns_name = lab.netns(where, namespace)
    frames: queue.Queue = queue.Queue()  # type: ignore[type-arg]
    cap = NamespaceCapture(netns_name, bpf, iface or None, on_frame=frames.put)
    stream = None
    writer = None
    if out:
        stream = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115
        writer = PcapngWriter(stream, {netns_name: where})
    seen = 0
    cap.start()
    if not out or out != "-":
        click.echo(f"capturing in {where} ({netns_name}) on {iface or 'all interfaces'}"
                   + (f" -> {out}" if out else "") + "; Ctrl-C to stop", err=True)
    try:
        while count is None or seen < count:
            try:
                frame = frames.get(timeout=0.2)
            except queue.Empty:
                continue
            seen += 1
            if writer is not None:
                writer.write(frame)
            else:
                click.echo(_one_line(frame))
    except KeyboardInterrupt:
        pass
    finally:
        cap.stop()
        if stream is not None and stream is not sys.stdout.buffer:
            stream.close()
    if not out or out != "-":
        click.echo(f"{seen} packets", err=True)


def _one_line(frame) -> str:  # type: ignore[no-untyped-def]
    import scapy.layers.inet  # noqa: F401 - binds IP, TCP, UDP, ICMP into Ether's summary
    import scapy.layers.vxlan  # noqa: F401
    from scapy.layers.l2 import Ether

    arrow = "<" if frame.direction == "ingress" else ">"
    micros = int(frame.time * 1e6) % 1000000
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.time)) + f".{micros:06d}"
    return f"{stamp} {frame.ifname:<14} {arrow} {Ether(frame.data).summary()}"


@click.command()
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "dot", "svg", "png"]),
              default="text", show_default=True)
@click.option("-f", "--file", "path", default=None,
              help="where svg/png go (default: LAB.svg / LAB.png); text and dot print")
@click.option("--trace", "trace_args", nargs=2, default=None, metavar="SRC DST",
              help="draw the path of a trace from SRC to DST")
@click.option("-p", "--port", default=None)
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default=None)
@click.option("--simulate", is_flag=True, help="draw a simulated trace (sends nothing)")
@click.option("-n", "--namespace", default="default", show_default=True)
@name_option
def graph(fmt: str, path: str | None, trace_args: tuple[str, str] | None, port: str | None,
          proto: str | None, simulate: bool, namespace: str, lab_name: str | None) -> None:
    """Draw the lab: nodes, bridges, pods, the overlay, Services and their endpoints."""
    from netlab.trace import graph as graphs
    from netlab.trace.api import trace as run_trace
    from netlab.trace.labview import load_view

    lab = _running(lab_name)
    traced = None
    if trace_args:
        traced = run_trace(lab, trace_args[0], trace_args[1], namespace=namespace, port=port,
                           proto=proto, mode="simulated" if simulate else "live")
    view = load_view(lab)
    if fmt == "text":
        click.echo(graphs.to_text(view, traced), nl=False)
        return
    dot = graphs.to_dot(view, traced)
    if fmt == "dot":
        click.echo(dot, nl=False)
        return
    image = graphs.render_image(dot, fmt)
    target = path or f"{lab.name}.{fmt}"
    with open(target, "wb") as f:
        f.write(image)
    click.echo(f"wrote {target}")


COMMANDS = (trace, capture, graph)
