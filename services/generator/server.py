"""genir serve generator: the genir.v1.Generator gRPC surface over the diffusers backend.

The servicer validates requests against the loaded model's limits and the configured caps,
turns each request into per-image items (seed, seed+1, ...), hands them to the micro-batcher,
and encodes the images it gets back. Model code lives in pipeline.py; the batcher is services/common/batching.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass

from genir import contract
from genir.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from services.common import config, images, server, validation
from services.common.batching import MicroBatcher, submit_for_call
from services.common.errors import InvalidArgument
from services.common.server import Service, serve
from services.generator.backends import BackendError, build_backend
from services.generator.batching import METRICS
from services.generator.pipeline import DTYPES, OFFLOAD_MODES, Item, Pipeline, resolve_device

log = logging.getLogger("genir.generator")

SERVICE = "generator"
FORMATS = {generator_pb2.OUTPUT_FORMAT_UNSPECIFIED: "PNG", generator_pb2.OUTPUT_FORMAT_PNG: "PNG",
           generator_pb2.OUTPUT_FORMAT_JPEG: "JPEG"}


@dataclass(frozen=True)
class GeneratorConfig(config.ServerConfig):
    """Every generator setting (flags, env GENIR_GENERATOR_*); backends get this object."""
    model: str | None = config.flag("model folder (a diffusers pipeline for the default backend); required")
    backend: str = config.flag(
        "generator backend: diffusers, an entry point of group genir.generator_backends, or module:Class "
        "(services/generator/backends.py, docs/generators.md)", "diffusers")
    model_id: str | None = config.flag("model id reported to clients (default: the folder name)")
    device: str = config.flag("auto (cuda when present, else cpu), cpu, cuda, cuda:N", "auto")
    dtype: str = config.flag("weights dtype; auto = bfloat16 on CUDA, float32 on CPU", "auto", choices=DTYPES)
    max_batch_size: int = config.flag("most images in one pipeline call", 8)
    max_batch_delay_ms: float = config.flag("longest wait for a batch to fill, ms", 10.0)
    max_queue: int = config.flag("requests waiting before RESOURCE_EXHAUSTED", 64)
    max_width: int = config.flag("largest width accepted, pixels", 1536)
    max_height: int = config.flag("largest height accepted, pixels", 1536)
    max_steps: int = config.flag("largest num_inference_steps accepted", 100)
    max_guidance: float = config.flag("largest guidance_scale accepted", 20.0)
    max_images: int = config.flag("largest num_images per request", 4)
    max_sequence_length: int = config.flag(
        "prompt tokens read by a long-text encoder (T5), capped by its tokenizer; 0 = the family's "
        "(FLUX 512 as the paper's scripts, else 256)", 0)
    compile: bool = config.flag(
        "torch.compile the denoiser (compiles at start-up; new shapes recompile on first use)", False)
    drop_t5: bool = config.flag("load SD3.5 without its T5 encoder (text_encoder_3=None)", False)
    attention_slicing: bool = config.flag("sliced attention: less memory, slower", False)
    vae_tiling: bool = config.flag("tiled VAE decode for large sizes: less memory", False)
    offload: str = config.flag(
        "keep pipeline parts in CPU memory and move each to the GPU only while it runs: 'model' (whole "
        "components; fits SD3.5-Large with T5 on a 24 GB card, a little slower) or 'sequential' (layer by "
        "layer; least memory, much slower). GPU only", "none", choices=OFFLOAD_MODES)
    batch_invariant: bool = config.flag(
        "make each image independent of the batch it ran in (bit-identical alone or batched)", True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.register(parser, GeneratorConfig, SERVICE, port=50051, metrics_port=9101)


@dataclass(frozen=True)
class Caps:
    """Effective request limits: configured caps intersected with what the model allows."""
    size_multiple: int
    default_width: int
    default_height: int
    max_width: int
    max_height: int
    default_steps: int
    max_steps: int
    default_guidance: float
    max_guidance: float
    max_images: int
    max_prompt_tokens: int
    prompt_limit_source: str

    @classmethod
    def build(cls, limits, args) -> "Caps":
        m = limits.size_multiple

        def cap(flag: int) -> int:
            top = min(flag, limits.max_size) if limits.max_size else flag
            return max(m, top // m * m)

        max_w, max_h = cap(args.max_width), cap(args.max_height)
        return cls(size_multiple=m, default_width=min(limits.default_width, max_w),
                   default_height=min(limits.default_height, max_h), max_width=max_w, max_height=max_h,
                   default_steps=min(limits.default_steps, args.max_steps), max_steps=args.max_steps,
                   default_guidance=min(limits.default_guidance, args.max_guidance), max_guidance=args.max_guidance,
                   max_images=args.max_images, max_prompt_tokens=limits.max_prompt_tokens,
                   prompt_limit_source=limits.prompt_limit_source)


@dataclass(frozen=True)
class Parsed:
    items: list[Item]
    fmt: str
    quality: int
    truncated: bool = False


def _size(value: int, field: str, default: int, multiple: int, top: int) -> int:
    if value == 0:
        return default
    if value < 0 or value % multiple or value > top:
        raise InvalidArgument(f"{field}: {value} is not allowed; use a multiple of {multiple} in "
                              f"[{multiple}, {top}] (0 = default {default})")
    return value


def _prompt(value: str, field: str, caps: Caps, count_tokens, required: bool, truncate: bool) -> tuple[str, bool]:
    """(text, whether it was cut): over-long text is refused, or cut when the caller asked for it."""
    text = validation.text(value, field, max_chars=contract.MAX_PROMPT_CHARS, required=required)
    if not text:
        return text, False
    n = count_tokens(text)
    if n <= caps.max_prompt_tokens:
        return text, False
    if truncate:
        return fit_tokens(text, caps.max_prompt_tokens, count_tokens), True
    raise InvalidArgument(f"{field}: {n} tokens, over the limit of {caps.max_prompt_tokens} tokens "
                          f"({caps.prompt_limit_source} of this model); shorten it or set truncate_prompt")


def fit_tokens(text: str, limit: int, count_tokens) -> str:
    """The longest word-boundary prefix of `text` within `limit` tokens (binary search on words)."""
    words = text.split()
    lo, hi = 0, len(words)  # words[:lo] fits; words[:hi+1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:  # a single "word" longer than the limit: cut it by characters
        first = words[0] if words else text
        lo_c, hi_c = 0, len(first)
        while lo_c < hi_c:
            mid = (lo_c + hi_c + 1) // 2
            lo_c, hi_c = (mid, hi_c) if count_tokens(first[:mid]) <= limit else (lo_c, mid - 1)
        return first[:lo_c]
    return " ".join(words[:lo])


def parse_generate(req, caps: Caps, count_tokens) -> Parsed:
    """Validate a GenerateRequest; InvalidArgument names the field and the allowed range."""
    prompt, cut = _prompt(req.prompt, "prompt", caps, count_tokens, required=True, truncate=req.truncate_prompt)
    negative, cut_negative = _prompt(req.negative_prompt, "negative_prompt", caps, count_tokens, required=False,
                                     truncate=req.truncate_prompt)
    if req.HasField("seed"):
        seed = validation.int_range(req.seed, "seed", 0, contract.MAX_SEED)
    else:
        seed = contract.random_seed()
    steps = req.num_inference_steps or caps.default_steps
    validation.int_range(steps, "num_inference_steps", 1, caps.max_steps)
    guidance = (validation.float_range(req.guidance_scale, "guidance_scale", 0.0, caps.max_guidance)
                if req.HasField("guidance_scale") else caps.default_guidance)
    width = _size(req.width, "width", caps.default_width, caps.size_multiple, caps.max_width)
    height = _size(req.height, "height", caps.default_height, caps.size_multiple, caps.max_height)
    count = validation.int_range(req.num_images or 1, "num_images", 1, caps.max_images)
    if req.output_format not in FORMATS:
        raise InvalidArgument(f"output_format: unknown value {req.output_format}; allowed: OUTPUT_FORMAT_PNG (1), "
                              f"OUTPUT_FORMAT_JPEG (2), or unset for PNG")
    quality = validation.int_range(req.jpeg_quality or 90, "jpeg_quality", 1, 100)
    # Image i uses seed + i, wrapping inside the int64 range so every seed stays valid.
    items = [Item(prompt=prompt, seed=(seed + i) % (contract.MAX_SEED + 1), width=width, height=height, steps=steps,
                  guidance=guidance, negative_prompt=negative) for i in range(count)]
    return Parsed(items=items, fmt=FORMATS[req.output_format], quality=quality, truncated=cut or cut_negative)


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    def __init__(self, backend: Pipeline, batcher: MicroBatcher, cfg: GeneratorConfig):
        self.backend = backend
        self.batcher = batcher
        self.cfg = cfg
        self.caps: Caps | None = None

    def ready(self) -> None:
        """Called once the model has loaded: fix the effective limits."""
        self.caps = Caps.build(self.backend.limits, self.cfg)

    async def Generate(self, request, context):
        parsed = parse_generate(request, self.caps, self.backend.count_tokens)
        pictures, info = await submit_for_call(self.batcher, parsed.items[0].key(), parsed.items,
                                               context.time_remaining())
        start = time.perf_counter()
        encoded = await asyncio.to_thread(lambda: [images.encode_image(p, parsed.fmt, parsed.quality)
                                                   for p in pictures])
        encode_s = time.perf_counter() - start
        first = parsed.items[0]
        return generator_pb2.GenerateResponse(
            images=[images.to_proto(data, parsed.fmt, first.width, first.height) for data in encoded],
            model=self.backend.model_id, seeds=[it.seed for it in parsed.items], width=first.width,
            height=first.height, batch_size=info.batch_size, prompt_truncated=parsed.truncated,
            rendered_prompt=first.prompt if parsed.truncated else "",
            timings=[common_pb2.Timing(stage="queue", seconds=info.queue_seconds),
                     common_pb2.Timing(stage="inference", seconds=info.inference_seconds),
                     common_pb2.Timing(stage="encode", seconds=encode_s)])

    async def Info(self, request, context):
        c = self.caps
        d = self.backend.describe()
        return generator_pb2.GeneratorInfo(
            model=d["model"], pipeline_class=d["pipeline_class"], device=d["device"], dtype=d["dtype"],
            default_width=c.default_width, default_height=c.default_height, size_multiple=c.size_multiple,
            max_width=c.max_width, max_height=c.max_height, default_steps=c.default_steps, max_steps=c.max_steps,
            default_guidance=c.default_guidance, max_guidance=c.max_guidance, max_images=c.max_images,
            max_prompt_tokens=c.max_prompt_tokens, max_batch_size=self.batcher.max_batch_size,
            max_queue=self.batcher.max_queue, max_prompt_chars=contract.MAX_PROMPT_CHARS, backend=d.get("backend", ""))


def build(cfg: GeneratorConfig) -> tuple[Pipeline, MicroBatcher, GeneratorServicer]:
    backend = build_backend(cfg)
    batcher = MicroBatcher(backend.generate_batch, METRICS, max_batch_size=cfg.max_batch_size,
                           max_delay_s=cfg.max_batch_delay_ms / 1000.0, max_queue=cfg.max_queue, name=SERVICE)
    return backend, batcher, GeneratorServicer(backend, batcher, cfg)


def check(cfg: GeneratorConfig) -> str | None:
    if not cfg.model:
        return "--model is required (or set GENIR_GENERATOR_MODEL): a diffusers pipeline folder"
    for flag in ("max_batch_size", "max_queue", "max_width", "max_height", "max_steps", "max_images"):
        if getattr(cfg, flag) < 1:
            return f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(cfg, flag)})"
    if cfg.offload != "none" and resolve_device(cfg.device) != "cuda":
        return (f"--offload {cfg.offload} moves pipeline parts onto a GPU while they run; this generator runs on "
                f"{resolve_device(cfg.device)}")
    return None


async def start(cfg: GeneratorConfig) -> int:
    try:
        backend, batcher, servicer = build(cfg)
    except BackendError as e:
        log.error("%s", e)
        return 2

    async def load():
        await asyncio.to_thread(backend.load)
        servicer.ready()
        batcher.start()

    async def close():
        await batcher.close()
        backend.close()

    service = Service("genir.v1.Generator", generator_pb2_grpc.add_GeneratorServicer_to_server, servicer)
    return await serve(cfg, [service], load=load, close=close)


def main(args) -> int:
    return server.main(GeneratorConfig.from_args(args), SERVICE, start, check)
