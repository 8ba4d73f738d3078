"""examples/monitoring: the Grafana dashboard and the alert rules are
built on exactly the metric names popframe exports
(popframe.ops.metrics.FAMILIES), and promtool accepts the rules, the
Prometheus configuration and the rules' own unit tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from popframe.ops.metrics import FAMILIES

pytestmark = pytest.mark.core

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "monitoring"
DASHBOARD = EXAMPLES / "popframe-dashboard.json"
ALERTS = EXAMPLES / "popframe-alerts.yml"
_SELECTOR = re.compile(r"\b(popframe_[a-z_]+)\b(\{[^}]*\})?")
_LABEL = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def names() -> dict[str, tuple[str, ...]]:
    """Every series name the page shows, with the labels it may carry."""
    found = {}
    for family in FAMILIES:
        if family.kind == "histogram":
            found[family.name + "_bucket"] = (*family.labels, "le")
            found[family.name + "_sum"] = family.labels
            found[family.name + "_count"] = family.labels
        else:
            found[family.name] = family.labels
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"]
                   for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            expressions.append(variable["query"]["query"])
    return expressions


def alert_expressions() -> list[str]:
    return re.findall(r"^\s+expr: (.+)$", ALERTS.read_text(), re.MULTILINE)


def used(expressions: list[str]) -> set[str]:
    """The popframe series names in ``expressions``, each checked: known,
    and selected only by labels it has."""
    known = names()
    seen = set()
    for expression in expressions:
        for name, selector in _SELECTOR.findall(expression):
            assert name in known, f"{name} in {expression!r} is not a popframe metric"
            allowed = {*known[name], "instance", "job"}
            for label in _LABEL.findall(selector or ""):
                assert label in allowed, f"{name} has no label {label} ({expression!r})"
            seen.add(name)
    return seen


def test_the_dashboard_shows_every_metric_by_its_exported_name() -> None:
    seen = used(dashboard_expressions())
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in seen}
    assert families == {f.name for f in FAMILIES}


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


def test_the_alerts_use_exported_names() -> None:
    seen = used(alert_expressions())
    assert {"popframe_backend_errors_total", "popframe_logins_total",
            "popframe_tls_certificate_expiry_timestamp_seconds"} <= seen


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (tests/run.sh installs the prometheus package)")
        pytest.skip("promtool is not installed")
    return found


@pytest.mark.external
@pytest.mark.parametrize("command", [
    ["check", "rules", "popframe-alerts.yml"],
    ["check", "config", "prometheus.yml"],
    ["test", "rules", "popframe-alerts.test.yml"],
])
def test_promtool_accepts_the_examples(command: list[str]) -> None:
    done = subprocess.run([promtool(), *command], cwd=EXAMPLES, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
