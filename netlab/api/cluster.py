"""Cluster-wide settings every component agrees on (what kubeadm's ClusterConfiguration holds).

The lab file is the user's view; this is what the processes receive (as JSON in the
state dir), so a control plane or agent started on another machine needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ClusterConfig:
    lab: str = "default"
    pod_cidr: str = "10.244.0.0/16"
    node_subnet_len: int = 24
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    cluster_domain: str = "cluster.local"
    dns_cluster_ip: str = "10.96.0.10"
    backend: str = "vxlan"  # vxlan | host-gw
    vxlan_vni: int = 1
    vxlan_port: int = 8472
    underlay_mtu: int = 1500
    proxy_mode: str = "iptables"
    ipvs_scheduler: str = "rr"  # proxy mode ipvs: kube-proxy's --ipvs-scheduler
    sync_period: float = 30.0
    min_sync_period: float = 1.0
    dns_enabled: bool = True
    dns_replicas: int = 2
    dns_ttl: int = 30
    dns_upstreams: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pod_mtu(self) -> int:
        """flannel's FLANNEL_MTU: the underlay MTU less VXLAN's 50 bytes (host-gw: as is)."""
        return self.underlay_mtu - 50 if self.backend == "vxlan" else self.underlay_mtu

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        data = json.loads(text)
        data["node_port_range"] = tuple(data["node_port_range"])
        data["dns_upstreams"] = tuple(data.get("dns_upstreams", ()))
        return cls(**data)
