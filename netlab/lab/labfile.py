"""The lab file: what a user writes to describe a lab, validated before anything runs.

A pydantic model (unknown keys are errors, so a typo never silently falls back to
a default), plus the cross-field rules a model cannot express per field: one
control-plane node, non-overlapping address ranges, node addresses inside the
underlay. Every error names the file, the line and the field. Defaults are the
kubeadm/flannel values (DESIGN.md), and node addresses not given are handed out
in file order from .2 up, skipping the gateway and the ext client.

One control-plane node, exactly: netlab runs one control-plane process and its
store is the only channel between components, as kube-apiserver is; several
control-plane nodes would model HA that nothing here implements.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from netlab.api import names
from netlab.api.objects import LoadedObject, check_unique, load_manifests
from netlab.api.validation import Checker, show
from netlab.api.yamlsrc import Document, FieldPath, format_path, load_documents
from netlab.errors import LabFileError
from netlab.proxy.ipvs.names import SCHEDULERS

LAB_NAME_MAX = 12
NODE_NAME_MAX = 15

# -- scalar types ------------------------------------------------------------------


def _ipv4(value: Any) -> IPv4Address:
    if not isinstance(value, str):
        raise ValueError("must be an IPv4 address written as a string, like 192.168.10.2")
    try:
        return IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _cidr(value: Any) -> IPv4Network:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError("must be an IPv4 CIDR written as a string, like 10.244.0.0/16")
    try:
        return IPv4Network(value)
    except ValueError:
        pass
    try:
        network = IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 CIDR") from None
    raise ValueError(f"{value!r} has host bits set; did you mean {network}?")


class PortRange(NamedTuple):
    """An inclusive port range, written `30000-32767` as kube-apiserver's flag is."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


def _port_range(value: Any) -> PortRange:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value) if isinstance(value, str) else None
    if not match:
        raise ValueError("must be a port range written like 30000-32767")
    first, last = int(match[1]), int(match[2])
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{value!r} must satisfy 1 <= first <= last <= 65535")
    return PortRange(first, last)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def _duration(value: Any) -> float:
    """A Go duration string (`30s`, `1m30s`, `500ms`), as kube-proxy's config takes it."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a duration string like 30s, 1m30s or 500ms")
    if value == "0":
        return 0.0
    parts = _DURATION_PART.findall(value)
    if "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"{value!r} is not a duration like 30s, 1m30s or 500ms")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """Seconds back to a duration string (`30s`, `500ms`) for state files and messages."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _name(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if problems := names.dns1123_label(value, limit):
            raise ValueError(f"{value!r}: {'; '.join(problems)}")
        return value
    return check


def _label_key(value: str) -> str:
    if problems := names.qualified_name(value):
        raise ValueError(f"label key {value!r}: {problems[0]}")
    return value


def _label_value(value: str) -> str:
    if problems := names.label_value(value):
        raise ValueError(f"label value {value!r}: {problems[0]}")
    return value


def _domain(value: str) -> str:
    if problems := names.dns1123_subdomain(value):
        raise ValueError(problems[0])
    return value


def _upstream(value: str) -> str:
    """A DNS upstream: `1.1.1.1` or `1.1.1.1:53`."""
    host, colon, port = value.partition(":")
    try:
        IPv4Address(host)
    except ValueError:
        raise ValueError(f"{value!r} must be an IPv4 address, optionally with :port") from None
    if colon and not (re.fullmatch(r"\d{1,5}", port) and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r} has an invalid port")
    return value


def _endpoint(value: str) -> str:
    """An etcd client URL: http(s)://host:port."""
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.hostname or not port:
        raise ValueError(f"{value!r} must be a URL like http://192.168.10.2:2379")
    if url.scheme == "https":
        raise ValueError(f"{value!r}: TLS to etcd is not supported yet; use http://")
    return value


IPv4 = Annotated[IPv4Address, BeforeValidator(_ipv4), PlainSerializer(str)]
Cidr = Annotated[IPv4Network, BeforeValidator(_cidr), PlainSerializer(str)]
Ports = Annotated[PortRange, BeforeValidator(_port_range), PlainSerializer(str)]
Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


