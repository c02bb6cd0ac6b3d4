"""The Deployment controller: ReplicaSet per template, rollouts, status, cleanup."""

from __future__ import annotations

import copy
import re

from netlab.control import deployments
from netlab.control.deployments import REVISION, TEMPLATE_HASH_LABEL, plan, template_hash
from netlab.control.meta import SAFE_ALPHABET
from tests.unit.control_objects import deployment


def apply(replicasets: list[dict], result: deployments.DeploymentPlan) -> list[dict]:
    """The ReplicaSets after the plan was written (uids and timestamps filled as the store does)."""
    by_name = {rs["metadata"]["name"]: rs for rs in replicasets}
    for rs in result.update:
        by_name[rs["metadata"]["name"]] = rs
    if result.create:
        created = copy.deepcopy(result.create)
        created["metadata"]["uid"] = "uid-" + created["metadata"]["name"]
        created["metadata"]["creationTimestamp"] = f"2024-01-01T00:00:{len(by_name):02}Z"
        by_name[created["metadata"]["name"]] = created
    for rs in result.delete:
        del by_name[rs["metadata"]["name"]]
    return list(by_name.values())


def settle(replicasets: list[dict]) -> list[dict]:
    """Every ReplicaSet's pods come up and become available at once."""
    return [{**rs, "status": {"replicas": n, "readyReplicas": n, "availableReplicas": n}}
            for rs in replicasets if (n := rs["spec"]["replicas"]) is not None]


def converge(deploy: dict, replicasets: list[dict], steps: int = 20) -> list[dict]:
    for _ in range(steps):
        result = plan(deploy, replicasets, set(), {})
        replicasets = settle(apply(replicasets, result))
        if result.deployment:
            deploy = result.deployment
    return replicasets


def counts(replicasets: list[dict]) -> dict[str, int]:
    return {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in replicasets}


def test_template_hash_is_stable_and_written_in_the_safe_alphabet():
    template = deployment("web")["spec"]["template"]
    value = template_hash(template)
    assert value == template_hash(copy.deepcopy(template))
    assert re.fullmatch(f"[{SAFE_ALPHABET}]{{1,10}}", value)
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "netexec:2"
    assert template_hash(changed) != value
    assert template_hash(template, collision_count=1) != value


def test_a_new_deployment_gets_a_replicaset_named_by_its_template_hash():
    deploy = deployment("web", replicas=3)
    result = plan(deploy, [], set(), {})
    rs = result.create
    pod_hash = template_hash(deploy["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["metadata"]["labels"] == {"app": "web", TEMPLATE_HASH_LABEL: pod_hash}
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "web",
                                                      TEMPLATE_HASH_LABEL: pod_hash}}
    assert rs["spec"]["template"]["metadata"]["labels"][TEMPLATE_HASH_LABEL] == pod_hash
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["annotations"][REVISION] == "1"
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", "web",
                                                            "uid-deploy-web")
    progressing = result.deployment["status"]["conditions"][1]
    assert (progressing["type"], progressing["reason"]) == ("Progressing",
                                                            "NewReplicaSetCreated")


def test_scaling_changes_only_the_replica_count_of_the_current_replicaset():
    replicasets = converge(deployment("web", replicas=3), [])
    scaled = plan(deployment("web", replicas=5, generation=2), replicasets, set(), {})
    assert scaled.create is None and len(scaled.update) == 1
    assert scaled.update[0]["spec"]["replicas"] == 5
    assert scaled.update[0]["metadata"]["annotations"][
        deployments.DESIRED_REPLICAS] == "5"
    down = plan(deployment("web", replicas=1, generation=3), replicasets, set(), {})
    assert down.update[0]["spec"]["replicas"] == 1


def test_rolling_update_stays_within_max_surge_and_max_unavailable():
    v1 = deployment("web", replicas=4)
    replicasets = converge(v1, [])
    v2 = deployment("web", replicas=4, image="netexec:2", generation=2)
    seen = []
    for _ in range(20):
        result = plan(v2, replicasets, set(), {})
        replicasets = apply(replicasets, result)
        total = sum(counts(replicasets).values())
        assert total <= 4 + 1  # 25% surge of 4, rounded up
        available = sum(rs.get("status", {}).get("availableReplicas", 0) for rs in replicasets)
        assert available >= 4 - 1  # 25% unavailable of 4, rounded down
        seen.append(tuple(sorted(counts(replicasets).values())))
        replicasets = settle(replicasets)
    new = template_hash(v2["spec"]["template"])
    assert counts(replicasets) == {f"web-{template_hash(v1['spec']['template'])}": 0,
                                   f"web-{new}": 4}
    assert len(set(seen)) > 2  # it went through intermediate steps
    final = plan(v2, replicasets, set(), {}).deployment or v2
    status = final.get("status") or {}
    assert status.get("updatedReplicas") == 4


