"""MTU drops, live: probes of a chosen size (DF set) on a VXLAN lab, with MTUs broken on purpose.

flannel gives flannel.1, cni0 and every pod veth the underlay MTU less VXLAN's 50
bytes (1450). A test here raises the client pod's eth0 (and maybe its host-side
veth) to 1500 in the lab's own namespaces, as a misconfigured CNI would, and
puts it back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from netlab.trace.labview import load_view
from netlab.trace.model import DropReason, Verdict
from tests.integration.labs import lab_data, pod

pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.store]

netlab_lab = {**lab_data("trc-mtu"), "nodes": [
    {"name": "control-plane", "role": "control-plane"}, {"name": "worker-1", "role": "worker"}]}
netlab_manifests = [pod("client", "worker-1"), pod("server", "control-plane")]
TCP_HEADERS = 44  # IP 20 + TCP 20 + the SYN's MSS option 4


def set_mtu(lab, target: str, device: str, mtu: int) -> None:  # type: ignore[no-untyped-def]
    lab.exec(target, "ip", "link", "set", device, "mtu", str(mtu))


@pytest.fixture
def client_mtu(lab) -> Iterator[Callable[[int, int], None]]:  # type: ignore[no-untyped-def]
    """Sets the MTU of the client's eth0 and of its veth peer on worker-1; puts back 1450."""
    host_veth = load_view(lab).pods["default/client"].host_veth

    def change(eth0: int, veth: int) -> None:
        set_mtu(lab, "client", "eth0", eth0)
        set_mtu(lab, "worker-1", host_veth, veth)

    yield change
    change(1450, 1450)
    lab.exec("client", "ip", "route", "flush", "cache")  # the PMTU a frag-needed left


def test_the_largest_packet_that_fits_crosses_the_tunnel(trace):
    t = trace("client", "server", size=1450 - TCP_HEADERS, mode="diff")
    assert t.size == 1450
    assert t.verdict == Verdict.DELIVERED and t.encapsulated(vni=1)
    assert t.diff == [], "\n".join(map(str, t.diff or []))


def test_a_packet_over_the_pod_mtu_is_refused_by_the_sending_kernel(trace):
    t = trace("client", "server", size=1500 - TCP_HEADERS, mode="diff")
    assert t.verdict == Verdict.DROPPED and t.drop_reason == DropReason.MTU
    assert t.hops[-1].place == "worker-1/pod:default/client"
    assert "sendto: EMSGSIZE" in t.hops[-1].evidence
    assert t.diff == [], "\n".join(map(str, t.diff or []))


def test_a_pod_mtu_above_flannels_gets_icmp_frag_needed_from_its_node(trace, client_mtu):
    client_mtu(1500, 1500)
    t = trace("client", "server", proto="icmp", size=1472, mode="diff")
    assert t.size == 1500
    assert t.verdict == Verdict.DROPPED and t.drop_reason == DropReason.MTU
    drop = t.hops[-1]
    assert (drop.place, drop.stage, drop.interface) == ("worker-1/root", "route", "flannel.1")
    assert "ICMP frag-needed captured" in drop.evidence
    assert "does not fit flannel.1 on worker-1 (MTU 1450)" in t.reason
    assert any("answer at the source: ICMP frag-needed" in n for n in t.notes)
    # The model gives the pod flannel's MTU: the diff points at the pod's eth0.
    assert any(d.key == "worker-1/pod:default/client route eth0" and d.field == "action"
               for d in t.diff or [])


def test_a_pod_mtu_above_its_veth_peers_is_dropped_silently(trace, client_mtu):
    client_mtu(1500, 1450)
    t = trace("client", "server", size=1500 - TCP_HEADERS, timeout=1.0)
    assert t.verdict == Verdict.DROPPED and t.drop_reason == DropReason.MTU
    assert t.hops[-1].stage == "bridge:cni0" and "no ICMP" in t.hops[-1].match
    assert "drops it silently" in t.reason
