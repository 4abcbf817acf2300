"""The Dockerfile, compose, alert rules, dashboard and Kubernetes manifests, checked by their tools."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from relay.observability.metrics import RelayMetrics
from tests.support.system import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(BIN / "hadolint")
    done = _run(hadolint, "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_yaml_is_yamllint_clean() -> None:
    done = _run(str(BIN / "yamllint"), "-c", ".yamllint.yaml", "deploy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_validate() -> None:
    manifests = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "servicemonitor.yaml")
    done = _run(str(BIN / "kubernetes-validate"), "--strict", *manifests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") >= len(manifests)


def test_alert_rules_pass_promtool() -> None:
    promtool = require_binary("promtool", package="prometheus")
    done = _run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = len(yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"])
    assert f"{rules} rules found" in done.stdout


def _exported_names() -> set[str]:
    registry = CollectorRegistry()
    RelayMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(relay_[a-z_]+)\b", expr))


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = _exported_names()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "relay.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used, "the dashboard queries no relay metric"
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"


def test_image_runs_as_non_root_with_exec_form_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["relay"]' in text
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert text.count("FROM ") == 2  # multi-stage
    pytest.importorskip("yaml")
