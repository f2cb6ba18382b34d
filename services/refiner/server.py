"""genir serve refiner: the genir.v1.Refiner gRPC surface over the Gemma-3 model served by Triton.

Each RPC validates its request, builds a versioned prompt (prompts.py), sends it to Triton
(triton_client.py), cleans the answer (postprocess.py) and reports text, prompt id, token counts,
timings, model and the seed used (drawn here when the caller gave none, so every answer can be
reproduced).

Health follows Triton's readiness: SERVING while Triton reports the model ready, NOT_SERVING
while it does not (checked every --triton-health-seconds), so a readiness probe takes a refiner
without a working Triton out of rotation. `--triton-wait S` waits up to S seconds for Triton at
start-up and logs whether it is ready. While Triton is down, calls fail fast with UNAVAILABLE
naming Triton's address (after retrying for --triton-retry-seconds); callers retry UNAVAILABLE
with backoff.

Images arrive as bytes once and by their sha256 after that (image_cache.py, --image-cache-mb).

Metrics (besides grpc_server_*): genir_refiner_tokens_total{kind="prompt"|"completion"},
genir_refiner_triton_seconds{prompt} (one Triton call, retries included) and
genir_refiner_images_received_total{form="bytes"|"reference"|"unknown_reference"}. Triton's own
nv_inference_* series (request/queue/compute times, nv_inference_count vs nv_inference_exec_count
for batching) are on Triton's metrics port (8002); scrape both (README.md).
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from genir import contract
from genir.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
from services.common import config, images, server, tls, validation
from services.common.errors import InvalidArgument
from services.common.server import Service, serve
from services.refiner import postprocess, prompts
from services.refiner.image_cache import ImageCache
from services.refiner.triton_client import TritonVLM

log = logging.getLogger("genir.refiner")

SERVICE = "refiner"
DEFAULTS = contract.DEFAULT_SAMPLING  # the paper's sampling (genir/contract.py says where each comes from)
SOURCES = {refiner_pb2.FEEDBACK_SOURCE_UNSPECIFIED: "", refiner_pb2.FEEDBACK_SOURCE_COMPARISON: prompts.COMPARISON,
           refiner_pb2.FEEDBACK_SOURCE_CRITIQUE: prompts.CRITIQUE, refiner_pb2.FEEDBACK_SOURCE_PERSON: prompts.PERSON}
DEADLINE_MARGIN = 0.25  # seconds kept back from the caller's deadline to answer in time

TOKENS = Counter("genir_refiner_tokens_total", "Tokens processed by the vision-language model.", ["kind"])
TRITON_SECONDS = Histogram("genir_refiner_triton_seconds", "Wall time of one Triton call, retries included.",
                           ["prompt"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
for _kind in ("prompt", "completion"):
    TOKENS.labels(_kind)


@dataclass(frozen=True)
class RefinerConfig(config.ClientTLSConfig, config.ServerConfig):
    """Every refiner setting (flags, env GENIR_REFINER_*)."""
    triton_url: str = config.flag("Triton gRPC address host:port", "127.0.0.1:8001")
    triton_model: str = config.flag("model name in Triton's repository", "gemma3")
    triton_timeout: float = config.flag("longest Triton call, seconds (capped by the caller's deadline)", 120.0)
    triton_retry_seconds: float = config.flag(
        "how long UNAVAILABLE from Triton is retried (with backoff) before the call fails", 5.0)
    triton_wait: float = config.flag("seconds to wait for Triton at start-up (0: do not wait)", 0.0)
    triton_health_seconds: float = config.flag(
        "how often health re-checks Triton's readiness (NOT_SERVING while it is not ready)", 2.0)
    max_new_tokens_limit: int = config.flag("largest sampling.max_new_tokens accepted", contract.MAX_NEW_TOKENS_LIMIT)
    model_id: str | None = config.flag("model id reported in responses (default: --triton-model)")
    image_cache_mb: int = config.flag(
        "MiB of received images kept by sha256 so callers can name them again (0: bytes every call)", 256)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.register(parser, RefinerConfig, SERVICE, port=50052, metrics_port=9102)


def resolve_sampling(msg: common_pb2.Sampling, default_tokens: int, limit: int) -> dict:
    """Request sampling -> the JSON Triton takes; unset fields get the paper's defaults."""
    def pick(name: str):
        if not msg.HasField(name):
            return DEFAULTS[name]
        return validation.in_range(getattr(msg, name), f"sampling.{name}", contract.SAMPLING_RANGES[name])

    temperature, top_p = pick("temperature"), pick("top_p")
    tokens = validation.int_range(msg.max_new_tokens, "sampling.max_new_tokens", 1, limit) \
        if msg.HasField("max_new_tokens") else min(default_tokens, limit)
    penalty, top_k = pick("repetition_penalty"), pick("top_k")
    seed = pick("seed") if msg.HasField("seed") else contract.random_seed()
    return {"temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": tokens,
            "repetition_penalty": penalty, "seed": seed}


