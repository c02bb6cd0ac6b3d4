"""The pytest plugin: a failing packet-trace test prints the traces it made."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE = '''
import pytest

from netlab.trace import api
from netlab.trace.simulate import simulate
from netlab.trace.targets import resolve_destination, resolve_source
from tests.unit import trace_lab


@pytest.fixture(scope="module")
def lab():
    """Stands in for the plugin's lab fixture (no root here): traces are simulated."""
    return object()


@pytest.fixture(autouse=True)
def simulated(monkeypatch):
    view = trace_lab.view()

    def fake(lab, src, dst, **kw):
        return simulate(view, trace_lab.rulesets(), resolve_source(view, src),
                        resolve_destination(view, dst))

    monkeypatch.setattr(api, "trace", fake)


def test_expects_the_wrong_verdict(trace):
    t = trace("a", "empty")
    assert t.verdict == "DELIVERED"


def test_passes(trace):
    assert trace("a", "web").dnat.k8s_ref.service == "default/web"
'''


def test_a_failing_trace_test_prints_the_rendered_trace(tmp_path: Path):
    (tmp_path / "test_example.py").write_text(textwrap.dedent(EXAMPLE))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT),
                                                           "PATH": "/usr/bin:/bin"})
    out = result.stdout
    assert "1 failed, 1 passed" in out, out
    assert "netlab traces" in out
    assert "svc default/empty:http 80/TCP" in out
    assert "REJECTED" in out and "has no endpoints" in out
