"""The files kubelet writes for a pod, placed where `ip netns exec` finds them.

`ip netns exec NAME` bind-mounts every file of /etc/netns/NAME/ over /etc/, so a
command run in the pod sees the pod's resolv.conf and hosts, as in a container.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from typing import Any

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


MAX_NAMESERVERS = 3  # glibc reads three; kubelet keeps the first three
HOST_RESOLV_CONF = "/etc/resolv.conf"  # kubelet's --resolv-conf, for dnsPolicy Default


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _parse_resolv(text: str) -> tuple[list[str], list[str], dict[str, str | None]]:
    """(nameservers, search domains, options) of a resolv.conf, as the resolver reads it."""
    servers: list[str] = []
    search: list[str] = []
    options: dict[str, str | None] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            for option in words[1:]:
                name, colon, value = option.partition(":")
                options[name] = value if colon else None
    return servers, search, options


def pod_resolv_conf(spec: dict[str, Any], namespace: str, cluster_domain: str,
                    nameserver: str, host_resolv: str = "") -> str:
    """What kubelet writes for a pod, by its dnsPolicy and dnsConfig.

    ClusterFirst (the default, and ClusterFirstWithHostNet for a pod network pod):
    the cluster DNS with the namespace's search path and ndots:5. Default: the
    node's own resolv.conf (`host_resolv`). None: nothing but dnsConfig. dnsConfig
    is merged on top, as kubelet merges it: nameservers and search domains
    appended (duplicates dropped), options overriding by name.
    """
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        servers, search, options = [], [], {}
    elif policy == "Default":
        servers, search, options = _parse_resolv(host_resolv)
    else:
        servers, search, options = _parse_resolv(resolv_conf(namespace, cluster_domain,
                                                             nameserver))
    config = spec.get("dnsConfig") if isinstance(spec.get("dnsConfig"), dict) else {}
    servers += [s for s in _strings(config.get("nameservers")) if s not in servers]
    search += [d for d in _strings(config.get("searches")) if d not in search]
    for option in config.get("options") or []:
        if isinstance(option, dict) and option.get("name"):
            value = option.get("value")
            options[str(option["name"])] = None if value is None else str(value)
    lines = []
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {s}" for s in servers[:MAX_NAMESERVERS]]
    if options:
        lines.append("options " + " ".join(n if v is None else f"{n}:{v}"
                                           for n, v in options.items()))
    return "".join(line + "\n" for line in lines)


def read_host_resolv_conf() -> str:
    """The node's resolv.conf ("" when there is none), for dnsPolicy Default."""
    try:
        with open(HOST_RESOLV_CONF) as f:
            return f.read()
    except OSError:
        return ""


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