# -- the model ------------------------------------------------------------------------


class _Model(BaseModel):
    # strict: YAML already typed the values; "24" for an integer is a mistake to report.
    model_config = ConfigDict(extra="forbid", strict=True)


class LabNode(_Model):
    """A node (netns or VM) of the lab."""

    name: Annotated[str, AfterValidator(_name(NODE_NAME_MAX))]
    role: Literal["control-plane", "worker"] = "worker"
    address: IPv4 | None = None
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class Vxlan(_Model):
    vni: int = Field(1, ge=0, le=16_777_215)
    port: int = Field(8472, ge=1, le=65535)


class Underlay(_Model):
    """The network the nodes (and the ext client) share, like the Vagrant private network."""

    cidr: Cidr = IPv4Network("192.168.10.0/24")
    mtu: int = Field(1500, ge=1280, le=9000)
    gateway: IPv4 | None = None


class Network(_Model):
    pod_cidr: Cidr = Field(IPv4Network("10.244.0.0/16"), alias="podCIDR")
    node_subnet_len: int = Field(24, ge=1, le=30, alias="nodeSubnetLen")
    service_cidr: Cidr = Field(IPv4Network("10.96.0.0/12"), alias="serviceCIDR")
    backend: Literal["vxlan", "host-gw"] = "vxlan"
    vxlan: Vxlan = Field(default_factory=Vxlan)
    underlay: Underlay = Field(default_factory=Underlay)
    node_port_range: Ports = Field(PortRange(30000, 32767), alias="nodePortRange")
    cluster_domain: Annotated[str, AfterValidator(_domain)] = Field(
        "cluster.local", alias="clusterDomain")


class IpvsProxy(_Model):
    """KubeProxyConfiguration's `ipvs:` section: the scheduler every virtual server uses."""

    scheduler: Literal[SCHEDULERS] = "rr"  # type: ignore[valid-type]


class Proxy(_Model):
    mode: Literal["iptables", "ipvs", "nftables"] = "iptables"
    sync_period: Duration = Field(30.0, alias="syncPeriod")
    min_sync_period: Duration = Field(1.0, alias="minSyncPeriod")
    ipvs: IpvsProxy = Field(default_factory=IpvsProxy)


class Dns(_Model):
    enabled: bool = True
    replicas: int = Field(2, ge=1, le=10)
    cluster_ip: IPv4 | None = Field(None, alias="clusterIP")
    ttl: int = Field(30, ge=0, le=3600)
    upstreams: list[Annotated[str, AfterValidator(_upstream)]] = Field(default_factory=list)


class Ext(_Model):
    """The client outside the cluster (on the underlay, not a node)."""

    address: IPv4 | None = None


class Store(_Model):
    """Where the objects live. `etcd` without endpoints: the lab runs its own etcd
    member inside the control-plane node, as kubeadm does."""

    backend: Literal["sqlite", "etcd"] = "sqlite"
    endpoints: list[Annotated[str, AfterValidator(_endpoint)]] = Field(default_factory=list)


def _default_nodes() -> list[LabNode]:
    return [LabNode(name="control-plane", role="control-plane"),
            LabNode(name="worker-1"), LabNode(name="worker-2")]


