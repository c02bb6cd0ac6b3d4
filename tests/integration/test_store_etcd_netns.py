"""The etcd client makes its sockets in the namespace it belongs to, whoever dials.

A lab's etcd listens inside the control-plane node: the CLI in the host namespace
reaches it with `etcd://...?netns=`. And a store opened in one namespace keeps
dialling from there even when a thread that uses it has entered a pod's namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading

import pytest
from pyroute2 import IPRoute

from netlab.kernel import netns
from netlab.store import open_store
from netlab.store.etcd_server import LocalEtcd, etcd_binary, member_argv, wait_ready

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
]

NS = "et-store-member"
OTHER = "et-store-other"


@pytest.fixture
def namespaces():
    for name in (NS, OTHER):
        netns.create(name)
        with netns.entered(name), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    yield
    for name in (NS, OTHER):
        netns.delete(name)


def test_host_side_client_reaches_etcd_inside_a_namespace_through_netns_url(namespaces):
    data = tempfile.mkdtemp(prefix="et-store-")
    proc = subprocess.Popen(["nsenter", f"--net={netns.path_of(NS)}",
                             *member_argv("t", f"{data}/member", "127.0.0.1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready("127.0.0.1:2379", 20, netns=NS, proc=proc)
        store = open_store(f"etcd://127.0.0.1:2379?netns={NS}")
        rev = store.put("/k", {"v": 1})
        assert store.get("/k").mod_revision == rev
        watch = store.watch(["/k"], rev, poll_timeout=0.1)
        assert [e.value for e in next(watch)] == [{"v": 1}]
        watch.close()
        store.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def test_thread_inside_another_namespace_still_dials_from_the_stores_own(namespaces):
    with LocalEtcd() as member:  # on the host's loopback
        store = open_store(member.url)
        store.put("/k", {"v": 1})
        got = []

        def use_from_inside_a_pod() -> None:
            with netns.entered(OTHER):  # nothing listens on this namespace's loopback
                got.append(store.get("/k").value)

        thread = threading.Thread(target=use_from_inside_a_pod)
        thread.start()
        thread.join(10)
        assert got == [{"v": 1}]
        store.close()
