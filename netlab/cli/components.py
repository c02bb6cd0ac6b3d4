"""The cluster's own processes on a machine: `control-plane`, `agent`, `runtime`, `etcd`.

On a real machine (a Vagrant VM, a server) they are started by systemd
(scripts/systemd/) or by hand, with `--store etcd://HOST:2379`: they run in the
machine's own network namespace and read the cluster config from the store. Each
logs to stderr. A lab on one host runs the same components in forks of its
supervisor, configured from its state dir (lab/components.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from urllib.parse import urlsplit

import click

from netlab.api.cluster import ClusterConfig
from netlab.daemon import configure_logging, stop_event
from netlab.errors import NetlabError
from netlab.lab.state import StateDir

STORE_ENV = "KNETLAB_STORE"
NODE_STATE_DIR = "/run/knetlab-node"  # pods do not outlive a reboot; neither does their state


def _state(path: str) -> StateDir:
    return StateDir(os.path.basename(path.rstrip("/")), os.path.dirname(path.rstrip("/")))


def _store_host(url: str) -> str:
    """The first endpoint's host of an etcd:// URL (the control plane's address)."""
    return urlsplit(url).netloc.split(",")[0].rpartition(":")[0]


def _config_from_store(url: str, stop: threading.Event) -> ClusterConfig:
    from netlab.store import clusterconfig, open_store

    store = open_store(url)
    try:
        config = clusterconfig.wait_for(store, stop)
    finally:
        store.close()
    if config is None:
        raise SystemExit(0)  # stopped while waiting
    return config


def _require_store(store_url: str | None) -> str:
    if store_url is None:
        raise click.UsageError(f"give --store URL (or set {STORE_ENV})")
    return store_url


store_option = click.option(
    "--store", "store_url", envvar=STORE_ENV, metavar="URL",
    help=f"the cluster's store, etcd://HOST:2379[,HOST:2379] (env {STORE_ENV})")
node_option = click.option(
    "--node", default=None, metavar="NAME", envvar="KNETLAB_NODE",
    help="this node's name, as kubelet's --hostname-override (env KNETLAB_NODE) "
         "[default: the hostname]")


@click.command("control-plane", short_help="Run the control plane against a store.")
@store_option
@click.option("--config", "config_file", default=None, metavar="LAB_FILE", envvar="KNETLAB_CONFIG",
              type=click.Path(exists=True, dir_okay=False),
              help="a lab file; its name and network, proxy and dns sections become the "
                   "cluster config published to the store (env KNETLAB_CONFIG) [default: "
                   "the store's, or kubeadm's defaults on an empty store]")
def control_plane(store_url: str | None, config_file: str | None) -> None:
    """Run the control plane: node IPAM, scheduler, Deployment/ReplicaSet/EndpointSlice
    controllers, as kube-controller-manager and kube-scheduler do.

    \b
    On the control-plane machine, with etcd running there:
      knetlab control-plane --store etcd://192.168.56.10:2379 --config topologies/vagrant.yaml

    It publishes the cluster config (kube-system/knetlab-config) that agents read,
    creates what `kubeadm init` leaves (system namespaces, the kubernetes Service,
    the DNS addon), and runs until SIGTERM. It waits for the store if etcd is not up
    yet, and restarting it changes nothing that is already right.
    """
    from netlab.control.manager import run

    configure_logging("control-plane")
    stop = stop_event()
    url = _require_store(store_url)
    config = _publish_config(url, config_file, stop)
    if config is not None:
        run(url, config, stop)


def _publish_config(url: str, config_file: str | None,
                    stop: threading.Event) -> ClusterConfig | None:
    """What `kubeadm init` does to the store; the cluster config to run with."""
    from netlab.control.apply import bootstrap
    from netlab.store import clusterconfig, open_store
    from netlab.store.objects import Objects
    from netlab.store.retry import retry_store

    wanted = None
    if config_file is not None:  # only the cluster's sections: the machines are real
        from netlab.lab.labfile import load_lab
        from netlab.lab.plan import cluster_config

        lab = load_lab(config_file)
        wanted = cluster_config(lab, lab.name)
    store = open_store(url)
    try:
        def establish() -> ClusterConfig:
            current = clusterconfig.read(store)
            config = wanted or current or ClusterConfig()
            if clusterconfig.publish(store, config):
                logging.getLogger(__name__).info("published the cluster config (lab %s, "
                                                 "pods %s, services %s)", config.lab,
                                                 config.pod_cidr, config.service_cidr)
            return config

        config = retry_store(establish, "publishing the cluster config", stop)
        if config is not None:
            retry_store(lambda: bootstrap(Objects(store), config), "bootstrapping", stop)
        return config
    finally:
        store.close()


@click.command("agent", short_help="Run this machine as a node (kubelet, flannel, kube-proxy).")
@store_option
@node_option
@click.option("--iface", default=None, metavar="IFACE", envvar="KNETLAB_IFACE",
              help="the interface for the overlay and the node address (env KNETLAB_IFACE) "
                   "[default: the one "
                   "holding the address this machine reaches the store from; never the "
                   "default route's interface for its own sake (Vagrant's NAT eth0)]")
@click.option("--address", default=None, metavar="IP", envvar="KNETLAB_ADDRESS",
              help="the node's cluster address, InternalIP and VXLAN endpoint (env "
                   "KNETLAB_ADDRESS) [default: the "
                   "address on --iface, or the one this machine reaches the store from]")
@click.option("--role", type=click.Choice(["worker", "control-plane"]), default="worker",
              envvar="KNETLAB_ROLE", show_default=True,
              help="control-plane: labelled and tainted NoSchedule (env KNETLAB_ROLE)")
@click.option("--state-dir", default=None, metavar="DIR",
              help=f"where the node keeps pod addresses and records [default: "
                   f"{NODE_STATE_DIR}]")
def agent(store_url: str | None, node: str | None, iface: str | None, address: str | None,
          role: str, state_dir: str | None) -> None:
    """Run a node: kubelet's pod lifecycle with bridge CNI, flannel's overlay and
    kube-proxy, in this machine's network namespace.

    \b
    On each machine (the runtime runs beside it: knetlab runtime, same --store/--node):
      knetlab agent --store etcd://192.168.56.10:2379 --node worker-1
      knetlab agent --store etcd://192.168.56.10:2379 --node control-plane --role control-plane

    The cluster config (pod network, backend, proxy mode, DNS) comes from the store.
    Needs root, net.ipv4.ip_forward=1 and br_netfilter's bridge-nf-call-iptables=1.
    While the store is down, pods, routes and rules stay as they are; the agent
    reconnects and catches up when it returns.
    """
    from netlab.node.agent import Agent

    node = node or socket.gethostname()
    configure_logging(f"agent-{node}")
    stop = stop_event()
    state, url = _state(state_dir or NODE_STATE_DIR), _require_store(store_url)
    config = _config_from_store(url, stop)
    iface, address = _node_interface(iface, address, url)
    _preflight()
    config = _with_mtu_of(config, iface)
    Agent(url, state, config, node, address, role, iface).run_until(stop)


def _node_interface(iface: str | None, address: str | None, url: str) -> tuple[str, str]:
    from netlab.node import hostnet

    host = _store_host(url) if url.startswith("etcd://") else None
    source = hostnet.route_source(host) if host and iface is None and address is None \
        else None
    chosen = hostnet.choose_interface(hostnet.host_addresses(), iface=iface, address=address,
                                      route_source=source, store_host=host or "the store")
    logging.getLogger(__name__).info("node interface %s, address %s", *chosen)
    return chosen


def _preflight() -> None:
    from netlab.node import hostnet

    problems = hostnet.preflight_problems(hostnet.read_sysctl)
    if problems:
        raise NetlabError("this machine is not ready for a node: " + "; ".join(problems))


def _with_mtu_of(config: ClusterConfig, iface: str) -> ClusterConfig:
    """flannel sizes the overlay from its interface's MTU, which may differ per machine."""
    from netlab.node import hostnet

    return dataclasses.replace(config, underlay_mtu=hostnet.interface_mtu(iface))


