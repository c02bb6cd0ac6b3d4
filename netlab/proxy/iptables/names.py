"""Chain names exactly as kube-proxy's iptables mode spells them.

`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and `KUBE-FW-` share one suffix per
service port: the first 16 characters of base32(sha256(portName + protocol)).
`KUBE-SEP-` hashes the endpoint's `IP:port` in as well. Matching kube-proxy bit
for bit is what lets a learner compare a lab's iptables-save with a real node.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from netlab.proxy.model import ServicePortName

SVC = "KUBE-SVC-"
SVL = "KUBE-SVL-"
EXT = "KUBE-EXT-"
FW = "KUBE-FW-"
SEP = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC, SVL, EXT, FW, SEP)

# Top-level chains kube-proxy owns.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648, as Go's base32.StdEncoding
_B32_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> 2 characters


def _hash16(text: str) -> str:
    """First 16 base32 characters of sha256(text), i.e. its first 80 bits.

    Same result as `base64.b32encode(digest)[:16]` at a fifth of the cost (the
    stdlib encoder is pure Python), which matters for 100,000 endpoint chains.
    """
    n = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    p = _B32_PAIRS
    return (p[n >> 70] + p[(n >> 60) & 1023] + p[(n >> 50) & 1023] + p[(n >> 40) & 1023]
            + p[(n >> 30) & 1023] + p[(n >> 20) & 1023] + p[(n >> 10) & 1023] + p[n & 1023])


def port_id(spn: ServicePortName) -> str:
    """What the hashes are taken of: `ns/name:port` followed by the lower-case protocol."""
    return str(spn) + spn.protocol.lower()


@lru_cache(maxsize=65536)
def port_hash(spn: ServicePortName) -> str:
    """The suffix shared by a service port's SVC, SVL, EXT and FW chains."""
    return _hash16(port_id(spn))


@lru_cache(maxsize=262144)
def endpoint_chain_of(port: str, endpoint_key: str) -> str:
    """`KUBE-SEP-…` from a `port_id()` and an endpoint's `IP:port`.

    Cached: a full sync of 10,000 services × 10 endpoints would otherwise spend
    most of its render time re-hashing names that never change.
    """
    return SEP + _hash16(port + endpoint_key)


def endpoint_chain(spn: ServicePortName, endpoint_key: str) -> str:
    """`KUBE-SEP-…` for one endpoint (`IP:port`) of one service port."""
    return endpoint_chain_of(port_id(spn), endpoint_key)


def cluster_chain(spn: ServicePortName) -> str:
    return SVC + port_hash(spn)


def local_chain(spn: ServicePortName) -> str:
    return SVL + port_hash(spn)


def external_chain(spn: ServicePortName) -> str:
    return EXT + port_hash(spn)


def firewall_chain(spn: ServicePortName) -> str:
    return FW + port_hash(spn)


def is_service_chain(name: str) -> bool:
    """True for the per-service chains stale-chain cleanup may delete."""
    return name.startswith(SERVICE_CHAIN_PREFIXES)
