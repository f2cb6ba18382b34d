"""The paper's settings, in one typed place: rendering per generator family, the refiner's sampling
and the per-stage token budgets of the authors' scripts (GenIR, arXiv 2506.06220, App. B;
mikelmh025/generative_ir). docs/paper.md lists each value with its source and the test pinning it.

Two presets:
  paper    the values below (the default of `genir eval` and of sessions);
  service  every service's own defaults (the pipeline's call defaults, the refiner's budgets).
Explicit settings (SessionOptions fields, `genir eval --steps/--guidance/--size/--max-new-tokens`)
win over either preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from genir import contract

PRESETS = ("paper", "service")
DEFAULT_PRESET = "paper"


@dataclass(frozen=True)
class Render:
    """How one generator family renders in the paper (None = the pipeline's own default)."""
    family: str
    steps: int | None
    guidance: float | None
    size: int | None                      # square side, pixels
    max_sequence_length: int | None = None  # long-text encoder tokens the scripts pass


# Keyed by the diffusers pipeline class the generator reports (GeneratorInfo.pipeline_class).
# SD3.5-Large: 28 steps, guidance 3.5 at the pipeline's 1024² (genIR_CaptionImageRefinement.py);
# FLUX.1-dev: 50 steps, guidance 3.5, 1024², max_sequence_length 512 (same script);
# Lumina-Image-2.0: 50 steps, guidance 4 (App. B); HiDream-I1-Fast: 16 steps (App. B), no CFG.
FAMILIES: dict[str, Render] = {
    "StableDiffusion3Pipeline": Render("sd3.5", 28, 3.5, 1024),
    "FluxPipeline": Render("flux", 50, 3.5, 1024, max_sequence_length=512),
    "Lumina2Pipeline": Render("lumina2", 50, 4.0, 1024),
    "Lumina2Text2ImgPipeline": Render("lumina2", 50, 4.0, 1024),
    "HiDreamImagePipeline": Render("hidream-fast", 16, 0.0, 1024),
}
# What a pipeline's T5-style encoder reads when neither the family nor --max-sequence-length says.
DEFAULT_MAX_SEQUENCE_LENGTH = 256


def family_of(pipeline_class: str) -> Render | None:
    return FAMILIES.get(pipeline_class)


def max_sequence_length(pipeline_class: str, requested: int = 0) -> int:
    """Long-text encoder length: the flag when set (> 0), else the family's, else 256."""
    if requested > 0:
        return requested
    fam = family_of(pipeline_class)
    return (fam.max_sequence_length if fam and fam.max_sequence_length else DEFAULT_MAX_SEQUENCE_LENGTH)


# ---------------------------------------------------------------- the refiner
# Sampling of every script call: the contract's defaults (genir/contract.py says where each comes from).
TEMPERATURE, TOP_P, TOP_K, REPETITION_PENALTY = (contract.DEFAULT_SAMPLING[k] for k in
                                                 ("temperature", "top_p", "top_k", "repetition_penalty"))

# max_new_tokens per (mode, stage), as the scripts pass them; each paper prompt states its cap.
# GenIR (genIR_CaptionImageRefinement.py): caption/refine 500, compare 400.
# Verbal (genIR_CaptionRefinment_TextOnly.py): caption, critique, refine 200.
# Prediction (genIR_CaptionRefinment_VIsualPredictionFeedBack.py): caption/refine 200, compare 400.
STAGE_TOKENS: dict[tuple[str, str], int] = {
    ("genir", "caption"): 500, ("genir", "compare"): 400, ("genir", "refine"): 500,
    ("verbal", "caption"): 200, ("verbal", "critique"): 200, ("verbal", "refine"): 200,
    ("prediction", "caption"): 200, ("prediction", "compare"): 400, ("prediction", "refine"): 200,
}
# Modes that run GenIR's dialog (fusion only changes the search).
DIALOG_OF = {"genir": "genir", "fusion": "genir", "verbal": "verbal", "prediction": "prediction"}


def stage_tokens(mode: str, stage: str) -> int | None:
    """The paper's budget for one refiner stage of a mode; None where the scripts have none."""
    return STAGE_TOKENS.get((DIALOG_OF.get(mode, mode), stage))
