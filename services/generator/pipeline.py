"""The generator's backend: one diffusers text-to-image pipeline, loaded from a local folder.

Any pipeline that `AutoPipelineForText2Image` can assemble works (SD3.5 is the production
target); everything the service needs to know about the model (size multiple, default size,
prompt token limit, default steps and guidance) is read from the loaded pipeline, never
special-cased by model size. No gRPC here: the servicer validates and converts.

Determinism. Every image gets its own `torch.Generator(device).manual_seed(seed)`, so its
initial noise does not depend on its neighbours. That alone does not make a request's pixels
independent of the batch it ran in: matmul and convolution kernels pick different algorithms
for different row counts (on CPU a single-row linear takes a GEMV path that rounds differently
from the GEMM path used for 4+ rows; the transformer's patch-embedding convolution differs
between batch 1 and batch 8). Passing pre-drawn `latents=` does not help either, since the noise
is already identical. With `batch_invariant=True` (the default) the backend removes those
sources: linear layers with few rows (timestep/pooled-text embeddings, AdaLN modulation, CLIP
text projections) run on a fixed, zero-padded row count; the transformer's convolutions run one
sample at a time; the VAE decodes one image at a time (diffusers' VAE slicing). The big
token-by-channel matmuls already compute each row the same way at any batch size. The tests
check the result end to end: an image is byte-identical alone and inside a batch of 8.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from services.common import presets
from services.common.batch_invariance import PAD_ROWS, pad_linears, per_sample_convs

log = logging.getLogger("genir.generator.pipeline")

DTYPES = ("auto", "bfloat16", "float16", "float32")
# Row count that small linear inputs are padded to in batch-invariant mode: above the rows of
# any per-image vector in a call of up to 32 images with guidance (2 x 32), small enough to cost
# nothing next to the token matmuls.
# Encoders whose prompt length is set by the pipeline's max_sequence_length, not the tokenizer.
_LONG_ENCODERS = ("T5", "UMT5", "Gemma", "Qwen", "Llama", "Mistral")


@dataclass(frozen=True)
class Item:
    """One image to render (a request with num_images=n becomes n items with seeds seed..seed+n-1)."""
    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    negative_prompt: str = ""

    def key(self) -> tuple:
        """Items with equal keys can share one pipeline call."""
        return (self.width, self.height, self.steps, round(float(self.guidance), 6), bool(self.negative_prompt))


@dataclass(frozen=True)
class Limits:
    """What the loaded model accepts, derived from its configuration."""
    size_multiple: int
    default_width: int
    default_height: int
    max_size: int | None           # largest side the model's position embedding covers (None = unbounded)
    default_steps: int
    default_guidance: float
    max_prompt_tokens: int
    prompt_limit_source: str       # which encoder sets max_prompt_tokens, for error messages
    max_sequence_length: int | None  # passed to the pipeline when it has a long-text encoder


OFFLOAD_MODES = ("none", "model", "sequential")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


class Pipeline:
    """Loads the pipeline once; `generate_batch` renders compatible items in one call."""

    def __init__(self, path: str | Path, *, model_id: str | None = None, device: str = "auto",
                 dtype: str = "auto", drop_t5: bool = False, compile: bool = False,
                 attention_slicing: bool = False, vae_tiling: bool = False, batch_invariant: bool = True,
                 max_sequence_length: int = 0, offload: str = "none"):
        self.path = Path(path)
        self.model_id = model_id or self.path.resolve().name
        self.device = resolve_device(device)
        self.dtype_name = dtype
        self.drop_t5 = drop_t5
        self.compile = compile
        self.attention_slicing = attention_slicing
        self.vae_tiling = vae_tiling
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload: {offload!r} is not one of {OFFLOAD_MODES}")
        self.offload = offload
        self.batch_invariant = batch_invariant
        self.requested_max_sequence_length = max_sequence_length
        self.pipe = None
        self.limits: Limits | None = None
        self._lock = threading.Lock()  # one pipeline call at a time, whoever calls
        self._call_params: set[str] = set()
        self._counting_tokenizers: dict[int, object] = {}

    @classmethod
    def from_args(cls, args) -> "Pipeline":
        """The diffusers backend as `genir serve generator` configures it (services/generator/backends.py)."""
        return cls(args.model, model_id=args.model_id, device=args.device, dtype=args.dtype,
                   drop_t5=args.drop_t5, compile=args.compile, attention_slicing=args.attention_slicing,
                   vae_tiling=args.vae_tiling, batch_invariant=args.batch_invariant,
                   max_sequence_length=args.max_sequence_length, offload=getattr(args, "offload", "none"))

    # ------------------------------------------------------------------ loading
    def load(self) -> "Pipeline":
        from diffusers import AutoPipelineForText2Image

        if not (self.path / "model_index.json").is_file():
            raise FileNotFoundError(f"{self.path}: not a diffusers pipeline folder (no model_index.json)")
        dtype = resolve_dtype(self.dtype_name, self.device)
        kwargs = {"dtype": dtype}
        if self.drop_t5:
            kwargs.update(self._t5_none())
        start = time.perf_counter()
        pipe = AutoPipelineForText2Image.from_pretrained(str(self.path), **kwargs)
        self.attach(pipe)
        if self.compile:
            self.warm_up()
        log.info("loaded %s (%s) from %s on %s/%s in %.1fs; limits %s", self.model_id, type(pipe).__name__,
                 self.path, self.device, str(dtype).removeprefix("torch."), time.perf_counter() - start,
                 dataclasses.asdict(self.limits))
        return self

    def attach(self, pipe) -> "Pipeline":
        """Serve an already-assembled pipeline (load() and benchmarks): device, switches, limits."""
        import torch

        if self.offload == "model":      # each component moves to the GPU only for its own forward pass
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.dtype = getattr(pipe, "dtype", None) or resolve_dtype(self.dtype_name, self.device)
        if self.batch_invariant:
            self._make_batch_invariant(pipe)
        if self.attention_slicing:
            try:
                pipe.enable_attention_slicing()
            except Exception as e:  # noqa: BLE001 - some denoisers have no sliceable attention
                log.warning("attention slicing not supported by %s: %s", type(pipe).__name__, e)
        if self.vae_tiling and getattr(pipe, "vae", None) is not None and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        if self.compile:
            name = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
            setattr(pipe, name, torch.compile(getattr(pipe, name)))
        self.pipe = pipe
        self._call_params = set(inspect.signature(pipe.__call__).parameters)
        self._counting_tokenizers = {id(t): copy.deepcopy(t) for _, t, _ in self._tokenizers(pipe)}
        self.limits = self._derive_limits(pipe)
        return self

    def warm_up(self) -> None:
        """One small call at the default size, so torch.compile's first compilation happens before
        the server reports SERVING rather than inside a client's deadline."""
        lim = self.limits
        start = time.perf_counter()
        self.generate_batch([Item("warm-up", 0, lim.default_width, lim.default_height, 2, lim.default_guidance)])
        log.info("warm-up call (compiles the denoiser) took %.1fs", time.perf_counter() - start)

    def close(self) -> None:
        self.pipe = None

    def _t5_none(self) -> dict:
        """text_encoder_3/tokenizer_3=None when the folder's pipeline has a third (T5) encoder."""
        import json

        index = json.loads((self.path / "model_index.json").read_text())
        if "text_encoder_3" in index:
            return {"text_encoder_3": None, "tokenizer_3": None}
        log.warning("--drop-t5: %s has no text_encoder_3; loading it whole", self.path)
        return {}

    # ------------------------------------------------------------------ limits
    def _derive_limits(self, pipe) -> Limits:
        vae_factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        transformer = getattr(pipe, "transformer", None)
        unet = getattr(pipe, "unet", None)
        cfg = (transformer if transformer is not None else unet).config  # no `or`: compiled modules refuse bool()
        patch = int(getattr(cfg, "patch_size", 1) or 1) if transformer is not None else 1
        sample = getattr(cfg, "sample_size", None)
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        default_size = int(sample) * vae_factor if sample else 1024
        pos_max = getattr(cfg, "pos_embed_max_size", None) if transformer is not None else None
        max_size = int(pos_max) * patch * vae_factor if pos_max else None
        params = inspect.signature(pipe.__call__).parameters
        steps = params.get("num_inference_steps")
        guidance = params.get("guidance_scale")
        tokens, source, seq_len = self._token_limit(pipe, params)
        return Limits(size_multiple=vae_factor * patch, default_width=default_size, default_height=default_size,
                      max_size=max_size,
                      default_steps=int(steps.default) if steps is not None and steps.default else 28,
                      default_guidance=float(guidance.default) if guidance is not None and guidance.default is not None
                      else 7.0,
                      max_prompt_tokens=tokens, prompt_limit_source=source, max_sequence_length=seq_len)

    def _tokenizers(self, pipe=None) -> list[tuple[str, object, object]]:
        """(name, tokenizer, its text encoder) for every text encoder the pipeline has loaded."""
        pipe = self.pipe if pipe is None else pipe
        out = []
        for suffix in ("", "_2", "_3"):
            tok = getattr(pipe, f"tokenizer{suffix}", None)
            enc = getattr(pipe, f"text_encoder{suffix}", None)
            if tok is not None and enc is not None:
                out.append((f"tokenizer{suffix}", tok, enc))
        return out

    @staticmethod
    def _is_long(encoder) -> bool:
        return type(encoder).__name__.startswith(_LONG_ENCODERS)

    def _token_limit(self, pipe, params) -> tuple[int, str, int | None]:
        """Longest prompt (in tokens) that the pipeline's encoders use in full.

        A long-text encoder (T5 in SD3.5/Flux) reads up to max_sequence_length tokens; the CLIP
        encoders beside it truncate at 77, as they do in the reference pipelines. Without one,
        the CLIP limit is the limit.
        """
        toks = self._tokenizers(pipe)
        long = [(t, e) for _, t, e in toks if self._is_long(e)]
        if long and "max_sequence_length" in params:
            tok, enc = long[0]
            wanted = presets.max_sequence_length(type(pipe).__name__, self.requested_max_sequence_length)
            seq = min(wanted, int(min(tok.model_max_length or 4096, 4096)))
            return seq, f"{type(enc).__name__} max_sequence_length", seq
        if not toks:
            return 77, "default", None
        limit = int(min(min(t.model_max_length or 77, 4096) for _, t, _ in toks))
        return limit, f"{type(toks[0][2]).__name__} context length", None

    def count_tokens(self, text: str) -> int:
        """Token count (with special tokens) of `text` by the tokenizer that sets the limit."""
        if not text:
            return 0
        toks = self._tokenizers()
        long = [t for _, t, e in toks if self._is_long(e)]
        chosen = long[:1] if long and self.limits.max_sequence_length else [t for _, t, _ in toks]
        # Hugging Face tokenizers change their padding/truncation state on every call, and the
        # pipeline's own copies are in use on the batch thread: count with private copies.
        chosen = [self._counting_tokenizers.get(id(t), t) for t in chosen]
        counts = [len(t(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]) for t in chosen]
        return max(counts, default=0)

    # ------------------------------------------------------------------ batch invariance
    def _make_batch_invariant(self, pipe) -> None:
        import torch

        denoiser = getattr(pipe, "transformer", None)
        linears = sum(pad_linears(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module))
        # a transformer has a few convs (patch embedding); a UNet is all convs
        convs = per_sample_convs(denoiser) if denoiser is not None else 0
        if getattr(pipe, "vae", None) is not None and hasattr(pipe.vae, "enable_slicing"):
            pipe.vae.enable_slicing()
        log.info("batch-invariant mode: %d linears pad inputs of fewer than %d rows, %d convs run per sample, "
                 "VAE decodes per image", linears, PAD_ROWS, convs)

    # ------------------------------------------------------------------ inference
    def generate_batch(self, items: Sequence[Item]) -> list:
        """Render compatible items (equal `key()`) in ONE pipeline call; PIL images in item order."""
        import torch

        if not items:
            return []
        first = items[0]
        if any(it.key() != first.key() for it in items):
            raise ValueError("generate_batch: items differ in size, steps, guidance or negative-prompt use")
        kwargs = dict(prompt=[it.prompt for it in items], width=first.width, height=first.height,
                      num_inference_steps=first.steps, guidance_scale=first.guidance, output_type="pil",
                      generator=[torch.Generator(self.device).manual_seed(it.seed) for it in items])
        if first.negative_prompt:
            kwargs["negative_prompt"] = [it.negative_prompt for it in items]
        if self.limits.max_sequence_length and "max_sequence_length" in self._call_params:
            kwargs["max_sequence_length"] = self.limits.max_sequence_length
        with self._lock, torch.inference_mode():
            out = self.pipe(**kwargs)
        return list(out.images)

    def describe(self) -> dict:
        return {"model": self.model_id, "pipeline_class": type(self.pipe).__name__ if self.pipe else "",
                "backend": "diffusers", "device": self.device, "dtype": str(getattr(self, "dtype", self.dtype_name)).removeprefix("torch.")}
