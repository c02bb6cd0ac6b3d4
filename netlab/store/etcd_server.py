"""Running a one-member etcd: the command line a lab supervises, and a throw-away one.

A lab with `store: {backend: etcd}` and no endpoints runs its own etcd inside the
control-plane node, as kubeadm runs etcd as a static pod there. Tests and the
client benchmark run a throw-away member on loopback (`LocalEtcd`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from netlab.errors import StoreError
from netlab.store.etcd import EtcdStore

CLIENT_PORT = 2379  # etcd's registered ports, as on a kubeadm control plane
PEER_PORT = 2380
# The lab writes every pod and slice of a sync in one txn; etcd's default of 128 ops
# per txn and 1.5 MiB per request is kube-apiserver's one-object-per-txn budget.
MAX_TXN_OPS = 100_000
MAX_REQUEST_BYTES = 10 * 1024 * 1024


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def member_argv(name: str, data_dir: str, address: str, client_port: int = CLIENT_PORT,
                peer_port: int = PEER_PORT) -> list[str]:
    """The etcd command line of a single-member cluster listening on address."""
    binary = etcd_binary()
    if binary is None:
        raise StoreError("etcd is not installed (apt-get install etcd-server, or "
                         "scripts/install)")
    client = f"http://{address}:{client_port}"
    peer = f"http://{address}:{peer_port}"
    return [binary, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
            "--logger", "zap", "--log-level", "warn"]


def wait_ready(endpoint: str, timeout: float, *, netns: str | None = None,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the member answers a read (it has a leader), or raise StoreError."""
    deadline = time.monotonic() + timeout
    store = EtcdStore([endpoint], netns=netns, timeout=1.0)
    try:
        while True:
            try:
                store.revision()
                return
            except StoreError as exc:
                if proc is not None and proc.poll() is not None:
                    raise StoreError(f"etcd exited with {proc.returncode}") from exc
                if time.monotonic() > deadline:
                    raise StoreError(f"etcd at {endpoint} not ready after {timeout:.0f}s: "
                                     f"{exc}") from exc
                time.sleep(0.05)
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalEtcd:
    """A throw-away etcd on 127.0.0.1 with free ports and a temp data dir.

    `stop()` then `start()` again keeps the data and ports: an outage, not a new cluster.
    """

    data_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="netlab-etcd-"))
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def start(self, timeout: float = 20.0) -> None:
        argv = member_argv("local", f"{self.data_dir}/member", "127.0.0.1", self.client_port,
                           self.peer_port)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(f"{self.data_dir}/etcd.log", "ab"))  # noqa: SIM115
        wait_ready(self.endpoint, timeout, proc=self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.remove()