def test_rollout_completes_with_new_replicaset_available_condition():
    v2 = deployment("web", replicas=2, image="netexec:2", generation=2)
    replicasets = converge(v2, converge(deployment("web", replicas=2), []))
    status = plan(v2, replicasets, set(), {}).deployment["status"]
    assert {c["type"]: c["reason"] for c in status["conditions"]} == {
        "Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}
    assert status["replicas"] == status["updatedReplicas"] == status["availableReplicas"] == 2


def test_going_back_to_an_old_template_reuses_its_replicaset_with_a_new_revision():
    v1, v2 = deployment("web", replicas=2), deployment("web", replicas=2, image="netexec:2")
    replicasets = converge(v1, converge(v2, converge(v1, [])))
    assert len(replicasets) == 2
    current = next(rs for rs in replicasets if rs["spec"]["replicas"] == 2)
    assert current["metadata"]["labels"][TEMPLATE_HASH_LABEL] == template_hash(
        v1["spec"]["template"])
    assert current["metadata"]["annotations"][REVISION] == "3"


def test_recreate_scales_old_pods_away_before_the_new_replicaset_starts():
    strategy = {"type": "Recreate"}
    v1 = deployment("web", replicas=3, strategy=strategy)
    replicasets = converge(v1, [])
    old_uid = replicasets[0]["metadata"]["uid"]
    v2 = deployment("web", replicas=3, image="netexec:2", strategy=strategy)
    first = plan(v2, replicasets, set(), {old_uid: 3})
    assert first.create is None and first.update[0]["spec"]["replicas"] == 0
    replicasets = apply(replicasets, first)
    waiting = plan(v2, replicasets, set(), {old_uid: 2})  # old pods still terminating
    assert waiting.create is None
    started = plan(v2, replicasets, set(), {})
    assert started.create["spec"]["replicas"] == 3


def test_status_sums_the_replicasets_and_reports_unavailability():
    deploy = deployment("web", replicas=3)
    replicasets = apply([], plan(deploy, [], set(), {}))
    replicasets[0]["status"] = {"replicas": 3, "readyReplicas": 1, "availableReplicas": 1}
    status = plan(deploy, replicasets, set(), {}).deployment["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
        "availableReplicas": 1, "unavailableReplicas": 2}
    available = status["conditions"][0]
    assert (available["type"], available["status"], available["message"]) == (
        "Available", "False", "Deployment does not have minimum availability.")


def test_a_settled_deployment_needs_no_write():
    deploy = deployment("web", replicas=2)
    replicasets = converge(deploy, [])
    result = plan(deploy, replicasets, set(), {})
    deploy = result.deployment
    again = plan(deploy, replicasets, set(), {})
    assert (again.create, again.update, again.delete, again.deployment) == (None, [], [], None)


def test_old_replicasets_beyond_the_history_limit_are_pruned():
    deploy = deployment("web", replicas=1, revisionHistoryLimit=2)
    replicasets = []
    for version in range(5):
        replicasets = converge(deployment("web", replicas=1, image=f"v{version}",
                                          revisionHistoryLimit=2), replicasets)
    replicasets = converge(deploy, replicasets)
    revisions = sorted(int(rs["metadata"]["annotations"][REVISION]) for rs in replicasets)
    assert revisions == [4, 5, 6]


def test_a_name_clash_with_a_foreign_replicaset_bumps_collision_count():
    deploy = deployment("web")
    name = f"web-{template_hash(deploy['spec']['template'])}"
    result = plan(deploy, [], {name}, {})
    assert result.create is None
    assert result.deployment["status"]["collisionCount"] == 1
    retry = plan(result.deployment, [], {name}, {})
    assert retry.create["metadata"]["name"] != name

