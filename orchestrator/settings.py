"""Effective settings of a dialog: the preset (services/common/presets.py) applied to SessionOptions.

One rule, used by the round engine for every call and by `genir eval` to record what the run used:
explicit options win; else the `paper` preset's value for the generator's family (or the mode's
refiner stage); else the service's own default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genir import contract
from genir.v1 import common_pb2, generator_pb2, orchestrator_pb2, refiner_pb2
from services.common import presets
from services.common.errors import InvalidArgument
from services.refiner.prompts import PROMPT_SETS


def resolve_preset(opts: orchestrator_pb2.SessionOptions) -> None:
    """Validate and fill in preset ("" = paper) and prompt set ("" = the preset's) in place."""
    name = (opts.preset or presets.DEFAULT_PRESET).strip().lower()
    if name not in presets.PRESETS:
        raise InvalidArgument(f"options.preset: unknown preset {opts.preset!r}; allowed: {', '.join(presets.PRESETS)}")
    opts.preset = name
    pset = opts.prompt_set.strip().lower()
    if pset and pset not in PROMPT_SETS:
        raise InvalidArgument(f"options.prompt_set: unknown prompt set {opts.prompt_set!r}; "
                              f"allowed: {', '.join(PROMPT_SETS)}")
    opts.prompt_set = pset or ("paper" if name == "paper" else "")


@dataclass(frozen=True)
class RenderSettings:
    """What one Generate call asks for (0 / None = the generator's default) and what that means."""
    width: int
    height: int
    steps: int
    guidance: float | None
    family: str = ""
    notes: tuple[str, ...] = field(default=())

    def effective(self, info: generator_pb2.GeneratorInfo) -> dict:
        """Every value the generator renders with, defaults resolved, for run.json / summary.json."""
        return {"width": self.width or info.default_width, "height": self.height or info.default_height,
                "num_inference_steps": self.steps or info.default_steps,
                "guidance_scale": round(self.guidance if self.guidance is not None else info.default_guidance, 6),
                "family": self.family, "pipeline_class": info.pipeline_class,
                "max_prompt_tokens": info.max_prompt_tokens, "notes": list(self.notes)}


def effective_render(opts: orchestrator_pb2.SessionOptions, info: generator_pb2.GeneratorInfo) -> RenderSettings:
    fam = presets.family_of(info.pipeline_class) if opts.preset == "paper" else None
    notes: list[str] = []
    steps = opts.num_inference_steps or (fam.steps if fam and fam.steps else 0)
    guidance = opts.guidance_scale if opts.HasField("guidance_scale") else (fam.guidance if fam else None)
    width, height = opts.width, opts.height
    if fam and fam.size and not (width or height):
        if _fits(fam.size, info):
            width = height = fam.size
        else:  # e.g. the tiny test checkpoints: recorded, never hidden
            notes.append(f"paper size {fam.size}x{fam.size} is above this generator's limit "
                         f"{info.max_width}x{info.max_height}; rendered at its default "
                         f"{info.default_width}x{info.default_height}")
    return RenderSettings(width, height, steps, guidance, fam.family if fam else "", tuple(notes))


def _fits(size: int, info: generator_pb2.GeneratorInfo) -> bool:
    m = info.size_multiple or 1
    return size <= info.max_width and size <= info.max_height and size % m == 0


def sampling_for(opts: orchestrator_pb2.SessionOptions, mode: str, stage: str, seed: int) -> common_pb2.Sampling:
    """A refiner stage's sampling: its seed, and under `paper` the scripts' sampling and budget."""
    s = common_pb2.Sampling(seed=seed)
    if opts.preset == "paper":
        s.temperature, s.top_p, s.top_k = presets.TEMPERATURE, presets.TOP_P, presets.TOP_K
        s.repetition_penalty = presets.REPETITION_PENALTY
        budget = presets.stage_tokens(mode, stage)
        if budget:
            s.max_new_tokens = budget
    if opts.max_new_tokens:
        s.max_new_tokens = opts.max_new_tokens
    return s


def refiner_settings(opts: orchestrator_pb2.SessionOptions, mode: str) -> dict:
    """The refiner settings a run uses, per stage, for run.json / summary.json."""
    stages = ("caption", "compare", "critique", "refine")
    tokens = {st: sampling_for(opts, mode, st, 0) for st in stages}
    out = {"prompt_set": opts.prompt_set or "(refiner default)",
           "max_new_tokens": {st: (s.max_new_tokens if s.HasField("max_new_tokens") else "prompt default")
                              for st, s in tokens.items() if presets.stage_tokens(mode, st) or opts.max_new_tokens}}
    s = tokens["caption"]
    if opts.preset == "paper":
        out |= {"temperature": round(s.temperature, 6), "top_p": round(s.top_p, 6), "top_k": s.top_k,
                "repetition_penalty": round(s.repetition_penalty, 6)}
    else:
        out["sampling"] = "refiner defaults"
    return out


RENDERING_MODES = ("genir", "fusion")
REFINER_MODES = ("genir", "fusion", "verbal", "prediction")


def effective_settings(opts: orchestrator_pb2.SessionOptions, mode: str,
                       generator: generator_pb2.GeneratorInfo | None,
                       refiner: refiner_pb2.RefinerInfo | None) -> dict:
    """Every setting a run of `mode` uses under `opts`, defaults resolved from the services' Info
    (None where a service did not answer: written as unknown, never guessed)."""
    out: dict = {"preset": opts.preset}
    if mode in RENDERING_MODES:
        out["render"] = (effective_render(opts, generator).effective(generator) if generator is not None
                         else {"unknown": "the generator did not answer Info"})
    if mode in REFINER_MODES:
        ref = out["refiner"] = refiner_settings(opts, mode)
        if refiner is not None:
            if not opts.prompt_set:
                ref["prompt_set"] = refiner.default_prompt_set
            if opts.preset != "paper":
                ref |= {"temperature": round(refiner.temperature, 6), "top_p": round(refiner.top_p, 6),
                        "top_k": refiner.top_k, "repetition_penalty": round(refiner.repetition_penalty, 6)}
                ref.pop("sampling", None)
    return out


def fit_chars(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary (whole when it fits)."""
    limit = limit or contract.MAX_PROMPT_CHARS  # generators that do not report max_prompt_chars
    if len(text) <= limit:
        return text
    head = text[:limit]
    if not text[limit].isspace():  # the cut falls inside a word: drop that word when another precedes it
        spaces = [i for i, c in enumerate(head) if c.isspace()]
        if spaces:
            head = head[:spaces[-1]]
    return head.rstrip()
