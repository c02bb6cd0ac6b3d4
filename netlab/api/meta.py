"""ObjectMeta: name and namespace rules, labels, and the fields the system sets.

The API server owns uid, creationTimestamp, generation and resourceVersion; a
manifest copied from `get -o yaml` carries stale ones, so they are replaced (with
a note) rather than trusted. The store sets resourceVersion when it writes.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from netlab.api import names
from netlab.api.selectors import check_labels
from netlab.api.validation import SYSTEM, Checker

_META_FIELDS = ("name", "generateName", "namespace", "labels", "annotations",
                "ownerReferences", "finalizers")
_SYSTEM_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp",
                  "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink")
# The alphabet apiserver uses for generateName suffixes (no vowels, no look-alikes).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SUFFIX_LEN = 5

NameCheck = Callable[[str], list[str]]


def now_rfc3339() -> str:
    """A timestamp the way Kubernetes writes creationTimestamp: seconds, UTC, `Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_metadata(ck: Checker, obj: dict, name_check: NameCheck, namespaced: bool) -> None:
    """Validate and default obj["metadata"] in place."""
    path = ("metadata",)
    meta = ck.mapping(obj, "metadata", ())
    if meta is None:
        if "metadata" in obj and obj["metadata"] is not None:
            return
        meta = obj["metadata"] = {}
    system = {key: SYSTEM for key in _SYSTEM_FIELDS}
    ck.fields(meta, path, _META_FIELDS, system)
    for key in _SYSTEM_FIELDS:
        meta.pop(key, None)

    _check_name(ck, meta, name_check)
    if namespaced:
        if meta.get("namespace") in (None, ""):
            meta["namespace"] = "default"
        elif (namespace := ck.string(meta, "namespace", path)) is not None:
            ck.names((*path, "namespace"), namespace, names.dns1123_label(namespace))
    elif meta.get("namespace") is not None:
        ck.note((*path, "namespace"), "ignored (the object is not namespaced)")
        del meta["namespace"]

    check_labels(ck, meta, "labels", path)
    meta.setdefault("labels", {})
    annotations = ck.string_map(meta, "annotations", path)
    for key in annotations or {}:
        ck.names((*path, "annotations", key), key, names.qualified_name(key))
    ck.string_list(meta, "finalizers", path)
    ck.sequence(meta, "ownerReferences", path)

    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    meta["generation"] = 1


def _check_name(ck: Checker, meta: dict, name_check: NameCheck) -> None:
    path = ("metadata",)
    name = ck.string(meta, "name", path)
    generate = ck.string(meta, "generateName", path)
    if name:
        ck.names((*path, "name"), name, name_check(name))
    elif generate:
        name = generate + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(_SUFFIX_LEN))
        if ck.names((*path, "generateName"), generate, name_check(name)):
            meta["name"] = name
    elif meta.get("name") in (None, "") and meta.get("generateName") in (None, ""):
        ck.required((*path, "name"), "name or generateName is required")