@click.command("runtime", short_help="Run the pods' workloads on this node.")
@store_option
@node_option
def runtime(store_url: str | None, node: str | None) -> None:
    """Run the pods' workloads on this node (the container runtime's role).

    \b
      knetlab runtime --store etcd://192.168.56.10:2379 --node worker-1

    Its own process, as containerd is beside kubelet: restarting the agent leaves
    every pod serving. It serves each running pod of the node (netexec-compatible
    server, or the cluster DNS server in CoreDNS pods) inside the pod's namespace.
    """
    from netlab.node.runtime import Runtime

    node = node or socket.gethostname()
    configure_logging(f"runtime-{node}")
    stop = stop_event()
    url = _require_store(store_url)
    Runtime(url, _config_from_store(url, stop), node).run(stop)


@click.command("etcd", short_help="Run the cluster's one-member etcd.")
@click.option("--listen", "address", required=True, metavar="IP", envvar="KNETLAB_ADDRESS",
              help="the address clients and peers use: the control plane's cluster address "
                   "(env KNETLAB_ADDRESS)")
@click.option("--data-dir", default="/var/lib/knetlab/etcd", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--name", default=None, help="member name [default: the hostname]")
def etcd(address: str, data_dir: str, name: str | None) -> None:
    """Run etcd for the cluster on the control-plane machine (what kubeadm's etcd static
    pod is), with the limits the lab's large transactions need.

    
      knetlab etcd --listen 192.168.56.10      # clients: etcd://192.168.56.10:2379

    Replaces this process with etcd (from Debian's etcd-server package).
    """
    from netlab.store.etcd_server import member_argv

    argv = member_argv(name or socket.gethostname(), data_dir, address)
    os.execv(argv[0], argv)


COMMANDS = [control_plane, agent, runtime, etcd]
