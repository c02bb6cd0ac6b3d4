"""The files kubelet writes for a pod, placed where `ip netns exec` finds them.

`ip netns exec NAME` bind-mounts every file of /etc/netns/NAME/ over /etc/, so a
command run in the pod sees the pod's resolv.conf and hosts, as in a container.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

ETC_NETNS = "/etc/netns"
MAX_NETNS_NAME = 200


def pod_netns_name(lab: str, namespace: str, pod: str) -> str:
    """`nl-<lab>-<namespace>.<pod>`: the dot cannot occur in a node name, so no clash."""
    name = f"nl-{lab}-{namespace}.{pod}"
    if len(name) > MAX_NETNS_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = name[:MAX_NETNS_NAME - 11] + "-" + digest
    return name


def resolv_conf(namespace: str, cluster_domain: str, nameserver: str) -> str:
    """What kubelet writes for dnsPolicy ClusterFirst."""
    return (f"search {namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}\n"
            f"nameserver {nameserver}\noptions ndots:5\n")


def hosts_file(pod_ip: str, hostname: str) -> str:
    """kubelet's managed /etc/hosts."""
    return ("# Kubernetes-managed hosts file.\n"
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\n"
            "fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            f"{pod_ip}\t{hostname}\n")


def write_pod_files(netns_name: str, files: dict[str, str]) -> str:
    directory = os.path.join(ETC_NETNS, netns_name)
    os.makedirs(directory, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(content)
    return directory


def remove_pod_files(netns_name: str) -> None:
    shutil.rmtree(os.path.join(ETC_NETNS, netns_name), ignore_errors=True)


def release_etc_netns() -> None:
    """Remove /etc/netns if it is empty (called by cleanup when the lab created it)."""
    with contextlib.suppress(OSError):
        os.rmdir(ETC_NETNS)
