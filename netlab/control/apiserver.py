"""Endpoints of default/kubernetes: the control-plane nodes' InternalIP on port 6443.

kube-apiserver maintains these itself (the "lease" endpoint reconciler), not the
EndpointSlice controller, and writes them in its own shape: a slice named
`kubernetes` with only the service-name label and ready-only conditions, and an
Endpoints object with bare addresses. The lab has no API server process, so the
control plane writes what it would, following the control-plane Nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from netlab.control.endpointslices import SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL
from netlab.control.meta import Obj
from netlab.control.nodeipam import is_control_plane
from netlab.control.servicealloc import APISERVER_PORT
from netlab.control.view import View, Writer

log = logging.getLogger(__name__)

KEY = ("default", "kubernetes")
_PORT = {"name": "https", "port": APISERVER_PORT, "protocol": "TCP"}


def control_plane_ips(nodes: Iterable[Obj]) -> list[str]:
    ips = []
    for node in nodes:
        if not is_control_plane(node):
            continue
        for address in node.get("status", {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                ips.append(address["address"])
    return sorted(ips)


def desired_slice(ips: list[str]) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [dict(_PORT)]}


def desired_endpoints(ips: list[str]) -> Obj:
    obj: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {SKIP_MIRROR_LABEL: "true"}}}
    if ips:
        obj["subsets"] = [{"addresses": [{"ip": ip} for ip in ips], "ports": [dict(_PORT)]}]
    return obj


def _merged(current: Obj | None, wanted: Obj, fields: tuple[str, ...]) -> Obj | None:
    """wanted on top of current's identity, or None when current already says the same."""
    if current is None:
        return wanted
    same = current["metadata"].get("labels") == wanted["metadata"]["labels"] and all(
        current.get(f) == wanted.get(f) for f in fields)
    if same:
        return None
    out = {k: v for k, v in current.items() if k not in fields}
    out.update({f: wanted[f] for f in fields if f in wanted})
    out["metadata"] = {**current["metadata"], "labels": wanted["metadata"]["labels"]}
    return out


def sync(writer: Writer, view: View) -> None:
    if KEY not in view.services:
        return
    ips = control_plane_ips(view.nodes.values())
    writes = [(view.slices.get(KEY), _merged(view.slices.get(KEY), desired_slice(ips),
                                              ("addressType", "endpoints", "ports"))),
              (view.endpoints.get(KEY), _merged(view.endpoints.get(KEY),
                                                desired_endpoints(ips), ("subsets",)))]
    create = [new for current, new in writes if new is not None and current is None]
    update = [new for current, new in writes if new is not None and current is not None]
    if (create or update) and writer.commit("default/kubernetes endpoints", create=create,
                                            update=update):
        log.info("service default/kubernetes: endpoints %s",
                 ", ".join(f"{ip}:{APISERVER_PORT}" for ip in ips) or "none")
