"""Every benchmark runs in quick mode and writes a valid record, without touching the committed figures.

The figures of a quick run mean nothing (tiny workloads on a busy machine); what this catches is a
benchmark that no longer runs: a stale import, a renamed flag, a record with a missing field.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import pytest

from benchmarks.__main__ import available
from benchmarks.common import RESULTS
from testkit.procs import ROOT, proc_env


def _committed() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(RESULTS.glob("*.json"))}


def test_every_benchmark_is_listed():
    assert set(available()) >= {"bench_eval", "bench_generator", "bench_index", "bench_refiner", "bench_retriever",
                                "bench_round", "bench_search"}


@pytest.mark.parametrize("name", available())
def test_quick_run_writes_a_valid_record(name, tmp_path):
    before = _committed()
    proc = subprocess.run([sys.executable, "-m", "benchmarks", name, "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, env=proc_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    short = name.removeprefix("bench_")
    rec = json.loads((tmp_path / f"{short}.json").read_text())
    assert rec["name"] == short
    assert isinstance(rec["ratio"], (int, float)) and math.isfinite(rec["ratio"]) and rec["ratio"] > 0
    assert isinstance(rec["target"], (int, float)) and rec["target"] > 0
    assert rec["passed"] is (rec["ratio"] >= rec["target"])
    assert isinstance(rec["details"], dict) and rec["details"]
    assert _committed() == before, "a quick run changed benchmarks/results/"


def test_quick_refuses_the_committed_folder():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "search", "--quick", "--out", str(RESULTS)],
                          cwd=ROOT, env=proc_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "may not overwrite" in proc.stderr
