"""The whole-round GPU harness runs end to end on CPU with the tiny models (its smoke mode).

No GPU here: this checks the script (model building, the Triton model code in-process, the
batched round, the reference round, the record), not its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.__main__ import available
from benchmarks.common import RESULTS
from testkit.procs import ROOT, proc_env


def test_gpu_round_smoke_run_on_cpu_writes_a_full_record(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "gpu_round", "--device", "cpu", "--out", str(tmp_path)],
                          cwd=ROOT, env=proc_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads((tmp_path / "gpu_round.json").read_text())
    d = rec["details"]
    assert rec["name"] == "gpu_round" and d["smoke_run"] is True and "not measurements" in d["note"]
    assert "in-process" in d["refiner_path"]
    assert set(d["runs"]) == {"eager_c1", "eager_c2"}
    for run in [*d["runs"].values(), *d["reference"]["per_dialog"]]:
        assert all(run[k] > 0 for k in ("compare", "refine", "generate", "search", "tokens"))
    assert d["runs"]["eager_c2"]["tokens"] > d["runs"]["eager_c1"]["tokens"]   # two dialogs' rows were generated
    assert abs(rec["ratio"] - max(r["vs_reference"] for r in d["runs"].values())) < 1e-3


def test_gpu_round_is_not_a_default_benchmark_and_cpu_runs_never_reach_the_results():
    assert "gpu_round" not in available() and "bench_gpu_round" not in available()
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "gpu_round", "--device", "cpu", "--out", str(RESULTS)],
                          cwd=ROOT, env=proc_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "may not overwrite" in proc.stderr
