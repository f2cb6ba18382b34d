"""Metrics against rank tables computed by hand (docs/method.md definitions)."""

import math

import pytest

from evaluation.metrics import (
    best_ranks,
    bri,
    hits_at_k,
    mrr_at_k,
    rank_from_scores,
    recall_at_k,
    summarize,
)

# 4 targets x 3 rounds (t = 0, 1, 2), 0-based ranks.
TABLE = [
    [0, 5, 5],      # A: found at round 0, then lost: still a hit cumulatively
    [2, 1, 3],      # B: K=2 boundary: rank 2 misses, rank 1 hits, then lost again
    [10, 9, 12],    # C: K=10 boundary: rank 10 misses, rank 9 hits
    [40, 40, 40],   # D: never found
]


def test_best_ranks_are_running_minima():
    assert best_ranks(TABLE) == [[0, 0, 0], [2, 1, 1], [10, 9, 9], [40, 40, 40]]


def test_cumulative_hits_by_hand():
    assert hits_at_k(TABLE, 1) == [25.0, 25.0, 25.0]          # only A, and A stays a hit after it is lost
    assert hits_at_k(TABLE, 2) == [25.0, 50.0, 50.0]          # B enters at round 1 (rank 1 < 2), stays
    assert hits_at_k(TABLE, 10) == [50.0, 75.0, 75.0]         # C: rank 10 is not < 10; rank 9 is
    assert hits_at_k(TABLE, 41) == [100.0, 100.0, 100.0]


def test_cumulative_hits_never_decrease():
    for k in (1, 2, 5, 10, 50):
        h = hits_at_k(TABLE, k)
        assert all(a <= b for a, b in zip(h, h[1:], strict=False))


def test_recall_is_per_round_not_cumulative():
    assert recall_at_k(TABLE, 2) == [25.0, 25.0, 0.0]         # A lost at round 1, B lost at round 2
    assert recall_at_k(TABLE, 10) == [50.0, 75.0, 50.0]
    assert recall_at_k(TABLE, 1) == [25.0, 0.0, 0.0]


def test_mrr_by_hand():
    got = mrr_at_k(TABLE, 10)
    want = [(1 / 1 + 1 / 3) / 4, (1 / 6 + 1 / 2 + 1 / 10) / 4, (1 / 6 + 1 / 4) / 4]
    assert got == pytest.approx(want)
    # C's rank 9 (1/10) is inside K=10 at round 1, outside K=9
    assert mrr_at_k(TABLE, 9)[1] == pytest.approx((1 / 6 + 1 / 2) / 4)


def test_bri_by_hand():
    # T = 2: BRI_j = (1/4) * (log pi_0 + log pi_2) + (1/2) * log pi_1, pi = best 1-based rank so far.
    a = 0.0                                                      # pi = 1, 1, 1
    b = (math.log(3) + math.log(2)) / 4 + math.log(2) / 2        # pi = 3, 2, 2
    c = (math.log(11) + math.log(10)) / 4 + math.log(10) / 2     # pi = 11, 10, 10
    d = math.log(41)                                             # pi = 41 throughout
    assert bri(TABLE) == pytest.approx((a + b + c + d) / 4)
    assert bri(TABLE) == pytest.approx(1.708625, abs=1e-6)


def test_bri_ten_rounds_uses_the_trapezoid_weights():
    row = [99, 49, 49, 19, 19, 19, 9, 9, 4, 4, 0]                # T = 10
    pis = [100, 50, 50, 20, 20, 20, 10, 10, 5, 5, 1]
    want = math.log(100 * 1) / 20 + sum(math.log(p) for p in pis[1:10]) / 10
    assert bri([row]) == pytest.approx(want)
    # a later worse rank never raises pi
    worse = [99, 49, 49, 19, 19, 19, 9, 9, 4, 4, 300]
    assert bri([worse]) == pytest.approx(math.log(100 * 5) / 20 + sum(math.log(p) for p in pis[1:10]) / 10)
    # one round only: the mean of log(pi) over a single point
    assert bri([[4]]) == pytest.approx(math.log(5))


def test_ties_at_the_k_boundary():
    # items 1, 2, 3 tie; a stable ranking puts the lower corpus id first
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    assert [rank_from_scores(scores, t) for t in range(5)] == [0, 1, 2, 3, 4]
    table = [[rank_from_scores(scores, 1)], [rank_from_scores(scores, 2)]]
    assert hits_at_k(table, 2) == [50.0]          # id 1 (rank 1) inside K=2, tied id 2 (rank 2) outside
    assert hits_at_k(table, 3) == [100.0]
    # score order in the input does not change anything
    assert rank_from_scores([0.5, 0.5, 0.9], 1) == 2 and rank_from_scores([0.5, 0.5, 0.9], 0) == 1


def test_summarize_and_bad_tables():
    s = summarize(TABLE, [1, 10])
    assert s["n_targets"] == 4 and s["n_rounds"] == 3
    assert s["hits_at_k"] == {"1": [25.0, 25.0, 25.0], "10": [50.0, 75.0, 75.0]}
    assert s["bri"] == pytest.approx(1.708625, abs=1e-6)
    assert summarize([], [10])["hits_at_k"] == {"10": []}
    with pytest.raises(ValueError, match="row 1 has 2 rounds"):
        hits_at_k([[0, 1, 2], [0, 1]], 10)
    with pytest.raises(ValueError, match="not a 0-based rank"):
        hits_at_k([[0, -1]], 10)
    with pytest.raises(ValueError, match="k must be"):
        hits_at_k(TABLE, 0)
