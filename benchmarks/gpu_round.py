"""gpu_round: one whole GenIR round per dialog on one GPU, ours against the authors' way.

`python -m benchmarks gpu_round --device cuda` builds real-size models with random weights
directly on the GPU (timing and memory are the real models'; outputs are noise):
- generator: SD3.5-Large-shaped pipeline (genir.tiny_models.real_configs, bf16, with T5-XXL;
  GENIR_GPU_ROUND_SD=medium for the Medium shape), 1024 x 1024, 28 steps, guidance 5;
- refiner: Gemma-3-4b-it-shaped VLM (bf16) driven through the refiner's Triton python-backend
  model code IN-PROCESS (benchmarks/triton_inprocess.py: no Triton server on the GPU machine);
  compare (400 new tokens) then refine (500), the paper's budgets and sampling;
- retriever: BLIP-base-shaped (224 px) over 50k random 256-d vectors, exact top-10 + target rank.

A round (a follow-up GenIR round: compare -> refine -> generate -> search) is measured for C
dialogs at once, C in GENIR_GPU_ROUND_CONCURRENCY (default 1,8,16):
- ours: the services' model code, batched across the C dialogs (Gemma rows in execute() calls of
  config.pbtxt's max_batch_size, generator batches of GENIR_GPU_ROUND_GEN_BATCH (8), one
  retriever batch), with PNG encode/decode between stages as the services do;
- reference (the authors' scripts): dialogs one after another, each a plain transformers
  `generate(do_sample=True)` for compare and refine, a plain diffusers pipeline call, one image
  embedding and a numpy search.
Modes (GENIR_GPU_ROUND_MODES, default "eager,fast"): eager, then fast = static KV cache +
torch.compile for Gemma decoding and a compiled SD3.5 transformer (compilation is warmed up
before timing; its cost is recorded). dialogs/hour = 3600 x C / (11 rounds x seconds per round
of the C dialogs) (the paper's 10 rounds + the initial one). ratio = best ours / reference
dialogs per hour; target 5.

`--device cpu` runs the same code path with the tiny models at small sizes and token budgets: a
check of the script, never a measurement (written to .cache/bench-quick unless --out says).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import out_dir, record, write

NAME = "gpu_round"
TARGET = 5.0
ROOT = Path(__file__).resolve().parents[1]
ROUNDS_PER_DIALOG = 11
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


@dataclass
class Setup:
    device: str
    size: int
    steps: int
    compare_tokens: int
    refine_tokens: int
    points: int
    concurrency: list[int]
    modes: list[str]
    gen_batch: int
    reference_dialogs: int
    sd: str


def setup(device: str) -> Setup:
    env = os.environ.get
    cpu = device == "cpu"
    conc = [int(c) for c in env("GENIR_GPU_ROUND_CONCURRENCY", "1,2" if cpu else "1,8,16").split(",")]
    return Setup(device=device, size=64 if cpu else 1024, steps=2 if cpu else 28,
                 compare_tokens=6 if cpu else 400, refine_tokens=6 if cpu else 500,
                 points=2000 if cpu else 50_000, concurrency=conc,
                 modes=env("GENIR_GPU_ROUND_MODES", "eager" if cpu else "eager,fast").split(","),
                 gen_batch=int(env("GENIR_GPU_ROUND_GEN_BATCH", "8")),
                 reference_dialogs=int(env("GENIR_GPU_ROUND_REFERENCE_DIALOGS", "1" if cpu else "2")),
                 sd=env("GENIR_GPU_ROUND_SD", "large"))


# ----------------------------------------------------------------------------------- models
def build_models(s: Setup, work: Path) -> dict:
    import torch

    from benchmarks.triton_inprocess import InProcessGemma
    from genir.tiny_models import build_one
    from genir.tiny_models._common import build_atomically
    from genir.tiny_models.real_configs import (
        build_blip_base,
        build_gemma3_4b,
        sd35_large_pipeline,
        sd35_medium_pipeline,
    )
    from services.generator.pipeline import Pipeline
    from services.retriever.embedders import load_embedder

    built = {}
    t = time.perf_counter()
    if s.device == "cpu":
        from diffusers import AutoPipelineForText2Image

        tiny = ROOT / ".cache" / "tiny-models"
        pipe = AutoPipelineForText2Image.from_pretrained(str(build_one(tiny, "sd3")), dtype=torch.float32)
        gemma_dir, blip_dir, blip_size = build_one(tiny, "gemma3"), build_one(tiny, "blip"), 48
        names = {"generator": "tiny SD3.5-shaped", "refiner": "tiny Gemma-3", "retriever": "tiny BLIP"}
    else:
        make = sd35_large_pipeline if s.sd == "large" else sd35_medium_pipeline
        pipe = make(dtype=torch.bfloat16, device=s.device, with_t5=True)
        models = ROOT / ".cache" / "bench-models"
        gemma_dir = build_atomically(models, "gemma3-4b", 0, lambda p, seed: build_gemma3_4b(
            p, seed, dtype=torch.bfloat16, device=s.device))
        blip_dir, blip_size = build_atomically(models, "blip-base", 0, build_blip_base), 224
        names = {"generator": f"SD3.5-{s.sd.capitalize()}-shaped (bf16, with T5-XXL)",
                 "refiner": "Gemma-3-4b-it-shaped (bf16)", "retriever": "BLIP-base-shaped at 224 px"}
    built["generator_s"] = time.perf_counter() - t
    t = time.perf_counter()
    gemma = InProcessGemma(gemma_dir, device=s.device)
    built["refiner_s"] = time.perf_counter() - t
    embedder = load_embedder(blip_dir, image_size=blip_size, device=s.device, batch_size=64)
    backend = _retriever(embedder, s, work)
    # The reference runs on `pipe` as built; the service's backend (which makes it batch-invariant,
    # its default) wraps it only after the reference is measured: see attach_generator.
    service = Pipeline(f"<{names['generator']}>", model_id="sd35-random", device=s.device)
    return {"pipe": pipe, "generator": service, "gemma": gemma, "embedder": embedder, "retriever": backend, "names": names,
            "build_seconds": {k: round(v, 1) for k, v in built.items()}}


def _retriever(embedder, s: Setup, work: Path):
    import argparse

    from services.retriever.backend import RetrieverBackend
    from services.retriever.server import add_arguments
    from services.retriever.store import normalise_rows

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    backend = RetrieverBackend(parser.parse_args(["--store-path", str(work / "store")]))
    backend.open_store()
    backend.embedder = embedder
    backend.store.ensure("bench", embedder.model_id, embedder.dim)
    vecs = normalise_rows(np.random.default_rng(0).normal(size=(s.points, embedder.dim)))
    for i in range(0, s.points, 5000):
        backend.store.upsert("bench", np.arange(i, min(i + 5000, s.points)), vecs[i:i + 5000])
    return backend


# ----------------------------------------------------------------------------------- dialogs
@dataclass
class Dialog:
    target: bytes          # PNG, as the orchestrator sends it
    shown: bytes           # the previous round's rendering (PNG)
    caption: str
    target_id: int
    seed: int


def dialogs(n: int, s: Setup) -> list[Dialog]:
    from PIL import Image

    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        pics = []
        for _ in range(2):
            img = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            pics.append(buf.getvalue())
        out.append(Dialog(pics[0], pics[1], "a red bus parked beside a brick station under a grey sky",
                          int(rng.integers(s.points)), 1000 + i))
    return out


def _decode(b: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(b)).convert("RGB")


def ours_round(m: dict, ds: list[Dialog], s: Setup) -> dict:
    """One round for every dialog, batched across dialogs as the services do."""
    from benchmarks.triton_inprocess import Request
    from services.common.images import encode_image
    from services.generator.pipeline import Item
    from services.refiner import prompts
    from services.retriever.backend import Query

    times = {}
    t = time.perf_counter()
    cmp = [prompts.compare(d.target, d.shown, d.caption) for d in ds]
    feedback = m["gemma"].infer([Request(p.messages, p.images, dict(SAMPLING, seed=d.seed,
                                                                    max_new_tokens=s.compare_tokens))
                                 for p, d in zip(cmp, ds, strict=True)])
    times["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    ref = [prompts.refine(d.caption, f[0], target=d.target) for d, f in zip(ds, feedback, strict=True)]
    captions = m["gemma"].infer([Request(p.messages, p.images, dict(SAMPLING, seed=d.seed + 1,
                                                                    max_new_tokens=s.refine_tokens))
                                 for p, d in zip(ref, ds, strict=True)])
    times["refine"] = time.perf_counter() - t
    t = time.perf_counter()
    items = [Item(c[0] or d.caption, d.seed, s.size, s.size, s.steps, 5.0) for c, d in zip(captions, ds, strict=True)]
    pictures = []
    for i in range(0, len(items), s.gen_batch):
        pictures += m["generator"].generate_batch(items[i:i + s.gen_batch])
    pngs = [encode_image(p, "PNG") for p in pictures]
    times["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    res = m["retriever"].search_many([Query("bench", image=_decode(png), top_k=10, target_id=d.target_id)
                                      for png, d in zip(pngs, ds, strict=True)])
    bad = [r for r in res if isinstance(r, Exception)]
    if bad:
        raise bad[0]
    times["search"] = time.perf_counter() - t
    times["tokens"] = sum(f[2] for f in feedback) + sum(c[2] for c in captions)
    return times


def reference_round(m: dict, d: Dialog, s: Setup) -> dict:
    """One dialog's round the authors' way: plain generate() calls, a plain pipeline call."""
    import torch

    from services.refiner import prompts

    tm = m["gemma"].model
    model, processor = tm.model, tm.processor
    times, tokens = {}, 0

    def hf_generate(p, budget: int, seed: int) -> str:
        nonlocal tokens
        text = processor.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        enc = processor(text=[text], images=[[_decode(b) for b in p.images]], return_tensors="pt").to(model.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, max_new_tokens=budget, **SAMPLING)
        new = out[0, enc["input_ids"].shape[1]:]
        tokens += int(new.shape[0])
        return processor.tokenizer.decode(new, skip_special_tokens=True)

    t = time.perf_counter()
    fb = hf_generate(prompts.compare(d.target, d.shown, d.caption), s.compare_tokens, d.seed)
    times["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    caption = hf_generate(prompts.refine(d.caption, fb, target=d.target), s.refine_tokens, d.seed + 1) or d.caption
    times["refine"] = time.perf_counter() - t
    t = time.perf_counter()
    pipe = m["pipe"]
    gen = torch.Generator(device=s.device).manual_seed(d.seed)
    image = pipe(prompt=caption, height=s.size, width=s.size, num_inference_steps=s.steps, guidance_scale=5.0,
                 generator=gen).images[0]
    times["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    q = m["embedder"].embed_images([image])[0]
    ids, vecs = m["retriever"].store.matrix("bench")
    scores = vecs @ (q / np.linalg.norm(q))
    top = np.argsort(-scores)[:10]
    _rank = int(np.count_nonzero(scores > scores[np.searchsorted(ids, d.target_id)]))
    times["search"] = time.perf_counter() - t
    times["tokens"] = tokens
    return {**times, "top": top.tolist()}


# ----------------------------------------------------------------------------------- modes
def make_fast(m: dict) -> dict:
    """Static KV cache for Gemma (transformers' generate() then compiles its decoding step by itself
    on a GPU); compiled SD3.5 transformer."""
    import torch

    tm = m["gemma"].model
    # The Triton model passes its own GenerationConfig; fields it leaves unset (cache_implementation
    # among them) come from the model's, so this reaches every generate() it runs.
    tm.model.generation_config.cache_implementation = "static"
    gen = m["generator"]
    gen.pipe.transformer = torch.compile(gen.pipe.transformer, mode="max-autotune-no-cudagraphs")
    return {"refiner": "cache_implementation=static (generate() auto-compiles the decoding step on GPU)",
            "generator": "torch.compile(transformer, max-autotune-no-cudagraphs)"}


def cache_in_use(m: dict) -> str:
    """The KV cache class generate() kept on the model (static caches are reused across calls)."""
    return type(getattr(m["gemma"].model.model, "_cache", None)).__name__


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def per_hour(seconds_for_c: float, c: int) -> float:
    return 3600.0 * c / (ROUNDS_PER_DIALOG * seconds_for_c)


def run(quick: bool = False, device: str = "cuda") -> dict:
    import torch

    s = setup(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_round --device cuda: no CUDA device here; `--device cpu` checks the script")
    smoke = device == "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu-round-"))
    m = build_models(s, work)
    card = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    details = {"device": card, "torch": torch.__version__, "models": m["names"], "build_seconds": m["build_seconds"],
               "settings": {"size": s.size, "steps": s.steps, "guidance": 5.0, "compare_tokens": s.compare_tokens,
                            "refine_tokens": s.refine_tokens, "sampling": SAMPLING, "collection_points": s.points,
                            "generator_batch": s.gen_batch, "refiner_batch": m["gemma"].batch,
                            "rounds_per_dialog": ROUNDS_PER_DIALOG},
               "refiner_path": "Triton python-backend model code, in-process (no Triton server on this machine)",
               "smoke_run": smoke, "runs": {}}
    if smoke:
        details["note"] = "CPU run with tiny models: checks the script; the figures are not measurements"

    def save(ratio: float) -> dict:
        result = record(NAME, ratio, TARGET, details)
        write(result)
        return result

    ds = dialogs(max(s.concurrency + [s.reference_dialogs]), s)
    reference_round(m, ds[0], s)  # warm-up (allocator, kernels)
    ref = []
    for d in ds[:s.reference_dialogs]:
        _sync(device)
        t = time.perf_counter()
        r = reference_round(m, d, s)
        _sync(device)
        ref.append({"seconds": round(time.perf_counter() - t, 3), **{k: round(v, 3) for k, v in r.items()
                                                                     if k not in ("top",)}})
    ref_s = float(np.mean([r["seconds"] for r in ref]))
    details["reference"] = {"per_dialog": ref, "seconds_per_round": round(ref_s, 3),
                            "dialogs_per_hour": round(per_hour(ref_s, 1), 2)}
    best = 0.0
    result = save(0.0)
    m["generator"].attach(m["pipe"])   # the service's backend, with its defaults (batch-invariant)
    details["settings"]["generator_batch_invariant"] = m["generator"].batch_invariant
    for mode in s.modes:
        if mode == "fast":
            t = time.perf_counter()
            details["fast"] = make_fast(m)
            ours_round(m, ds[:max(s.concurrency)], s)   # compile for the largest batch shapes
            details["fast"]["warm_up_seconds"] = round(time.perf_counter() - t, 1)
            details["fast"]["kv_cache_after_warm_up"] = cache_in_use(m)
        elif mode != "eager":
            raise SystemExit(f"GENIR_GPU_ROUND_MODES: unknown mode {mode!r} (eager, fast)")
        else:
            ours_round(m, ds[:1], s)   # warm-up
        for c in s.concurrency:
            _sync(device)
            t = time.perf_counter()
            stages = ours_round(m, ds[:c], s)
            _sync(device)
            took = time.perf_counter() - t
            dph = per_hour(took, c)
            details["runs"][f"{mode}_c{c}"] = {"seconds_per_round": round(took, 3), "dialogs_per_hour": round(dph, 2),
                                               "vs_reference": round(dph / per_hour(ref_s, 1), 3),
                                               **{k: round(v, 3) for k, v in stages.items()}}
            if device.startswith("cuda"):
                details["runs"][f"{mode}_c{c}"]["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            best = max(best, dph / per_hour(ref_s, 1))
            result = save(best)
            print(f"{mode} c={c}: {took:.2f}s per round, {dph:.1f} dialogs/h", flush=True)
    m["retriever"].close()
    print("gpu_round ->", out_dir() / f"{NAME}.json", flush=True)
    return result
