"""From a lab file to a LabPlan: everything `up` needs, validated before anything is made."""

from __future__ import annotations

from urllib.parse import urlsplit

from netlab.api.cluster import ClusterConfig
from netlab.errors import KernelError, LabFileError
from netlab.lab.labfile import Lab, load_lab
from netlab.lab.lifecycle import LabPlan, NodeSpec, StorePlan
from netlab.lab.netns_machines import Underlay
from netlab.proxy.modes import check_mode

RESERVED_MACHINE_NAMES = ("ext", "underlay")


def cluster_config(lab: Lab, name: str) -> ClusterConfig:
    net = lab.network
    return ClusterConfig(
        lab=name,
        pod_cidr=str(net.pod_cidr),
        node_subnet_len=net.node_subnet_len,
        service_cidr=str(net.service_cidr),
        node_port_range=(net.node_port_range.first, net.node_port_range.last),
        cluster_domain=net.cluster_domain,
        dns_cluster_ip=str(lab.dns_ip),
        backend=net.backend,
        vxlan_vni=net.vxlan.vni,
        vxlan_port=net.vxlan.port,
        underlay_mtu=net.underlay.mtu,
        proxy_mode=lab.proxy.mode,
        ipvs_scheduler=lab.proxy.ipvs.scheduler,
        sync_period=lab.proxy.sync_period,
        min_sync_period=lab.proxy.min_sync_period,
        dns_enabled=lab.dns.enabled,
        dns_replicas=lab.dns.replicas,
        dns_ttl=lab.dns.ttl,
        dns_upstreams=tuple(lab.dns.upstreams),
    )


def plan_from_lab(lab: Lab, name: str | None = None) -> LabPlan:
    source = str(lab.source or "")
    if name is not None and name != lab.name:
        lab = lab.renamed(name)
    for node in lab.nodes:
        if node.name in RESERVED_MACHINE_NAMES:
            raise LabFileError(f"node name {node.name!r} is reserved for the lab's own "
                               "machines", file=source, field="nodes[].name")
    if lab.node_backend == "netns":  # a VM lab's guests have their own kernel (ip_vs and all)
        try:
            check_mode(lab.proxy.mode)
        except KernelError as exc:
            raise LabFileError(str(exc), file=source, field="proxy.mode") from None
    elif lab.store.backend != "sqlite" or lab.store.endpoints:
        raise LabFileError("a VM lab runs its own etcd on the control-plane node; "
                           "leave store out", file=source, field="store")
    ips = lab.node_ips
    nodes = tuple(NodeSpec(n.name, n.role, str(ips[n.name])) for n in lab.nodes)
    underlay = Underlay(str(lab.network.underlay.cidr), str(lab.gateway),
                        lab.network.underlay.mtu)
    endpoints = tuple(urlsplit(e).netloc for e in lab.store.endpoints)
    # What a guest's control plane reads (`--config`): the cluster's sections, no manifests.
    guest_lab = (lab.model_dump(mode="json", by_alias=True, exclude={"manifests"})
                 if lab.node_backend == "vm" else None)
    return LabPlan(lab.name, nodes, underlay, str(lab.ext_address), cluster_config(lab, lab.name),
                   tuple(o.obj for o in lab.objects), source,
                   StorePlan(lab.store.backend, endpoints), lab.node_backend, guest_lab)


def plan_from_file(path: str, name: str | None = None) -> LabPlan:
    return plan_from_lab(load_lab(path), name)
