"""The paper's hybrid (`genir eval compare --hybrid`) against hand-computed tables.

Verbal and visual runs over targets 1..4 (plus target 5 only in the visual run, so scoring is on
the 4 common targets), rounds 0..2, K = 10. Per-target BRI with T = 2 is
(log pi_0 + log pi_2) / 4 + log pi_1 / 2, pi = best 1-based rank so far:

  target  visual ranks   BRI     verbal ranks   BRI     oracle picks
  1       50, 5, 3       2.225   60, 40, 30     3.743   visual
  2       20, 30, 40     3.045   8, 8, 8        2.197   verbal
  3       0, 0, 0        0       0, 0, 0        0       visual (tie)
  4       100, 100, 9    4.037   2, 50, 50      1.099   verbal

Cumulative Hits@10 per round: visual 25, 50, 75; verbal 75, 75, 75; oracle hybrid 75, 100, 100.
"""

from __future__ import annotations

import argparse
import json

import pytest

from evaluation import hybrid
from evaluation.compare import add_arguments, main

VISUAL = {1: [50, 5, 3], 2: [20, 30, 40], 3: [0, 0, 0], 4: [100, 100, 9], 5: [1, 1, 1]}
VERBAL = {1: [60, 40, 30], 2: [8, 8, 8], 3: [0, 0, 0], 4: [2, 50, 50]}


def write_run(folder, mode, ranks):
    folder.mkdir()
    n_rounds = {len(row) for row in ranks.values()}
    assert len(n_rounds) == 1, "every dialog of a run has the same rounds"
    ident = {"mode": mode, "label": mode, "rounds": n_rounds.pop() - 1, "seed": 0}  # rounds after round 0
    (folder / "run.json").write_text(json.dumps({"identity": ident, "ks": [1, 5, 10], "models": {},
                                                 "targets": sorted(ranks), "n_targets_selected": len(ranks)}))
    lines = [json.dumps({"target_id": t, "img": f"{t}.jpg", "mode": mode, "label": mode,
                         "rounds": [{"index": i, "rank": r, "seed": i} for i, r in enumerate(row)]})
             for t, row in ranks.items()]
    (folder / "dialogs.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def runs(tmp_path):
    return write_run(tmp_path / "verbal", "verbal", VERBAL), write_run(tmp_path / "genir", "genir", VISUAL)


def compare(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return main(p.parse_args([str(a) for a in argv]))


def test_oracle_picks_the_better_dialog_per_target_and_scores_common_targets(runs, tmp_path, capsys):
    out = tmp_path / "hybrid.json"
    assert compare(*runs, "--hybrid", "oracle", "--out", out) == 0
    data = json.loads(out.read_text())
    assert data["choices"] == {"1": "visual", "2": "verbal", "3": "visual", "4": "verbal"}
    modes = data["modes"]
    assert modes["hybrid-oracle"]["hits_at_k"]["10"] == [75.0, 100.0, 100.0]
    assert modes["genir"]["hits_at_k"]["10"] == [25.0, 50.0, 75.0]
    assert modes["verbal"]["hits_at_k"]["10"] == [75.0, 75.0, 75.0]
    assert data["n_targets"] == 4 and data["n_targets_by_mode"]["genir"] == 5
    printed = capsys.readouterr().out
    assert "visual feedback for 2 of 4 targets" in printed and "hybrid-oracle" in printed


@pytest.mark.parametrize("p,expected", [("0", [75.0, 75.0, 75.0]), ("1", [25.0, 50.0, 75.0])])
def test_random_at_the_extremes_is_one_run_or_the_other(runs, tmp_path, p, expected):
    out = tmp_path / "r.json"
    assert compare(*runs, "--hybrid", f"random:{p}", "--out", out) == 0
    assert json.loads(out.read_text())["modes"][f"hybrid-random:{p}"]["hits_at_k"]["10"] == expected


def test_random_half_is_reproducible_and_mixes_whole_dialogs():
    first = hybrid.choose(VISUAL, VERBAL, "random", 0.5, seed=11)
    assert first == hybrid.choose(VISUAL, VERBAL, "random", 0.5, seed=11) and set(first) == {1, 2, 3, 4}
    mixed = hybrid.hybrid_ranks(VISUAL, VERBAL, first)
    assert all(mixed[t] == (VISUAL[t] if c == "visual" else VERBAL[t]) for t, c in first.items())


@pytest.mark.parametrize("policy", ["best", "random:1.5", "random:x", ""])
def test_bad_policies_are_refused(runs, policy, capsys):
    assert compare(*runs, "--hybrid", policy) == 2
    assert "--hybrid" in capsys.readouterr().err


def test_two_visual_runs_are_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a", "genir", VISUAL)
    b = tmp_path / "b"
    write_run(b, "fusion", VISUAL)
    assert compare(a, b, "--hybrid", "oracle") == 2
    assert "one verbal and one genir" in capsys.readouterr().err