def requested_tokens(msg: common_pb2.Sampling, limit: int) -> int | None:
    """The caller's max_new_tokens, validated (None = the prompt set's budget for the stage)."""
    if not msg.HasField("max_new_tokens"):
        return None
    return validation.int_range(msg.max_new_tokens, "sampling.max_new_tokens", 1, limit)


def parse_prompt_set(name: str):
    try:
        return prompts.prompt_set(name)
    except ValueError as e:
        raise InvalidArgument(f"prompt_set: {e}") from None


def parse_style(style: int, field: str = "style") -> str:
    if style not in refiner_pb2.CaptionStyle.values():
        raise InvalidArgument(f"{field}: unknown value {style}; allowed: CAPTION_STYLE_GENERATION (1), "
                              f"CAPTION_STYLE_RETRIEVAL (2), or unset for GENERATION")
    return "retrieval" if style == refiner_pb2.CAPTION_STYLE_RETRIEVAL else "generation"


def parse_source(source: int) -> str:
    if source not in SOURCES:
        raise InvalidArgument(f"feedback_source: unknown value {source}; allowed: "
                              + ", ".join(f"{refiner_pb2.FeedbackSource.Name(v)} ({v})" for v in SOURCES))
    return SOURCES[source]


class FieldBytes(bytes):
    """An image's bytes with the request field they came from, so an error from Triton about
    "images[i]" of a prompt can name the field instead, and their SHA-256 (hashed once, on arrival)."""

    def __new__(cls, data: bytes, field: str, digest: bytes | None = None):
        obj = super().__new__(cls, data)
        obj.field = field
        obj.digest = digest
        return obj


def name_images(message: str, images: list) -> str:
    """Triton's "images[i]" (the prompt's order) -> the request field of that image."""
    def field(m: re.Match) -> str:
        i = int(m.group(1))
        return getattr(images[i], "field", m.group(0)) if i < len(images) else m.group(0)

    return re.sub(r"images\[(\d+)\]", field, message)


@dataclass(frozen=True)
class Limits:
    """What one request may carry: new tokens, pixels per image, pixels of all images together."""
    max_new_tokens: int
    max_pixels: int
    max_request_pixels: int = images.DEFAULT_MAX_REQUEST_PIXELS


def request_images(limits: Limits, cache: ImageCache | None, *specs: tuple) -> list[bytes | None]:
    """Bytes of (msg, field, required) images of one request, given as bytes or as the sha256 of
    bytes `cache` holds. Bytes are checked from their headers only, once, when they arrive
    (format, per-image cap); a hash reuses that check; all images share one pixel budget. The
    Triton model decodes each distinct image once and keeps it by content hash, so decoding here
    too would double the work for every call. Data that is corrupt past its header comes back
    from Triton as INVALID_ARGUMENT naming the image."""
    cache = cache if cache is not None else ImageCache(0)   # nothing kept: bytes only
    present = {field: cache.resolve(msg, field, limits.max_pixels) for msg, field, required in specs
               if required or (msg is not None and (msg.data or msg.ref or msg.sha256))}
    images.check_pixel_budget([c.pixels for c in present.values()], limits.max_request_pixels)
    return [FieldBytes(c.data, field, c.digest) if (c := present.get(field)) else None for _, field, _ in specs]


def _budget(request, limits: Limits) -> dict:
    return {"tokens": requested_tokens(request.sampling, limits.max_new_tokens), "limit": limits.max_new_tokens}


def parse_caption(request, limits: Limits, cache: ImageCache | None = None) -> prompts.Prompt:
    style = parse_style(request.style)
    pset = parse_prompt_set(request.prompt_set)
    (target,) = request_images(limits, cache, (request.target, "target", True))
    return pset.caption(target, style, **_budget(request, limits))


def parse_compare(request, limits: Limits, cache: ImageCache | None = None) -> prompts.Prompt:
    retrieval = parse_style(request.style) == "retrieval"
    pset = parse_prompt_set(request.prompt_set)
    target, generated = request_images(limits, cache, (request.target, "target", True),
                                       (request.generated, "generated", True))
    caption = validation.text(request.caption, "caption")
    return pset.compare(target, generated, caption, retrieval=retrieval, **_budget(request, limits))


def parse_refine(request, limits: Limits, cache: ImageCache | None = None) -> prompts.Prompt:
    pset = parse_prompt_set(request.prompt_set)
    source = parse_source(request.feedback_source)
    caption = validation.text(request.caption, "caption")
    feedback = validation.text(request.feedback, "feedback")
    target, generated = request_images(limits, cache, (request.target, "target", False),
                                       (request.generated, "generated", False))
    rank = None
    if request.HasField("shown_rank"):
        rank = validation.int_range(request.shown_rank, "shown_rank", 0, 2**31 - 1)
        if target is None:
            raise InvalidArgument("shown_rank: only meaningful with a target (simulated prediction feedback)")
    if target is None and source in (prompts.COMPARISON, prompts.CRITIQUE):
        raise InvalidArgument(f"feedback_source: {source} feedback needs the target (simulated user)")
    return pset.refine(caption, feedback, target=target, shown=generated, shown_rank=rank, source=source,
                       **_budget(request, limits))


