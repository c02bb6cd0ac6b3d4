"""Object metadata the controllers write: generated names, owner references, conditions.

Names and references follow apimachinery so that `kubectl get pods` in the lab shows
what a real cluster shows: `web-7c9d8b5f4d-x2v9k` (generateName with a 5-character
suffix), owner references that `kubectl describe` can follow, and conditions whose
timestamps move only when something changed.
"""

from __future__ import annotations

import secrets
from typing import Any

from netlab.api.meta import now_rfc3339

Obj = dict[str, Any]

# apimachinery's util/rand alphabet: no vowels (no accidental words), no 0/1/3 look-alikes.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SUFFIX_LEN = 5
_MAX_GENERATED_BASE = 58  # 63 (a DNS label) less the random suffix


def random_suffix(length: int = _SUFFIX_LEN) -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(length))


def generated_name(base: str) -> str:
    """What the API server makes of `generateName: base`: base (cut to 58) + 5 random."""
    return base[:_MAX_GENERATED_BASE] + random_suffix()


def safe_encode(text: str) -> str:
    """apimachinery's rand.SafeEncodeString: each byte mapped onto SAFE_ALPHABET."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in text.encode())


def controller_reference(owner: Obj) -> Obj:
    """The ownerReference a controller puts on what it creates (garbage collection follows it)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference marked controller: true, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def controller_uid(obj: Obj) -> str | None:
    ref = controller_of(obj)
    return None if ref is None else ref.get("uid")


def labels_of(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def ns_name(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "default", meta["name"]


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def set_condition(status: Obj, new: Obj, *, update_time: bool = False) -> None:
    """Put a condition into status.conditions, keeping its timestamps when nothing moved.

    lastTransitionTime changes only when `status` flips (as the API conventions say);
    with update_time, lastUpdateTime (a Deployment's extra field) changes when the
    reason or message does.
    """
    conditions = status.setdefault("conditions", [])
    old = next((c for c in conditions if c.get("type") == new["type"]), None)
    now = now_rfc3339()
    cond = dict(new)
    same_status = old is not None and old.get("status") == new["status"]
    cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same_status else now
    if update_time:
        unchanged = same_status and all(old.get(k) == new.get(k) for k in ("reason", "message"))
        cond["lastUpdateTime"] = old.get("lastUpdateTime", now) if unchanged else now
    if old is None:
        conditions.append(cond)
    else:
        conditions[conditions.index(old)] = {**old, **cond}
