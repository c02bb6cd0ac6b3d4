"""Which proxier a node runs: the lab's `proxy: {mode: …}` to a mode's `new_proxier`.

One place maps a mode name to its folder (iptables/, ipvs/, nftables/), so the
node agent stays mode-blind. IPVS needs kernel support a network-namespace lab
cannot add (the ip_vs and dummy modules live in the host kernel), so where the
kernel lacks them it is refused here with a message that says what is missing.
"""

from __future__ import annotations

import gzip
import importlib
import os
import platform
from collections.abc import Sequence
from typing import Any

from netlab.errors import KernelError
from netlab.proxy.proxier import Proxier

# Each mode's module with its `new_proxier`, imported when a node runs that mode: a
# node (and a lab's supervisor, which loads what its agents run) needs one of them.
BACKENDS = {"iptables": "netlab.proxy.iptables.backend",
            "ipvs": "netlab.proxy.ipvs.backend",
            "nftables": "netlab.proxy.nftables.backend"}
MODES = tuple(BACKENDS)
# What IPVS mode needs from the kernel: (module, kernel config option).
IPVS_NEEDS = (("ip_vs", "CONFIG_IP_VS"), ("dummy", "CONFIG_DUMMY"))


def _kernel_config() -> dict[str, str]:
    """/proc/config.gz as {option: value}; {} when the kernel does not expose it."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    config = {}
    for line in lines:
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            config[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:-len(" is not set")]] = "n"
    return config


def _module_present(module: str) -> bool:
    """Loaded or built in: either way the kernel lists it in /sys/module."""
    if os.path.isdir(f"/sys/module/{module}"):
        return True
    try:
        with open("/proc/modules") as f:
            return any(line.split(" ", 1)[0] == module for line in f)
    except OSError:
        return False


def ipvs_missing() -> list[str]:
    """What this kernel lacks for IPVS mode, in words; [] if it has everything.

    A module that is neither loaded nor built in counts as missing unless the
    kernel config says it can be loaded (=m); a namespace lab cannot load one
    anyway if the config says it is not set.
    """
    config = _kernel_config()
    missing = []
    for module, option in IPVS_NEEDS:
        if _module_present(module) or (module == "ip_vs" and os.path.exists("/proc/net/ip_vs")):
            continue
        value = config.get(option)
        if value == "m":
            missing.append(f"{module} (a module, {option}=m, not loaded: modprobe {module})")
        elif value in (None, "n"):
            setting = f"{option} is not set" if value == "n" else "no kernel config to check"
            missing.append(f"{module} ({setting})")
    return missing


def check_mode(mode: str) -> None:
    """Raise KernelError if this host cannot run `mode`; for early checks (lab plan, CLI)."""
    if mode not in MODES:
        raise KernelError(f"unknown proxy mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "ipvs":
        missing = ipvs_missing()
        if missing:
            raise KernelError(
                f"proxy mode ipvs needs the ip_vs and dummy kernel modules; this kernel "
                f"({platform.release()}) lacks {' and '.join(missing)}. Use proxy mode "
                "iptables or nftables, or a VM with a distribution kernel (tests/vm).")


def new_proxier_for(mode: str, namespace: str | None, node_name: str, node_ips: Sequence[str],
                    *, service_cidrs: Sequence[str] = ("10.96.0.0/12",),
                    ipvs_scheduler: str = "rr", **options: Any) -> Proxier:
    """A proxier for `mode`, wired as the node agent needs it.

    `options` are the iptables `new_proxier` keywords (cluster_cidr,
    min_sync_period, sync_period, lock_file, …), which every mode accepts.
    `service_cidrs` is used by nftables mode only (it drops traffic to
    unallocated ClusterIPs; the other modes have no such rule);
    `ipvs_scheduler` by IPVS mode only (kube-proxy's --ipvs-scheduler).
    """
    check_mode(mode)
    new_proxier = importlib.import_module(BACKENDS[mode]).new_proxier
    if mode == "nftables":
        return new_proxier(namespace, node_name, node_ips, service_cidrs=service_cidrs,
                           **options)
    if mode == "ipvs":
        return new_proxier(namespace, node_name, node_ips, scheduler=ipvs_scheduler, **options)
    return new_proxier(namespace, node_name, node_ips, **options)