class Lab(_Model):
    """A validated lab file, with every default and node address filled in.

    `load_lab` also loads the manifests it lists (`objects`); a Lab built with
    `Lab.model_validate(data)` has the same checks except for the manifests.
    """

    name: Annotated[str, AfterValidator(_name(LAB_NAME_MAX))] = "default"
    nodes: list[LabNode] = Field(default_factory=_default_nodes)
    node_backend: Literal["netns", "vm"] = Field("netns", alias="nodeBackend")
    network: Network = Field(default_factory=Network)
    proxy: Proxy = Field(default_factory=Proxy)
    dns: Dns = Field(default_factory=Dns)
    ext: Ext = Field(default_factory=Ext)
    manifests: list[str] = Field(default_factory=list)
    store: Store = Field(default_factory=Store)

    _source: Path | None = PrivateAttr(None)
    _base_dir: Path | None = PrivateAttr(None)
    _objects: list[LoadedObject] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve(self) -> Lab:
        _check_nodes(self)
        _check_network(self)
        _resolve_underlay(self)
        _check_services(self)
        return self

    @property
    def source(self) -> Path | None:
        """The lab file this came from (None when built from data)."""
        return self._source

    @property
    def objects(self) -> list[LoadedObject]:
        """The validated objects of every manifest, in file order."""
        return list(self._objects)

    @property
    def manifest_paths(self) -> list[Path]:
        """The manifests, resolved against the lab file's folder."""
        base = self._base_dir or Path.cwd()
        return [base / m for m in self.manifests]

    @property
    def node_ips(self) -> dict[str, IPv4Address]:
        """Node name -> underlay address, in file order."""
        return {node.name: _resolved(node.address) for node in self.nodes}

    @property
    def control_plane(self) -> LabNode:
        return next(node for node in self.nodes if node.role == "control-plane")

    @property
    def workers(self) -> list[LabNode]:
        return [node for node in self.nodes if node.role == "worker"]

    @property
    def gateway(self) -> IPv4Address:
        return _resolved(self.network.underlay.gateway)

    @property
    def ext_address(self) -> IPv4Address:
        return _resolved(self.ext.address)

    @property
    def dns_ip(self) -> IPv4Address:
        return _resolved(self.dns.cluster_ip)

    def renamed(self, name: str) -> Lab:
        """The same lab under another name (`up --name`), its loaded manifests kept.

        Raises LabFileError when the name is not a valid lab name.
        """
        ck = Checker(str(self._source or "<lab>"), None, LabFileError)
        lab = _validated({**self.model_dump(by_alias=True), "name": name}, ck)
        lab._source, lab._base_dir = self._source, self._base_dir
        lab._objects = list(self._objects)
        return lab

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def _resolved(address: IPv4Address | None) -> IPv4Address:
    if address is None:
        raise RuntimeError("Lab addresses are resolved during validation")
    return address


# -- cross-field rules ---------------------------------------------------------------


class _FieldProblem(LabFileError):
    """A cross-field rule broken at `path`; load_lab adds file and line."""

    def __init__(self, path: FieldPath, reason: str) -> None:
        super().__init__(reason, field=format_path(path))
        self.path = path


def _check_nodes(lab: Lab) -> None:
    control = [i for i, node in enumerate(lab.nodes) if node.role == "control-plane"]
    if not control:
        raise _FieldProblem(("nodes",), "needs exactly one node with role control-plane")
    if len(control) > 1:
        raise _FieldProblem(("nodes", control[1], "role"),
                            f"only one control-plane node is supported "
                            f"(nodes[{control[0]}] is the control plane)")
    if not lab.workers:
        raise _FieldProblem(("nodes",), "needs at least one node with role worker")
    seen: dict[str, int] = {}
    for i, node in enumerate(lab.nodes):
        if node.name in seen:
            raise _FieldProblem(("nodes", i, "name"), f"Duplicate value: {node.name!r} "
                                f"(also nodes[{seen[node.name]}].name)")
        seen[node.name] = i


_RANGES = (("network", "podCIDR"), ("network", "serviceCIDR"), ("network", "underlay", "cidr"))
_RANGE_ATTRS = (("network", "pod_cidr"), ("network", "service_cidr"),
                ("network", "underlay", "cidr"))


def _given(model: BaseModel, attrs: tuple[str, ...]) -> bool:
    """Did the user write this field (rather than take the default)?"""
    for attr in attrs:
        if attr not in model.model_fields_set:
            return False
        model = getattr(model, attr)
    return True


