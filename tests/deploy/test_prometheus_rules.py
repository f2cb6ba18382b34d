"""Prometheus configuration and rules through the real promtool (Debian prometheus package):
config and rules check, the rule unit tests, and a mutated rule that the unit tests must catch."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.conftest import ROOT

PROM = ROOT / "deploy" / "prometheus"


def promtool(*args, cwd=PROM) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: apt-get install -y --no-install-recommends prometheus"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_scrape_config_is_valid_and_covers_every_service_and_triton():
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
    text = (PROM / "prometheus.yml").read_text()
    for job, port in (("genir-orchestrator", 9100), ("genir-generator", 9101), ("genir-refiner", 9102),
                      ("genir-retriever", 9103), ("genir-eval", 9104), ("triton", 8002)):
        assert f"job_name: {job}" in text and f'"127.0.0.1:{port}"' in text, job


def test_rules_are_valid():
    out = promtool("check", "rules", "rules/genir.rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 23 rules found" in out.stdout


def test_rule_unit_tests_pass_and_cover_every_rule():
    out = promtool("test", "rules", "tests/genir.rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    import yaml

    rules = [r for g in yaml.safe_load((PROM / "rules/genir.rules.yml").read_text())["groups"] for r in g["rules"]]
    tests = (PROM / "tests/genir.rules.test.yml").read_text()
    for r in rules:
        if "alert" in r:
            assert f"alertname: {r['alert']}" in tests, r["alert"]
        else:
            assert f"expr: {r['record']}\n" in tests, r["record"]


@pytest.mark.parametrize("old,new", [
    ("genir:grpc_server_error_ratio:rate5m > 0.05", "genir:grpc_server_error_ratio:rate5m > 0.2"),
    ('grpc_code=~"UNKNOWN|INTERNAL|UNAVAILABLE', 'grpc_code=~"INVALID_ARGUMENT|UNKNOWN|INTERNAL|UNAVAILABLE'),
    ("histogram_quantile(0.95, sum by (namespace, le, stage)", "histogram_quantile(0.90, sum by (namespace, le, stage)"),
    ('up{job=~"genir-.*|triton", job!="genir-eval"} == 0', 'up{job=~"genir-.*|triton"} == 0 unless up{job="genir-retriever"}'),
    # problem 9 of issue 16, one mutation each: the idle eval target pages again; namespaces mix;
    # a vanished target goes unnoticed; burn-rate thresholds drift; the SLO threshold bucket moves
    ('job!="genir-eval"', 'job!="genir-none"'),
    ("sum by (namespace, job, grpc_service)", "sum by (job, grpc_service)"),
    ("sum by (namespace) (genir_generator_queue_depth)", "sum(genir_generator_queue_depth)"),
    ('or absent(up{job="genir-generator"}) ', ""),
    ("genir:round_slow_ratio:rate1h > (14.4 * 0.05)", "genir:round_slow_ratio:rate1h > (14.4 * 0.1)"),
    ("genir:round_error_ratio:rate6h > (6 * 0.01)", "genir:round_error_ratio:rate6h > (10 * 0.01)"),
    (r'le=~"60|60\\.0"', r'le=~"120|120\\.0"'),
])
def test_unit_tests_catch_a_broken_rule(tmp_path, old, new):
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = (PROM / "rules/genir.rules.yml").read_text()
    assert old in text
    (tmp_path / "rules/genir.rules.yml").write_text(text.replace(old, new))
    shutil.copy(PROM / "tests/genir.rules.test.yml", tmp_path / "tests")
    out = promtool("test", "rules", "tests/genir.rules.test.yml", cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr
