"""Names exactly as kube-proxy's IPVS mode spells them (pkg/proxy/ipvs/proxier.go, ipset.go).

The ipsets, their types and the comments on the iptables rules that match
them, the few chains IPVS mode still writes, and the dummy device that holds
the service addresses. Matching kube-proxy lets a learner compare
`ipvsadm -Ln`, `ipset list` and `iptables-save` in a lab with a real node's.
"""

from __future__ import annotations

from typing import NamedTuple

DUMMY_DEVICE = "kube-ipvs0"
DEFAULT_SCHEDULER = "rr"
# --ipvs-scheduler values kube-proxy accepts (each needs its ip_vs_<name> module).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")

# IPVS service flags (include/uapi/linux/ip_vs.h; kube-proxy's utilipvs.Flag*).
FLAG_PERSISTENT = 0x1  # ClientIP session affinity
FLAG_HASHED = 0x2  # set by the kernel on every service; never compared
FLAG_SOURCE_HASH = 0x10  # IP_VS_SVC_F_SCHED_MH_PORT: the mh scheduler hashes the port too
FORWARD_MASQ = 0  # IP_VS_CONN_F_MASQ: real servers are reached by NAT ("Masq")

# Chains (kube-proxy's IPVS proxier owns these; everything else is IPVS itself).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_NODE_PORT = "KUBE-NODE-PORT"  # nat: NodePort masquerade; filter: health-check ACCEPT
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

NAT_CHAINS = (KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER,
              KUBE_MARK_MASQ)
FILTER_CHAINS = (KUBE_FORWARD, KUBE_NODE_PORT, KUBE_PROXY_FIREWALL,
                 KUBE_SOURCE_RANGES_FIREWALL, KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER)

# ipsets.
LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"


class IPSetInfo(NamedTuple):
    name: str
    kind: str  # the ipset type
    comment: str  # what kube-proxy writes into the rules that match the set


# kube-proxy's ipsetInfo, in its order.
IPSETS: tuple[IPSetInfo, ...] = (
    IPSetInfo(LOOP_BACK, "hash:ip,port,ip",
              "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    IPSetInfo(CLUSTER_IP, "hash:ip,port",
              "Kubernetes service cluster ip + port for masquerade purpose"),
    IPSetInfo(EXTERNAL_IP, "hash:ip,port",
              "Kubernetes service external ip + port for masquerade and filter purpose"),
    IPSetInfo(EXTERNAL_IP_LOCAL, "hash:ip,port",
              "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    IPSetInfo(LOAD_BALANCER, "hash:ip,port", "Kubernetes service lb portal"),
    IPSetInfo(LOAD_BALANCER_FW, "hash:ip,port",
              "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    IPSetInfo(LOAD_BALANCER_LOCAL, "hash:ip,port",
              "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    IPSetInfo(LOAD_BALANCER_SOURCE_IP, "hash:ip,port,ip",
              "Kubernetes service load balancer ip + port + source IP for packet filter "
              "purpose"),
    IPSetInfo(LOAD_BALANCER_SOURCE_CIDR, "hash:ip,port,net",
              "Kubernetes service load balancer ip + port + source cidr for packet filter "
              "purpose"),
    IPSetInfo(NODE_PORT_TCP, "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    IPSetInfo(NODE_PORT_LOCAL_TCP, "bitmap:port",
              "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    IPSetInfo(NODE_PORT_UDP, "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    IPSetInfo(NODE_PORT_LOCAL_UDP, "bitmap:port",
              "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    IPSetInfo(NODE_PORT_SCTP, "hash:ip,port",
              "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    IPSetInfo(NODE_PORT_LOCAL_SCTP, "hash:ip,port",
              "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type "
              "'hash ip:port'"),
    IPSetInfo(HEALTH_CHECK_NODE_PORT, "bitmap:port", "Kubernetes health check node port"),
    IPSetInfo(IPVS_IPS, "hash:ip", "Addresses on the ipvs interface"),
)
IPSET_BY_NAME = {info.name: info for info in IPSETS}