def _check_network(lab: Lab) -> None:
    net = lab.network
    ranges = (net.pod_cidr, net.service_cidr, net.underlay.cidr)
    for i, later in enumerate(ranges):
        for j in range(i):
            if later.overlaps(ranges[j]):
                # Blame a field the user wrote; a default is not the mistake to point at.
                blame, other = (i, j) if _given(lab, _RANGE_ATTRS[i]) else (j, i)
                raise _FieldProblem(_RANGES[blame], f"{ranges[blame]} overlaps "
                                    f"{format_path(_RANGES[other])} ({ranges[other]})")
    path = ("network", "nodeSubnetLen")
    if net.node_subnet_len <= net.pod_cidr.prefixlen:
        raise _FieldProblem(path, f"/{net.node_subnet_len} must be longer than podCIDR's "
                            f"/{net.pod_cidr.prefixlen}, so each node gets a part of it")
    subnets = 2 ** (net.node_subnet_len - net.pod_cidr.prefixlen)
    if subnets < len(lab.nodes):
        raise _FieldProblem(path, f"podCIDR {net.pod_cidr} holds {subnets} /"
                            f"{net.node_subnet_len} subnets, fewer than the {len(lab.nodes)} "
                            "nodes")
    if lab.proxy.sync_period <= 0:
        raise _FieldProblem(("proxy", "syncPeriod"), "must be greater than 0")
    if lab.proxy.min_sync_period > lab.proxy.sync_period:
        raise _FieldProblem(("proxy", "minSyncPeriod"),
                            f"{format_duration(lab.proxy.min_sync_period)} must not exceed "
                            f"syncPeriod ({format_duration(lab.proxy.sync_period)})")
    if lab.store.backend == "sqlite" and lab.store.endpoints:
        raise _FieldProblem(("store", "endpoints"), "only used with backend etcd")


def _usable(network: IPv4Network, address: IPv4Address) -> bool:
    return address in network and address not in (network.network_address,
                                                   network.broadcast_address)


def _resolve_underlay(lab: Lab) -> None:
    """Gateway, ext client and node addresses: check the given ones, hand out the rest."""
    underlay = lab.network.underlay
    cidr = underlay.cidr
    if cidr.num_addresses < 8:
        raise _FieldProblem(("network", "underlay", "cidr"),
                            f"{cidr} is too small for a lab (use /29 or larger)")
    hosts = cidr.network_address + 1, cidr.broadcast_address - 1
    if underlay.gateway is None:
        underlay.gateway = hosts[0]
    elif not _usable(cidr, underlay.gateway):
        raise _FieldProblem(("network", "underlay", "gateway"),
                            f"{underlay.gateway} is not a host address of {cidr}")
    taken: dict[IPv4Address, str] = {underlay.gateway: "network.underlay.gateway"}

    if lab.ext.address is None:
        wanted = cidr.network_address + 100 if cidr.num_addresses > 101 else hosts[1]
        lab.ext.address = wanted
    ext_path = ("ext", "address")
    _claim(cidr, lab.ext.address, ext_path, taken)

    for i, node in enumerate(lab.nodes):
        if node.address is not None:
            _claim(cidr, node.address, ("nodes", i, "address"), taken)
    candidate = cidr.network_address + 2
    for i, node in enumerate(lab.nodes):
        if node.address is not None:
            continue
        while candidate in taken:
            candidate += 1
        if candidate > hosts[1]:
            raise _FieldProblem(("nodes", i, "address"),
                                f"no free address left in network.underlay.cidr {cidr}")
        node.address = candidate
        taken[candidate] = f"nodes[{i}].address"


def _claim(cidr: IPv4Network, address: IPv4Address, path: FieldPath,
           taken: dict[IPv4Address, str]) -> None:
    if not _usable(cidr, address):
        raise _FieldProblem(path, f"{address} is not a host address of network.underlay.cidr "
                            f"{cidr}")
    if address in taken:
        raise _FieldProblem(path, f"{address} is already used by {taken[address]}")
    taken[address] = format_path(path)


