"""The IPVS mode's netlink messages, decoded by pyroute2 (an independent decoder), no root."""

from __future__ import annotations

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg
from pyroute2.netlink.nfnetlink.ipset import ipset_msg

from netlab.proxy.ipvs import names as n
from netlab.proxy.ipvs.netlink import (
    _HEADER,
    Addresses,
    IPSet,
    Ipvs,
    NetlinkError,
    Request,
    attrs_of,
    member_attrs,
    member_text,
)
from netlab.proxy.ipvs.render import VirtualServer

VS = VirtualServer("TCP", "10.96.0.1", 443, "rr", n.FLAG_PERSISTENT, 10800)
IPVS_FAMILY = 30  # any id: the kernel hands one out at boot


def decoded(msg_class, request: Request):
    data = _HEADER.pack(_HEADER.size + len(request.body), request.kind, 5, 1, 0) + request.body
    msg = msg_class(data)
    msg.decode()
    return msg


def nla(msg, name: str) -> dict:
    return dict(msg.get_attr(name)["attrs"])


def test_a_new_virtual_server_carries_every_field_the_kernel_requires():
    msg = decoded(ipvsmsg, Ipvs(None, IPVS_FAMILY).add_service(VS))  # type: ignore[arg-type]
    assert msg["header"]["type"] == IPVS_FAMILY and msg["cmd"] == 1  # IPVS_CMD_NEW_SERVICE
    assert nla(msg, "IPVS_CMD_ATTR_SERVICE") == {
        "IPVS_SVC_ATTR_AF": 2, "IPVS_SVC_ATTR_PROTOCOL": 6, "IPVS_SVC_ATTR_ADDR": "10.96.0.1",
        "IPVS_SVC_ATTR_PORT": 443, "IPVS_SVC_ATTR_SCHED_NAME": "rr",
        "IPVS_SVC_ATTR_FLAGS": {"flags": 1, "mask": 0xFFFFFFFF},
        "IPVS_SVC_ATTR_TIMEOUT": 10800, "IPVS_SVC_ATTR_NETMASK": "255.255.255.255"}


def test_a_real_server_is_masqueraded_with_its_weight_under_the_service_key():
    ipvs = Ipvs(None, IPVS_FAMILY)  # type: ignore[arg-type]
    msg = decoded(ipvsmsg, ipvs.add_real(VS, ("10.244.1.2", 8080), 1))
    assert msg["cmd"] == 5  # IPVS_CMD_NEW_DEST
    assert nla(msg, "IPVS_CMD_ATTR_SERVICE") == {
        "IPVS_SVC_ATTR_AF": 2, "IPVS_SVC_ATTR_PROTOCOL": 6, "IPVS_SVC_ATTR_ADDR": "10.96.0.1",
        "IPVS_SVC_ATTR_PORT": 443}
    assert nla(msg, "IPVS_CMD_ATTR_DEST") == {
        "IPVS_DEST_ATTR_ADDR": "10.244.1.2", "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_FWD_METHOD": 0, "IPVS_DEST_ATTR_WEIGHT": 1, "IPVS_DEST_ATTR_U_THRESH": 0,
        "IPVS_DEST_ATTR_L_THRESH": 0, "IPVS_DEST_ATTR_ADDR_FAMILY": 2}
    deleted = decoded(ipvsmsg, ipvs.delete_real(VS, ("10.244.1.2", 8080)))
    assert deleted["cmd"] == 7 and nla(deleted, "IPVS_CMD_ATTR_DEST") == {
        "IPVS_DEST_ATTR_ADDR": "10.244.1.2", "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_ADDR_FAMILY": 2}


def test_weight_changes_and_deletions_are_the_set_and_delete_commands():
    ipvs = Ipvs(None, IPVS_FAMILY)  # type: ignore[arg-type]
    assert decoded(ipvsmsg, ipvs.set_weight(VS, ("10.244.1.2", 8080), 0))["cmd"] == 6
    assert decoded(ipvsmsg, ipvs.update_service(VS))["cmd"] == 2
    assert decoded(ipvsmsg, ipvs.delete_service(VS))["cmd"] == 3


MEMBERS = [
    ("hash:ip,port", "10.96.0.1,tcp:443"),
    ("hash:ip,port", "192.168.0.2,sctp:30099"),
    ("hash:ip,port,ip", "10.244.1.2,udp:53,10.244.1.2"),
    ("hash:ip,port,net", "5.6.7.8,tcp:80,203.0.113.0/25"),
    ("bitmap:port", "30080"),
    ("hash:ip", "10.96.0.10"),
]


@pytest.mark.parametrize(("kind", "member"), MEMBERS)
def test_ipset_members_round_trip_through_their_attributes(kind, member):
    assert member_text(member_attrs(kind, member)) == member


def test_an_ipset_add_is_what_ipset_sends_for_the_same_member():
    msg = decoded(ipset_msg, IPSet(None).add(  # type: ignore[arg-type]
        n.LOOP_BACK, "hash:ip,port,ip", "10.244.1.2,udp:53,10.244.1.2"))
    assert msg["header"]["type"] == (6 << 8) | 9  # NFNL_SUBSYS_IPSET, IPSET_CMD_ADD
    assert msg.get_attr("IPSET_ATTR_SETNAME") == n.LOOP_BACK
    data = nla(msg, "IPSET_ATTR_DATA")
    assert data["IPSET_ATTR_PORT_FROM"] == 53 and data["IPSET_ATTR_PROTO"] == 17
    assert data["IPSET_ATTR_IP_FROM"]["attrs"][0][1] == "10.244.1.2"
    assert data["IPSET_ATTR_IP2"]["attrs"][0][1] == "10.244.1.2"


def test_only_idempotent_errors_are_ignored():
    ipset = IPSet(None)  # type: ignore[arg-type]
    assert ipset.destroy("KUBE-X").ignore  # ENOENT: already gone
    assert not ipset.add("KUBE-X", "hash:ip", "1.2.3.4").ignore  # without EXCL: no error
    addresses = Addresses(None)  # type: ignore[arg-type]
    assert addresses.add(5, "10.96.0.1").ignore and addresses.delete(5, "10.96.0.1").ignore


def test_kernel_errors_name_the_request_and_the_ipset_reason():
    assert str(NetlinkError("add 1.2.3.4 to ipset X", 4102)) == \
        "add 1.2.3.4 to ipset X: set exists with another type"
    assert "No such file or directory" in str(NetlinkError("x", 2))


def test_attributes_are_read_back_in_order_with_flags_masked():
    data = member_attrs("hash:ip,port", "10.96.0.1,tcp:443")
    assert [kind for kind, _ in attrs_of(data)] == [1, 4, 7]  # IP (nested), PORT, PROTO
