"""Regenerate the deploy/ files that are derived from other files (tests/deploy checks freshness):

    .venv/bin/python deploy/tools/regen.py

- deploy/k8s/components/monitoring/prometheusrule.yaml <- deploy/prometheus/rules/genir.rules.yml
- deploy/k8s/jobs/eval/eval-jobs.yaml                   <- `genir eval submit --dry-run` (example run)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/genir.rules.yml"
PROMETHEUS_RULE = ROOT / "deploy/k8s/components/monitoring/prometheusrule.yaml"
EVAL_JOBS = ROOT / "deploy/k8s/jobs/eval/eval-jobs.yaml"
EVAL_EXAMPLE = ["eval", "submit", "--dry-run", "--shards", "4", "--mode", "genir", "--image", "genir",
                "--run-id", "example"]


def prometheus_rule_text() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "genir", "namespace": "genir", "labels": {"app.kubernetes.io/name": "genir"}},
           "spec": {"groups": groups}}
    head = ("# deploy/prometheus/rules/genir.rules.yml as a PrometheusRule (same groups; tests/deploy checks\n"
            "# that they stay identical). Regenerate after editing the rules file:\n"
            "#   .venv/bin/python deploy/tools/regen.py\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=200)


def eval_jobs_text() -> str:
    # A clean environment: GENIR_SUBMIT_* variables of the caller must not leak into the example.
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GENIR_")}
    out = subprocess.run([sys.executable, "-m", "genir.cli", *EVAL_EXAMPLE], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout


def main() -> int:
    PROMETHEUS_RULE.write_text(prometheus_rule_text())
    EVAL_JOBS.write_text(eval_jobs_text())
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)} and {EVAL_JOBS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