def _check_services(lab: Lab) -> None:
    """The DNS Service IP: default the 10th address of the service range, as kubeadm does;
    the first one belongs to the `kubernetes` Service."""
    cidr = lab.network.service_cidr
    if lab.dns.cluster_ip is None:
        if cidr.num_addresses <= 11:
            raise _FieldProblem(("network", "serviceCIDR"), f"{cidr} is too small")
        lab.dns.cluster_ip = cidr.network_address + 10
    reserved = (cidr.network_address, cidr.network_address + 1, cidr.broadcast_address)
    if lab.dns.cluster_ip not in cidr or lab.dns.cluster_ip in reserved:
        raise _FieldProblem(("dns", "clusterIP"),
                            f"{lab.dns.cluster_ip} must be inside network.serviceCIDR {cidr}, "
                            "and not its first address (the kubernetes Service's)")


# -- loading ----------------------------------------------------------------------------


def load_lab(path: str | Path) -> Lab:
    """Read, validate and resolve a lab file, and load the manifests it lists.

    Raises LabFileError (or ManifestError, for a listed manifest) naming the file,
    line and field; both are LocatedError.
    """
    documents = load_documents(path, LabFileError)
    if not documents:
        raise LabFileError("the lab file is empty", file=str(path))
    if len(documents) > 1:
        raise LabFileError("a lab file holds one YAML document, found more", file=str(path),
                           line=documents[1].line)
    source = Path(path).absolute()
    return lab_from_document(documents[0], source.parent, source_path=source)


def lab_from_data(data: Any, *, source: str = "<lab>", base_dir: Path | None = None) -> Lab:
    """A Lab from plain data (a script's dict), with manifests relative to `base_dir`."""
    if not isinstance(data, dict):
        raise LabFileError("a lab must be a mapping", file=source)
    document = Document(data, source, 0, {(): 1})
    return lab_from_document(document, base_dir or Path.cwd(), with_lines=False)


def lab_from_document(document: Document, base_dir: Path, *, source_path: Path | None = None,
                      with_lines: bool = True) -> Lab:
    """Validate one parsed document as a lab; errors carry its file and lines."""
    ck = Checker(document.source, document.line_of if with_lines else None, LabFileError)
    lab = _validated(document.data, ck)
    lab._source, lab._base_dir = source_path, base_dir
    lab._objects = _load_manifests(lab, ck)
    return lab


def _validated(data: Any, ck: Checker) -> Lab:
    """Lab.model_validate, with pydantic's and our own problems reported through `ck`."""
    try:
        return Lab.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            ck.problem(*_describe(error))
        ck.raise_if_any()
        raise
    except _FieldProblem as exc:
        ck.problem(exc.path, exc.reason)
        ck.raise_if_any()
        raise


def _load_manifests(lab: Lab, ck: Checker) -> list[LoadedObject]:
    objects: list[LoadedObject] = []
    for i, path in enumerate(lab.manifest_paths):
        try:
            exists = path.exists()
        except (OSError, ValueError):
            exists = False
        if not exists:
            ck.problem(("manifests", i), f"no such file: {path}")
            ck.raise_if_any()
        objects += load_manifests(path)
    check_unique(objects)
    return objects


def _describe(error: Any) -> tuple[FieldPath, str]:
    """A pydantic error as (field path by YAML name, reason in our words)."""
    loc = tuple(part for part in error["loc"]
                if isinstance(part, int) or not (part.startswith("function-") or
                                                 part == "[key]"))
    kind, message, value = error["type"], error["msg"], error.get("input")
    message = message.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        return loc, "unknown field" + (f" (expected one of: {', '.join(allowed)})"
                                       if allowed else "")
    if kind == "missing":
        return loc, "Required value"
    if kind == "value_error" or isinstance(value, dict | list):
        return loc, message
    return loc, f"{message} (got {show(value)})"


def _allowed_fields(loc: FieldPath) -> list[str]:
    """The field names valid at `loc`, to suggest when an unknown one is found there."""
    model: type[BaseModel] = Lab
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        annotation = field.annotation
        while typing.get_origin(annotation) is not None and not (
                isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if args else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [f.alias or n for n, f in model.model_fields.items()]
