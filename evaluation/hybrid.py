"""The paper's hybrid (GenIR, Table 5): per query, verbal or visual feedback, chosen from two runs.

Not score fusion (that is the `fusion` mode). Given a verbal run and a GenIR run over the same
targets, each common target takes one of the two dialogs whole:

  oracle     the dialog that did better for that target: the lower per-target BRI (the mean of
             log best-rank over the rounds, PlugIR), so an earlier and higher hit wins; a tie
             goes to the visual dialog;
  random:P   the visual dialog with probability P, drawn per target from Random(seed) over the
             targets in ascending id order (same seed, same choice).

Pure functions over ranks tables; `genir eval compare --hybrid` loads the runs and prints.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from evaluation import metrics

VISUAL, VERBAL = "visual", "verbal"
VISUAL_MODES = ("genir", "fusion", "hybrid")  # "hybrid": runs recorded before fusion was renamed


class HybridError(ValueError):
    pass


def parse_policy(text: str) -> tuple[str, float | None]:
    """"oracle" -> ("oracle", None); "random:P" with 0 <= P <= 1 -> ("random", P)."""
    text = (text or "").strip().lower()
    if text == "oracle":
        return "oracle", None
    if text.startswith("random:"):
        try:
            p = float(text.split(":", 1)[1])
        except ValueError:
            p = -1.0
        if 0.0 <= p <= 1.0:
            return "random", p
    raise HybridError(f"--hybrid: {text!r} must be oracle or random:P with 0 <= P <= 1 (P = share of visual)")


def target_bri(ranks: Sequence[int]) -> float:
    return metrics.bri([list(ranks)])


def choose(visual: Mapping[int, Sequence[int]], verbal: Mapping[int, Sequence[int]], policy: str,
           p: float | None = None, seed: int = 0) -> dict[int, str]:
    """Target id -> VISUAL or VERBAL, over the targets both runs have."""
    common = sorted(set(visual) & set(verbal))
    if policy == "oracle":
        return {t: VISUAL if target_bri(visual[t]) <= target_bri(verbal[t]) else VERBAL for t in common}
    rng = random.Random(seed)
    return {t: VISUAL if rng.random() < p else VERBAL for t in common}


def hybrid_ranks(visual: Mapping[int, Sequence[int]], verbal: Mapping[int, Sequence[int]],
                 choice: Mapping[int, str]) -> dict[int, list[int]]:
    return {t: list(visual[t] if c == VISUAL else verbal[t]) for t, c in sorted(choice.items())}
