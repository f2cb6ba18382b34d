"""Tiny random-weight stand-ins for every model GenIR serves, built locally and offline.

``build_all(out_dir)`` writes one folder per model, each in the Hugging Face layout of the
real checkpoint and loadable with the unchanged ``from_pretrained`` / ``Auto*`` calls:

========  =====================================================  ==============================
folder    classes                                                real checkpoint it mimics
========  =====================================================  ==============================
sd3/      StableDiffusion3Pipeline (MMDiT-X, CLIP-L/G, T5, VAE)  stabilityai/stable-diffusion-3.5-medium
gemma3/   Gemma3ForConditionalGeneration + Gemma3Processor       google/gemma-3-4b-it
blip/     BlipForImageTextRetrieval + BlipProcessor              Salesforce/blip-itm-base-coco
clip/     CLIPModel + CLIPProcessor                              openai/clip-vit-base-patch32
siglip/   SiglipModel + SiglipProcessor                          google/siglip-base-patch16-224
========  =====================================================  ==============================

Weights are random (seeded): outputs are noise, shapes and plumbing are real. The same seed
gives byte-identical files under the same library versions (tokenizers and configs match
across versions too, but torch 2.11 and 2.13 initialise the SigLIP/BLIP vision towers
differently). Heavy imports (torch, transformers, diffusers) happen lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path

from ._common import BUILDER_VERSION, MARKER, build_atomically, is_complete

MODEL_NAMES: tuple[str, ...] = ("sd3", "gemma3", "blip", "clip", "siglip")

_BUILDERS: dict[str, tuple[str, str]] = {
    "sd3": ("sd3", "build_sd3"),
    "gemma3": ("gemma3", "build_gemma3"),
    "blip": ("retrievers", "build_blip"),
    "clip": ("retrievers", "build_clip"),
    "siglip": ("retrievers", "build_siglip"),
}

__all__ = ["BUILDER_VERSION", "MARKER", "MODEL_NAMES", "build_all", "build_one", "get_builder", "is_complete"]


def get_builder(name: str) -> Callable[[Path, int], Path]:
    """The ``build_<name>(path, seed)`` function for ``name`` (one of ``MODEL_NAMES``)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {MODEL_NAMES}")
    module, func = _BUILDERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)


def build_one(out_dir: str | Path, name: str, seed: int = 0, force: bool = False) -> Path:
    """Build (or reuse) ``out_dir/name``; see ``build_all``."""
    builder = get_builder(name)
    return build_atomically(Path(out_dir), name, seed, builder, force=force)


def build_all(
    out_dir: str | Path, seed: int = 0, only: Iterable[str] | None = None, force: bool = False
) -> dict[str, Path]:
    """Build the tiny models into ``out_dir/<name>/`` and return ``{name: folder}``.

    A folder that is already complete for this ``seed`` and builder version (checked via
    its ``.genir-tiny.json`` marker and file hashes) is reused unless ``force``. Each model
    is written to a staging folder and renamed into place, so concurrent builders and
    crashes never leave a half-written model where a loader could see it.
    """
    if isinstance(only, str):
        only = [only]
    names = list(MODEL_NAMES) if only is None else list(dict.fromkeys(only))
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown tiny model(s) {unknown}; expected a subset of {MODEL_NAMES}")
    return {name: build_one(out_dir, name, seed=seed, force=force) for name in names}
