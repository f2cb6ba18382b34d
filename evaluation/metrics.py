"""Retrieval metrics over a ranks table, exactly as defined in docs/method.md ("Metrics").

A ranks table has one row per target and one column per round (t = 0..T): ranks[j][t] is the
exact 0-based position of target j in the corpus ranked with round t's query. All functions are
pure and return per-round lists (index = round) except `bri`, which is one number per table.
Percentages are 0..100 like the paper's tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RanksTable = Sequence[Sequence[int]]


def _check(ranks: RanksTable) -> int:
    """Number of rounds; every row must have them all (the same target set at every round)."""
    if not ranks:
        return 0
    n_rounds = len(ranks[0])
    for j, row in enumerate(ranks):
        if len(row) != n_rounds:
            raise ValueError(f"ranks row {j} has {len(row)} rounds, expected {n_rounds}")
        for r in row:
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ValueError(f"ranks row {j}: {r!r} is not a 0-based rank")
    return n_rounds


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def best_ranks(ranks: RanksTable) -> list[list[int]]:
    """Running minimum per target: best_ranks[j][t] = min over s <= t of ranks[j][s]."""
    _check(ranks)
    out = []
    for row in ranks:
        best, acc = math.inf, []
        for r in row:
            best = min(best, r)
            acc.append(int(best))
        out.append(acc)
    return out


def _mean_per_round(ranks: RanksTable, k: int, score, cumulative: bool = False) -> list[float]:
    """Per round t, the mean over targets of score(rank at t), with the best rank so far if cumulative."""
    _check_k(k)
    n_rounds = _check(ranks)
    if not ranks:
        return []
    rows = best_ranks(ranks) if cumulative else ranks
    return [sum(score(row[t]) for row in rows) / len(rows) for t in range(n_rounds)]


def hits_at_k(ranks: RanksTable, k: int) -> list[float]:
    """Cumulative Hits@K per round: percent of targets ranked < k in any round <= t (non-decreasing)."""
    return _mean_per_round(ranks, k, lambda r: 100.0 * (r < k), cumulative=True)


def recall_at_k(ranks: RanksTable, k: int) -> list[float]:
    """Per-round Recall@K (not cumulative): percent of targets ranked < k by round t's query alone."""
    return _mean_per_round(ranks, k, lambda r: 100.0 * (r < k))


def mrr_at_k(ranks: RanksTable, k: int) -> list[float]:
    """Per-round MRR@K: mean of 1/(rank+1) where rank < k, else 0 (a fraction in 0..1)."""
    return _mean_per_round(ranks, k, lambda r: 1.0 / (r + 1) if r < k else 0.0)


def bri(ranks: RanksTable) -> float:
    """Best log Rank Integral (PlugIR); lower is better.

    With the best 1-based rank so far pi_t = min(pi_{t-1}, rank_t + 1) and T the last round,
    BRI_j = (1/2T) * log(pi_0 * pi_T) + (1/T) * sum_{t=1}^{T-1} log(pi_t): the trapezoid mean of
    log(pi) over [0, T]. For a single round (T = 0) that mean degenerates to log(pi_0).
    The table's BRI is the mean over targets.
    """
    n_rounds = _check(ranks)
    if not ranks:
        return float("nan")
    T = n_rounds - 1
    total = 0.0
    for row in best_ranks(ranks):
        logs = [math.log(r + 1) for r in row]
        if T == 0:
            total += logs[0]
        else:
            total += (logs[0] + logs[T]) / (2 * T) + sum(logs[1:T]) / T
    return total / len(ranks)


def rank_from_scores(scores: Sequence[float], target: int) -> int:
    """Exact 0-based rank of item `target` given the similarity of every corpus item.

    Ties are broken the way a stable descending sort breaks them: an item with an equal score and a
    lower corpus id ranks first. So a target tied with others at the K boundary is a hit only if
    its id lets it in, and the rank never depends on the order the scores were produced in.
    """
    if not 0 <= target < len(scores):
        raise ValueError(f"target {target} is out of range [0, {len(scores) - 1}]")
    s = scores[target]
    return sum(1 for i, x in enumerate(scores) if x > s or (x == s and i < target))


def summarize(ranks: RanksTable, ks: Sequence[int]) -> dict:
    """The metric block of summary.json for one ranks table (keys of per-K dicts are strings for JSON)."""
    n_rounds = _check(ranks)
    return {
        "n_targets": len(ranks),
        "n_rounds": n_rounds,
        "hits_at_k": {str(k): _round(hits_at_k(ranks, k)) for k in ks},
        "recall_at_k": {str(k): _round(recall_at_k(ranks, k)) for k in ks},
        "mrr": {str(k): _round(mrr_at_k(ranks, k), 6) for k in ks},
        "bri": None if not ranks else round(bri(ranks), 6),
    }


def _round(values: list[float], nd: int = 4) -> list[float]:
    # Fixed precision so that the same ranks always serialise to the same bytes.
    return [round(v, nd) for v in values]
