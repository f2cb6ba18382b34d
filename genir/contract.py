"""The contract's rules, written once: mode names, seed range, result and round caps, text and id
limits, and the refiner's sampling ranges and defaults.

Every service, the eval commands, `genir eval submit` and the web page read these names instead of
restating a number. The Triton model cannot import the repository: it gets the sampling rules
through its config.pbtxt `parameters`, which `genir serve triton` writes from
`triton_parameters()` (the checked-in config.pbtxt carries the same values; a test keeps them
equal). Standard library only, so anything may import this module cheaply.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

# ---------------------------------------------------------------- dialog modes
# The method and its baselines (docs/method.md). chatir replays recorded human dialogs, so only
# simulated dialogs (RunDialog, `genir eval`) run it; sessions take the others.
MODES = ("genir", "verbal", "prediction", "chatir", "fusion")
SESSION_MODES = ("genir", "verbal", "prediction", "fusion")
DEFAULT_MODE = "genir"
# Old names, still accepted with a warning -> their current name.
MODE_ALIASES = {"hybrid": "fusion"}

# ---------------------------------------------------------------- seeds
# Seeds are 63-bit non-negative integers (they fit a signed 64-bit field everywhere). 2^63 - 1 is
# all ones, so it doubles as the mask that folds a hash into the range.
MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A seed drawn where the caller gave none (it is reported back, so the result replays)."""
    return secrets.randbits(63)


# ---------------------------------------------------------------- results and rounds
DEFAULT_TOP_K = 10        # hits returned when a request leaves top_k unset
MAX_TOP_K = 100           # hits of a session or RunDialog round (SessionOptions.top_k, `genir eval --top-k`)
MAX_SEARCH_TOP_K = 1000   # hits of one retriever Search
MAX_DIALOG_ROUNDS = 20    # RunDialog / `genir eval --rounds`: rounds after round 0 (the paper uses 10)
MAX_SESSION_ROUNDS = 50   # rounds one session may hold (keeps GetSession and the history bounded)
MAX_SESSION_NEW_TOKENS = 4096  # SessionOptions.max_new_tokens / `genir eval --max-new-tokens` (0 = preset)


def chatir_dialog_length(rounds: int) -> int:
    """Strings a ChatIR dialog needs for `rounds` feedback rounds: the caption, then one Q/A a round."""
    return rounds + 1


# ---------------------------------------------------------------- text and ids
MAX_TEXT_CHARS = 8192     # any free-text request field without a tighter rule
MAX_QUERY_CHARS = 4096    # a person's query or feedback (CreateSession, NextRound, the web page)
MAX_PROMPT_CHARS = 4096   # a generator prompt (also assumed for generators that do not report theirs)
MAX_CORPUS_ID_DIGITS = 16


def parse_corpus_id(value: str) -> int | None:
    """A corpus id (the index in the corpus list, written in decimal), or None when `value` is not one."""
    s = (value or "").strip()
    # ASCII digits only: str.isdigit() also accepts '²' and Arabic-Indic digits, which int() rejects
    # or reads as another number.
    if not (s.isascii() and s.isdigit()) or len(s) > MAX_CORPUS_ID_DIGITS:
        return None
    return int(s)


# ---------------------------------------------------------------- the refiner's sampling
@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    lo_open: bool = False

    def __contains__(self, value) -> bool:
        return (self.lo < value if self.lo_open else self.lo <= value) and value <= self.hi

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}]"


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# What a request may ask of the refiner and of the Triton model alike.
SAMPLING_RANGES = {
    "temperature": Range(0.0, 2.0),            # 0 = greedy
    "top_p": Range(0.0, 1.0, lo_open=True),
    "top_k": Range(0, 1000),                   # 0 = no top-k cut
    "repetition_penalty": Range(1.0, 2.0),     # 1 = no penalty
    "seed": Range(0, MAX_SEED),
}
# The paper's sampling (GenIR §4 and the authors' scripts: temperature 0.7, top-p 0.9, repetition
# penalty 1.1), plus Gemma-3's released generation_config top_k = 64, which the scripts inherit
# through transformers' generate(); 500 new tokens is the scripts' caption/refine budget.
DEFAULT_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 64, "repetition_penalty": 1.1,
                    "max_new_tokens": 500}
MAX_NEW_TOKENS_LIMIT = 1024  # default cap on a request's max_new_tokens (refiner flag, Triton parameter)


def triton_parameters() -> dict[str, str]:
    """The Triton model's config.pbtxt parameters that carry these rules (all string values)."""
    ranges = {name: [r.lo, r.hi, r.lo_open] for name, r in SAMPLING_RANGES.items()}
    return {"sampling_ranges": json.dumps(ranges, sort_keys=True),
            "sampling_defaults": json.dumps(DEFAULT_SAMPLING, sort_keys=True),
            "max_new_tokens_limit": str(MAX_NEW_TOKENS_LIMIT)}


# ---------------------------------------------------------------- request sizes
# The largest request each RPC accepts (services/common/limits.py enforces them). Sizes follow
# the field limits above, with room for protobuf framing and 4-byte UTF-8 characters.
KiB = 1024
MiB = 1024 * KiB

REQ_IDS = 64 * KiB          # ids, refs, options: identifiers of 20 000 characters still get their own error
REQ_TEXT = 256 * KiB        # a 4096-character query or prompt (plus negative prompt) and options
REQ_DIALOG = 1 * MiB        # RunDialog: a chatir dialog of 21 strings of at most 8192 characters
REQ_TEXTS = 9 * MiB         # EmbedTexts: 256 texts of at most 8192 characters
REQ_IMAGES = None            # carries images: up to the server's --max-message-mb

REQUEST_LIMITS: dict[str, dict[str, int | None]] = {
    "genir.v1.Orchestrator": {
        "CreateSession": REQ_TEXT, "NextRound": REQ_TEXT, "GetSession": REQ_IDS, "DeleteSession": REQ_IDS,
        "RunDialog": REQ_DIALOG, "GetImage": REQ_IDS, "GetCorpusImage": REQ_IDS, "Describe": REQ_IDS,
    },
    "genir.v1.Generator": {"Generate": REQ_TEXT, "Info": REQ_IDS},
    "genir.v1.Refiner": {"Caption": REQ_IMAGES, "Compare": REQ_IMAGES, "Refine": REQ_IMAGES, "Critique": REQ_IMAGES, "Info": REQ_IDS},
    "genir.v1.Retriever": {
        "Search": REQ_IMAGES, "EmbedImages": REQ_IMAGES, "EmbedTexts": REQ_TEXTS, "Upsert": REQ_IMAGES, "CollectionInfo": REQ_IDS,
    },
}
