"""pytest plugin (entry point `pytest11: netlab`): packet-trace tests in a few lines.

    netlab_lab = "topologies/default.yaml"          # or a lab file's data as a dict
    netlab_lab_name = "mylab"                        # optional
    netlab_manifests = [client_pod, web, web_svc]    # optional: applied, then waited for

    def test_clusterip_is_dnatted_to_the_endpoint(trace):
        t = trace("client", "web", port=80)
        assert t.verdict == "DELIVERED"
        assert t.dnat.k8s_ref.service == "default/web"
        assert t.encapsulated(vni=1)

`lab` brings the module's lab up once (module scope) and always takes it down,
also when a test or the set-up fails (`--netlab-keep` keeps it for inspection).
`trace` returns a function that traces in that lab; when a test fails, every
trace it made is printed, rendered, in the report. Imports stay light: nothing
here loads scapy until a trace runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from netlab.trace.model import Trace

TRACES_KEY = pytest.StashKey[list[Trace]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netlab", "kube-netlab packet traces")
    group.addoption("--netlab-keep", action="store_true", default=False,
                    help="leave the labs of the `lab` fixture up after the tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netlab: uses a kube-netlab lab (needs root)")


def services_programmed(lab: Any) -> bool:
    """Every Service port has its rules (or its no-endpoints verdict) on every node.

    iptables mode: the port's `cluster IP` or `has no (local) endpoints` comment in
    iptables-legacy-save. nftables mode: a chain named for the port
    (`service-HASH-ns/name/proto/port`) or a no-endpoint map element commented with it.
    """
    from netlab.trace.observe import nft_table_text, ruleset_text

    nft = lab.config.proxy_mode == "nftables"
    wanted: list[tuple[str, str]] = []  # (iptables/nft comment, nft chain part)
    for svc in lab.objects.list("Service", None)[0]:
        spec = svc.get("spec") or {}
        if not spec.get("clusterIP") or spec.get("clusterIP") == "None":
            continue
        key = f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"
        for port in spec.get("ports") or []:
            name = port.get("name") or ""
            proto = str(port.get("protocol", "TCP")).lower()
            wanted.append((f"{key}:{name}" if name else key, f"{key}/{proto}/{name}"))
    for node in lab.info["nodes"]:
        if nft:
            text = nft_table_text(node["netns"])
            if any(f"-{chain}" not in text and f'comment "{comment}"' not in text
                   for comment, chain in wanted):
                return False
            continue
        text = ruleset_text(node["netns"])
        if any(f'"{w} cluster IP"' not in text and f'"{w} has no endpoints"' not in text
               and f'"{w} has no local endpoints"' not in text for w, _ in wanted):
            return False
    return True


def bring_up(source: str | dict[str, Any], name: str | None = None,
             manifests: list[dict[str, Any]] | None = None, timeout: float = 60) -> Any:
    """A RunningLab with `manifests` applied, every pod Ready and every Service programmed.

    On any failure after the lab exists, the lab is taken down before raising.
    """
    from netlab.lab import lifecycle
    from netlab.lab.session import start_lab

    lab = start_lab(source, name)
    try:
        if manifests:
            lab.apply(manifests)
        lab.wait_ready(timeout)
        lab.wait_for(lambda: services_programmed(lab), timeout=timeout,
                     what="kube-proxy rules for every Service")
    except BaseException:
        lifecycle.down(lab.name)
        raise
    return lab


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The module's lab (`netlab_lab`, `netlab_lab_name`, `netlab_manifests`), up once."""
    from netlab.lab import lifecycle

    source = getattr(request.module, "netlab_lab", None)
    if source is None:
        raise pytest.UsageError(f"{request.module.__name__}: set `netlab_lab` (a lab file "
                                "path or its data) to use the `lab` fixture")
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    running = bring_up(source, getattr(request.module, "netlab_lab_name", None),
                       list(getattr(request.module, "netlab_manifests", []) or []))
    try:
        yield running
    finally:
        if not request.config.getoption("--netlab-keep"):
            lifecycle.down(running.name)


@pytest.fixture
def trace(request: pytest.FixtureRequest, lab: Any) -> Callable[..., Trace]:
    """`trace(src, dst, port=, proto=, mode="live"|"simulated"|"diff", size=, ...) -> Trace`."""
    from netlab.trace.api import trace as run_trace

    made: list[Trace] = []
    request.node.stash[TRACES_KEY] = made

    def traced(src: str, dst: str, **kwargs: Any) -> Trace:
        result = run_trace(lab, src, dst, **kwargs)
        made.append(result)
        return result

    return traced


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    traces = item.stash.get(TRACES_KEY, [])
    if report.failed and traces:  # type: ignore[attr-defined]
        text = "\n\n".join(t.rendered("detailed") for t in traces)
        report.sections.append(("netlab traces", text))  # type: ignore[attr-defined]
    del call
    return report

