"""Object names exactly as kube-proxy's nftables mode spells them.

Everything lives in one table, `ip kube-proxy`, so names need no `KUBE-`
prefix. Per-service chains and affinity sets are named for what they serve,
readably: `service-ULMVA6XW-ns1/svc1/tcp/p80`, where the 8 characters are
base32(sha256) of the readable part (so two names that differ in one digit
still look different, and a truncated name stays unique). Matching kube-proxy
bit for bit is what lets a learner compare `nft list table ip kube-proxy` in a
lab with a real node's.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from netlab.proxy.model import ServicePortName

FAMILY = "ip"
TABLE = "kube-proxy"

# Base chains: "<type>-<hook>", hooked in at the priorities kube-proxy uses.
FILTER_PREROUTING_PRE_DNAT = "filter-prerouting-pre-dnat"
FILTER_OUTPUT_PRE_DNAT = "filter-output-pre-dnat"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"

# Regular top-level chains.
SERVICES = "services"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_CHECK = "firewall-check"
REJECT_CHAIN = "reject-chain"
MARK_FOR_MASQUERADE = "mark-for-masquerade"
MASQUERADING = "masquerading"

# Sets and verdict maps.
CLUSTER_IPS = "cluster-ips"
NODEPORT_IPS = "nodeport-ips"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
FIREWALL_IPS = "firewall-ips"

# Per-service-port chain prefixes, and the endpoint affinity set prefix.
SERVICE = "service-"  # cluster traffic policy
LOCAL = "local-"  # local traffic policy
EXTERNAL = "external-"  # NodePort, externalIP and LB IP dispatcher
FIREWALL = "firewall-"  # loadBalancerSourceRanges
ENDPOINT = "endpoint-"
AFFINITY = "affinity-"

NAME_MAX = 256  # knftables.NameLengthMax
_BASE_MAX = NAME_MAX - 16  # room for the longest prefix, as kube-proxy reserves


def hash_and_truncate(name: str) -> str:
    """`HASH8-name`, cut to fit with a `...` tail if it ever gets too long."""
    digest = hashlib.sha256(name.encode()).digest()
    out = base64.b32encode(digest)[:8].decode() + "-" + name
    return out if len(out) <= _BASE_MAX else out[:_BASE_MAX - 3] + "..."


def readable(spn: ServicePortName) -> str:
    """`ns/name/proto/port`: '/' cannot appear in any of the parts, so it separates them."""
    return f"{spn.namespace}/{spn.name}/{spn.protocol.lower()}/{spn.port}"


@lru_cache(maxsize=65536)
def port_base(spn: ServicePortName) -> str:
    """The suffix shared by a service port's service-, local-, external- and firewall- chains."""
    return hash_and_truncate(readable(spn))


@lru_cache(maxsize=262144)
def endpoint_base(spn: ServicePortName, endpoint_key: str) -> str:
    """The suffix of an endpoint's chain and affinity set: `…/port__IP/port`.

    Cached: a full sync of 10,000 services × 10 endpoints would otherwise spend
    a good part of its render time re-hashing names that never change.
    """
    ip, _, port = endpoint_key.rpartition(":")
    return hash_and_truncate(f"{readable(spn)}__{ip.strip('[]').replace(':', '.')}/{port}")


def service_chain(spn: ServicePortName) -> str:
    return SERVICE + port_base(spn)


def local_chain(spn: ServicePortName) -> str:
    return LOCAL + port_base(spn)


def external_chain(spn: ServicePortName) -> str:
    return EXTERNAL + port_base(spn)


def firewall_chain(spn: ServicePortName) -> str:
    return FIREWALL + port_base(spn)


def endpoint_chain(spn: ServicePortName, endpoint_key: str) -> str:
    return ENDPOINT + endpoint_base(spn, endpoint_key)


def affinity_set(spn: ServicePortName, endpoint_key: str) -> str:
    return AFFINITY + endpoint_base(spn, endpoint_key)


def is_service_chain(name: str) -> bool:
    """Per-service chains all carry a '/'; none of the fixed chains do."""
    return "/" in name


def is_affinity_set(name: str) -> bool:
    return name.startswith(AFFINITY)
