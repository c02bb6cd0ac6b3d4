"""How many pods a lab's manifests run, and the ARP-table warning `up` prints."""

from netlab.lab import capacity


def test_pods_count_pods_and_workload_replicas_and_dns():
    manifests = [
        {"kind": "Pod"},
        {"kind": "Deployment", "spec": {"replicas": 5}},
        {"kind": "ReplicaSet", "spec": {}},  # replicas default to 1, as in Kubernetes
        {"kind": "Service"},
        {"kind": "Namespace"},
    ]
    assert capacity.pods_in(manifests, dns_replicas=2) == 1 + 5 + 1 + 2


def test_warns_only_when_the_shared_arp_table_would_overflow(monkeypatch):
    monkeypatch.setattr(capacity, "neighbour_room", lambda: (200, 1024))
    assert capacity.too_many_pods(300) is None  # 200 + 600 + margin fits in 1024
    reason = capacity.too_many_pods(400)
    assert reason is not None
    assert "800 ARP entries" in reason and "gc_thresh3=1024" in reason


def test_reads_the_kernels_table():
    entries, limit = capacity.neighbour_room()
    assert entries >= 0 and limit > 0
