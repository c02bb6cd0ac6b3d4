"""`knetlab get|apply|delete|describe --store URL`: a cluster without a local lab state dir.

The store here is an embedded one in a temp dir, published to as a control plane
does; the commands cannot tell it from a remote etcd (same URL-opened Store).
"""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from netlab.api.cluster import ClusterConfig
from netlab.cli import remote
from netlab.cli.main import main
from netlab.control.apply import bootstrap
from netlab.store import clusterconfig, open_store
from netlab.store.objects import Objects

WEB = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}}},
       {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A store a control plane has bootstrapped; no local lab on this 'host'."""
    monkeypatch.setenv("KNETLAB_STATE_ROOT", str(tmp_path / "no-labs"))
    monkeypatch.delenv(remote.STORE_ENV, raising=False)
    url = f"sqlite://{tmp_path}/store.db"
    with open_store(url) as store:
        config = ClusterConfig(lab="faraway", service_cidr="10.100.0.0/16",
                               dns_cluster_ip="10.100.0.10")
        clusterconfig.publish(store, config)
        bootstrap(Objects(store), config)
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump_all(WEB))
    return url, str(manifest)


def knetlab(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_apply_get_describe_delete_through_store_option(cluster):
    url, manifest = cluster
    applied = knetlab("apply", "-f", manifest, "--store", url)
    assert applied.exit_code == 0, applied.output
    assert applied.output.splitlines() == ["deployment/web created", "service/web created"]
    services = knetlab("get", "svc", "--store", url)
    assert "web" in services.output and "10.100." in services.output  # the store's range
    described = knetlab("describe", "svc", "web", "--store", url)
    assert described.exit_code == 0 and "Selector:" in described.output
    deleted = knetlab("delete", "svc", "web", "--store", url)
    assert deleted.output.strip() == "service/web deleted"


def test_the_environment_variable_names_the_store(cluster):
    url, manifest = cluster
    knetlab("apply", "-f", manifest, "--store", url)
    got = knetlab("get", "deploy", "-o", "name", env={remote.STORE_ENV: url})
    assert got.output.strip() == "deployment/web"


def test_a_cluster_machine_uses_the_units_environment_file(cluster, tmp_path, monkeypatch):
    url, _ = cluster
    env_file = tmp_path / "knetlab.env"
    env_file.write_text(f'# written by scripts/provision\nKNETLAB_NODE=cp\nKNETLAB_STORE="{url}"\n')
    monkeypatch.setattr(remote, "ENV_FILE", str(env_file))
    got = knetlab("get", "ns", "-o", "name")
    assert "namespace/kube-system" in got.output.splitlines()


def test_a_store_no_control_plane_published_to_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv(remote.STORE_ENV, raising=False)
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump_all(WEB))
    result = knetlab("apply", "-f", str(manifest), "--store", f"sqlite://{tmp_path}/empty.db")
    assert result.exit_code == 1
    assert "holds no cluster config" in result.output and "knetlab control-plane" in result.output


def test_name_and_store_together_are_refused(cluster):
    url, _ = cluster
    result = knetlab("get", "pods", "--name", "lab", "--store", url)
    assert result.exit_code == 2 and "not both" in result.output
