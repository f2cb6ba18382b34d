"""`genir models check DIR`: is DIR a models folder `genir up --models DIR` can run, and what will
each service load from it?

Reads only metadata (model_index.json, config.json, safetensors headers), so it takes a second
even for real checkpoints. Parameter counts come from the safetensors headers; memory figures
are weights only, in bfloat16 (what the services use on CUDA).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services.common import config

GIB = 1024 ** 3
BF16 = 2
RETRIEVER_FAMILIES = ("blip", "clip", "siglip")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def safetensors_params(folder: Path) -> int | None:
    """Parameters in the *.safetensors files directly in `folder`; None when it has none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _required_json(path: Path, rep: Report, problem: str) -> dict | None:
    """The JSON file at `path`, or None with `problem` reported."""
    data = _json(path)
    if data is None:
        rep.problems.append(problem)
    return data


def _weights(folder: Path, rep: Report, service: str) -> int | None:
    """Parameters in `folder`'s safetensors files, or None with the lack reported."""
    params = safetensors_params(folder)
    if not params:
        rep.problems.append(f"{service}: no *.safetensors weights in {folder}")
    return params


def _count(params: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if params >= div:
            return f"{params / div:.2f}{unit}"
    return str(params)


def _bytes(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2 ** 20:.1f} MiB"


def _size(params: int) -> str:
    return f"{_count(params)} params, {_bytes(params * BF16)} bf16"


def check_generator(folder: Path, rep: Report) -> None:
    index = _required_json(folder / "model_index.json", rep, f"generator: {folder}/model_index.json is missing or "
                           "not JSON (a diffusers pipeline folder is expected, e.g. stabilityai/stable-diffusion-3.5-medium)")
    if index is None:
        return
    parts, total, missing = [], 0, []
    for name, spec in sorted(index.items()):
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (folder / name).is_dir():
            missing.append(name)
            continue
        params = safetensors_params(folder / name)
        if params:
            parts.append((name, params))
            total += params
    if missing:
        rep.problems.append(f"generator: {folder} lacks {', '.join(missing)}/ listed in model_index.json "
                            "(an incomplete download?)")
        return
    if not total:
        rep.problems.append(f"generator: no *.safetensors weights under {folder}")
        return
    t5 = dict(parts).get("text_encoder_3", 0)
    rep.lines.append(f"generator  {folder.name}/: {index.get('_class_name')} ({_size(total)})")
    for name, params in parts:
        rep.lines.append(f"             {name}: {_size(params)}")
    if t5:
        rep.lines.append(f"             with --drop-t5: {_size(total - t5)}")


def check_refiner(folder: Path, rep: Report) -> None:
    cfg = _required_json(folder / "config.json", rep, f"refiner: {folder}/config.json is missing (a Gemma-3 *-it "
                         "folder is expected, e.g. google/gemma-3-4b-it)")
    if cfg is None:
        return
    arch = ",".join(cfg.get("architectures") or [])
    if not arch.startswith("Gemma3"):
        rep.problems.append(f"refiner: {folder} holds {arch or cfg.get('model_type')!r}, not a Gemma-3 model")
        return
    tok_cfg = _json(folder / "tokenizer_config.json") or {}
    has_template = (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file() \
        or "chat_template" in tok_cfg
    if not has_template:
        rep.problems.append(f"refiner: {folder} has no chat template: use an instruction-tuned '-it' checkpoint")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
        rep.problems.append(f"refiner: {folder} has no tokenizer.json or tokenizer.model")
    params = _weights(folder, rep, "refiner")
    if not params:
        return
    vision = "image input" if "vision_config" in cfg else "TEXT ONLY (gemma-3-1b has no vision tower; "\
        "Compare/Caption need 4b or larger)"
    if "vision_config" not in cfg:
        rep.problems.append(f"refiner: {folder} has no vision tower; use gemma-3-4b-it or larger")
    rep.lines.append(f"refiner    {folder.name}/: {arch} via Triton, {vision} ({_size(params)})")


def check_retriever(folder: Path, rep: Report, required: bool) -> None:
    cfg = _json(folder / "config.json")
    if cfg is None:
        if required:
            rep.problems.append(f"retriever: {folder}/config.json is missing (BLIP, CLIP or SigLIP folder expected)")
        return
    kind = str(cfg.get("model_type", "")).lower()
    arch = ",".join(cfg.get("architectures") or [])
    if kind not in RETRIEVER_FAMILIES:
        rep.problems.append(f"retriever: {folder} has model_type {kind!r}, not one of {', '.join(RETRIEVER_FAMILIES)}")
        return
    if kind == "blip" and arch != "BlipForImageTextRetrieval":
        rep.problems.append(f"retriever: {folder} is {arch!r}; BLIP retrieval needs an ITM checkpoint "
                            "(Salesforce/blip-itm-base-coco or -large-coco)")
        return
    params = _weights(folder, rep, "retriever")
    if not params:
        return
    used = "used by genir up" if required else "available (--retriever-model " + folder.name + ")"
    rep.lines.append(f"retriever  {folder.name}/: {arch} ({_size(params)}; float32 on CPU: "
                     f"{_bytes(params * 4)}), {used}")


def check(models: Path, retriever_model: str = "blip") -> Report:
    rep = Report()
    if not models.is_dir():
        rep.problems.append(f"{models}: no such folder")
        return rep
    for name, fn in (("sd3", check_generator), ("gemma3", check_refiner)):
        if (models / name).is_dir():
            fn(models / name, rep)
        else:
            rep.problems.append(f"{name}/ is missing in {models}")
    for kind in (retriever_model,) + tuple(k for k in RETRIEVER_FAMILIES if k != retriever_model):
        required = kind == retriever_model
        if (models / kind).is_dir():
            check_retriever(models / kind, rep, required)
        elif required:
            rep.problems.append(f"{kind}/ (the retriever, --retriever-model {kind}) is missing in {models}")
    return rep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="models folder (sd3/ gemma3/ blip/ [clip/ siglip/])")
    config.add_flag(parser, "retriever-model", service="models", default="blip",
                    help="the retriever's sub-folder that genir up will use")


def main(args) -> int:
    rep = check(Path(args.dir), args.retriever_model)
    for line in rep.lines:
        print(line)
    for p in rep.problems:
        print(f"problem: {p}", file=sys.stderr)
    if rep.problems:
        print(f"genir models check: {len(rep.problems)} problem(s); see the README section 'Real models'",
              file=sys.stderr)
        return 2
    print(f"genir models check: {args.dir} is ready for genir up --models {args.dir}")
    return 0