def parse_critique(request, limits: Limits, cache: ImageCache | None = None) -> prompts.Prompt:
    pset = parse_prompt_set(request.prompt_set)
    (target,) = request_images(limits, cache, (request.target, "target", True))
    caption = validation.text(request.caption, "caption")
    return pset.critique(target, caption, **_budget(request, limits))


class RefinerServicer(refiner_pb2_grpc.RefinerServicer):
    def __init__(self, vlm: TritonVLM, *, model_id: str, max_new_tokens: int, max_pixels: int,
                 max_request_pixels: int = images.DEFAULT_MAX_REQUEST_PIXELS, image_cache_mb: int = 0):
        self.vlm = vlm
        self.images = ImageCache(image_cache_mb * 2**20)
        self.model_id = model_id
        self.limits = Limits(max_new_tokens, max_pixels, max_request_pixels)

    async def _run(self, prompt: prompts.Prompt, sampling_msg, context) -> refiner_pb2.RefinerResponse:
        start = time.perf_counter()
        sampling = resolve_sampling(sampling_msg, prompt.max_new_tokens, self.limits.max_new_tokens)
        left = context.time_remaining()
        timeout = None if left is None else max(0.05, left - DEADLINE_MARGIN)
        try:
            done = await self.vlm.generate(prompt.messages, prompt.images, sampling, timeout=timeout)
        except InvalidArgument as e:
            raise InvalidArgument(name_images(e.message, prompt.images)) from None
        TRITON_SECONDS.labels(prompt.id.split("@")[0]).observe(done.seconds)
        TOKENS.labels("prompt").inc(done.prompt_tokens)
        TOKENS.labels("completion").inc(done.completion_tokens)
        text = postprocess.clean(done.text, prompt.output) or done.text.strip()
        return refiner_pb2.RefinerResponse(
            text=text, prompt_id=prompt.id, prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens, model=self.model_id, seed=sampling["seed"],
            timings=[common_pb2.Timing(stage="triton", seconds=done.seconds),
                     common_pb2.Timing(stage="total", seconds=time.perf_counter() - start)])

    # ------------------------------------------------------------------ RPCs
    async def Caption(self, request, context):
        return await self._run(parse_caption(request, self.limits, self.images), request.sampling, context)

    async def Compare(self, request, context):
        return await self._run(parse_compare(request, self.limits, self.images), request.sampling, context)

    async def Refine(self, request, context):
        return await self._run(parse_refine(request, self.limits, self.images), request.sampling, context)

    async def Critique(self, request, context):
        return await self._run(parse_critique(request, self.limits, self.images), request.sampling, context)

    async def Info(self, request, context):
        return refiner_pb2.RefinerInfo(
            model=self.model_id, triton_model=self.vlm.model, prompt_sets=list(prompts.PROMPT_SETS),
            default_prompt_set=prompts.DEFAULT_SET, temperature=DEFAULTS["temperature"], top_p=DEFAULTS["top_p"],
            top_k=DEFAULTS["top_k"], repetition_penalty=DEFAULTS["repetition_penalty"],
            max_new_tokens_limit=self.limits.max_new_tokens)


def build(cfg: RefinerConfig) -> tuple[TritonVLM, RefinerServicer]:
    creds = tls.channel_credentials(cfg.client_tls_ca, cfg.client_tls_cert, cfg.client_tls_key)
    vlm = TritonVLM(cfg.triton_url, cfg.triton_model, timeout=cfg.triton_timeout,
                    retry_seconds=cfg.triton_retry_seconds, max_message_mb=cfg.max_message_mb, creds=creds)
    servicer = RefinerServicer(vlm, model_id=cfg.model_id or cfg.triton_model,
                               max_new_tokens=cfg.max_new_tokens_limit, max_pixels=cfg.max_image_pixels,
                               max_request_pixels=cfg.max_request_pixels, image_cache_mb=cfg.image_cache_mb)
    return vlm, servicer


def check(cfg: RefinerConfig) -> str | None:
    if cfg.max_new_tokens_limit < 1 or cfg.triton_timeout <= 0:
        return "--max-new-tokens-limit must be >= 1 and --triton-timeout > 0"
    if cfg.image_cache_mb < 0:
        return "--image-cache-mb must be >= 0"
    return None


async def start(cfg: RefinerConfig) -> int:
    vlm, servicer = build(cfg)

    async def load():
        # Start-up does not wait for Triton beyond --triton-wait; health follows it afterwards.
        if await vlm.wait_ready(cfg.triton_wait):
            log.info("Triton at %s: model %s is ready", cfg.triton_url, cfg.triton_model)
        else:
            log.warning("Triton at %s: model %s is not ready yet; calls get UNAVAILABLE until it is",
                        cfg.triton_url, cfg.triton_model)

    service = Service("genir.v1.Refiner", refiner_pb2_grpc.add_RefinerServicer_to_server, servicer)
    return await serve(cfg, [service], load=load, close=vlm.close, readiness=vlm.ready,
                       readiness_every=cfg.triton_health_seconds)


def main(args) -> int:
    return server.main(RefinerConfig.from_args(args), SERVICE, start, check)
