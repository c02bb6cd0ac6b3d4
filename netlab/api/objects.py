"""Manifests in, validated Kubernetes objects out: the API server's admission step.

Objects stay plain dicts, the shape we store and print with `get -o yaml`.
`validate_object` checks and defaults one object as kube-apiserver would on
create; `load_manifests` does that for every document of a file (or a folder of
files, as `kubectl apply -f dir/`) and returns nothing unless everything is valid,
so a lab never starts half-made.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.api import keys, names
from netlab.api.meta import NameCheck, check_metadata
from netlab.api.service import SERVICE_NAME, check_service
from netlab.api.validation import Checker, LineOf, check_plain, show
from netlab.api.workloads import DEPLOYMENT_NAME, POD_NAME, check_deployment, check_pod
from netlab.api.yamlsrc import Document, FieldPath, load_documents, parse_documents
from netlab.errors import ManifestError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")


def _check_namespace(ck: Checker, obj: dict) -> None:
    """Namespace: optional spec.finalizers; the API server marks it Active and labels it
    with its own name (`kubernetes.io/metadata.name`), which selectors rely on."""
    spec = ck.mapping(obj, "spec", ())
    if spec is None and obj.get("spec") is None:
        spec = obj["spec"] = {}
    if spec is not None:
        ck.fields(spec, ("spec",), ("finalizers",))
        if ck.string_list(spec, "finalizers", ("spec",)) is None:
            spec.setdefault("finalizers", ["kubernetes"])
    if obj.get("status") is not None:
        ck.note(("status",), "ignored (status is written by netlab)")
    obj["status"] = {"phase": "Active"}
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict) and meta.get("name"):
        meta["labels"]["kubernetes.io/metadata.name"] = meta["name"]


_KINDS: dict[str, tuple[NameCheck, Callable[[Checker, dict], None]]] = {
    "Namespace": (names.dns1123_label, _check_namespace),
    "Pod": (POD_NAME, check_pod),
    "Deployment": (DEPLOYMENT_NAME, check_deployment),
    "Service": (SERVICE_NAME, check_service),
}
SUPPORTED_KINDS = tuple(sorted(_KINDS))


@dataclass(frozen=True)
class LoadedObject:
    """A validated object and where it came from (for messages and `apply` summaries)."""

    obj: dict[str, Any]
    source: str
    line: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.obj["metadata"].get("namespace")

    @property
    def key(self) -> str:
        """The store key (`/registry/...`)."""
        return keys.key_of(self.obj)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


def validate_object(obj: Any, source: str = "<object>", *,
                    line_of: LineOf | None = None) -> tuple[dict[str, Any], list[str]]:
    """Validate and default one object; returns (new object, notes). Never mutates `obj`.

    Raises ManifestError naming `source`, the field and (with `line_of`, which maps
    a field path to its line) the line. Notes name fields that are accepted but
    ignored, and unknown fields, which are dropped.
    """
    ck = Checker(source, line_of)
    if not isinstance(obj, dict):
        raise ManifestError("a Kubernetes object must be a mapping", file=source,
                            line=line_of(()) if line_of else None)
    if not check_plain(ck, obj):
        ck.raise_if_any()
    obj = copy.deepcopy(obj)
    kind = _check_kind(ck, obj)
    name_check, check_kind = _KINDS[kind]
    ck.fields(obj, (), _TOP_LEVEL)
    check_metadata(ck, obj, name_check, keys.KINDS[kind].namespaced)
    check_kind(ck, obj)
    ck.raise_if_any()
    ordered = {key: obj[key] for key in _TOP_LEVEL if key in obj}
    return ordered, ck.notes


def _check_kind(ck: Checker, obj: dict) -> str:
    """The kind and apiVersion, which decide everything else, so problems here stop early."""
    kind = ck.string(obj, "kind", (), required="kind not set")
    api_version = ck.string(obj, "apiVersion", (), required="apiVersion not set")
    ck.raise_if_any()
    assert kind is not None and api_version is not None
    if kind not in _KINDS:
        if kind in keys.KINDS:
            detail = (f"netlab's control plane creates {kind} objects itself; manifests may "
                      f"hold {', '.join(SUPPORTED_KINDS)}")
        else:
            detail = f"supported kinds: {', '.join(SUPPORTED_KINDS)}"
        ck.problem(("kind",), f"Unsupported value: {show(kind)}: {detail}")
    elif api_version != keys.KINDS[kind].api_version:
        ck.problem(("apiVersion",), f'no matches for kind "{kind}" in version '
                   f'"{api_version}" (use {keys.KINDS[kind].api_version})')
    ck.raise_if_any()
    return kind


def load_manifests(path: str | Path) -> list[LoadedObject]:
    """Every object in a manifest file, or in the .yaml/.yml/.json files of a folder.

    All or nothing: raises ManifestError for the first file with a problem, and for
    the same object defined twice.
    """
    path = Path(path)
    try:
        is_dir = path.is_dir()
        files = sorted(p for p in path.iterdir()
                       if p.suffix in MANIFEST_SUFFIXES and p.is_file()) if is_dir else [path]
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read: {exc}", file=str(path)) from None
    if not files:
        raise ManifestError(f"no {'/'.join(MANIFEST_SUFFIXES)} files in this folder",
                            file=str(path))
    loaded = []
    for file in files:
        loaded += _objects(load_documents(file, ManifestError))
    check_unique(loaded)
    return loaded


def parse_manifests(text: str, source: str = "<stdin>") -> list[LoadedObject]:
    """Like `load_manifests`, for text already read (e.g. `apply -f -`)."""
    loaded = _objects(parse_documents(text, source, ManifestError))
    check_unique(loaded)
    return loaded


def _objects(documents: list[Document]) -> list[LoadedObject]:
    loaded = []
    for doc in documents:
        if doc.data.get("kind") == "List":
            loaded += _list_items(doc)
        else:
            loaded.append(_validated(doc, ()))
    return loaded


def _list_items(doc: Document) -> list[LoadedObject]:
    """A `kind: List` document (what `get -o yaml` prints for several objects)."""
    items = doc.data.get("items")
    if not isinstance(items, list):
        raise ManifestError("must be a list of objects", file=doc.source, field="items",
                            line=doc.line_of(("items",)))
    return [_validated(doc, ("items", i)) for i in range(len(items))]


def _validated(doc: Document, at: FieldPath) -> LoadedObject:
    data: Any = doc.data
    for part in at:
        data = data[part]

    def line_of(path: FieldPath) -> int:
        return doc.line_of((*at, *path))

    obj, notes = validate_object(data, doc.source, line_of=line_of)
    return LoadedObject(obj, doc.source, line_of(()), tuple(notes))


def check_unique(objects: list[LoadedObject]) -> None:
    """The same kind/namespace/name twice is a mistake (create would fail on the second)."""
    seen: dict[str, LoadedObject] = {}
    for item in objects:
        first = seen.setdefault(item.key, item)
        if first is not item:
            where = f"{item.kind} {item.namespace + '/' if item.namespace else ''}{item.name}"
            raise ManifestError(f"Duplicate value: {where} is also defined at {first.where}",
                                file=item.source, field="metadata.name", line=item.line)
