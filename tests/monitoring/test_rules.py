"""The shipped alert rules, their promtool unit tests, and the scrape example pass promtool offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MON = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MON / "prometheus" / "sealfuse-alerts.yml"
ALERTS = {"SealfuseDown", "SealfuseQueueStuck", "SealfuseFailureRatioHigh", "SealfuseWorkerRestarting",
          "SealfuseServiceRestarting", "SealfuseSpoolDiskSpaceLow", "NodeDiskSpaceLow",
          "NodeClockSkew", "NodeClockNotSynchronising", "SealfuseSlurmCommandsFailing"}

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="needs promtool (Debian's prometheus package)")


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_alert_rules_are_valid_and_every_alert_is_unit_tested() -> None:
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(ALERTS)} rules found" in r.stdout
    tested = (MON / "prometheus" / "sealfuse-alerts.test.yml").read_text()
    assert {a for a in ALERTS if f"alertname: {a}\n" in tested} == ALERTS


def test_promtool_rule_unit_tests_pass() -> None:
    r = _promtool("test", "rules", "sealfuse-alerts.test.yml", cwd=MON / "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_a_broken_rule_expectation_is_caught_by_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests are not vacuous: raising the failure-ratio threshold makes them fail."""
    shutil.copy(MON / "prometheus" / "sealfuse-alerts.test.yml", tmp_path)
    text = RULES.read_text()
    assert ") > 0.25\n" in text
    (tmp_path / "sealfuse-alerts.yml").write_text(text.replace(") > 0.25\n", ") > 0.75\n"))
    r = _promtool("test", "rules", "sealfuse-alerts.test.yml", cwd=tmp_path)
    assert r.returncode != 0
    assert "SealfuseFailureRatioHigh" in r.stdout + r.stderr


def test_scrape_example_is_a_valid_prometheus_config_loading_the_rules() -> None:
    r = _promtool("check", "config", str(MON / "prometheus" / "scrape-example.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sealfuse-alerts.yml" in r.stdout and f"{len(ALERTS)} rules found" in r.stdout
