"""A second generator backend, not diffusers: a tiny scale-wise autoregressive text-to-image model.

It follows the shape of Infinity / VAR generation, small enough to build and run on a CPU: the
image is a pyramid of token maps (1x1, 2x2, 4x4, 8x8, 16x16 cells), each cell a token of a small
colour codebook; scale s is sampled from logits that see the text vector, the upsampled colours of
scale s-1 and the cell's position, with classifier-free guidance (conditional and empty-text
logits mixed by `guidance`); the last map is upsampled to the requested size. `steps` is the
number of scales run (fewer = coarser). Weights are random: it shows that a non-diffusers model
serves through the same service (batching, seeds, limits), not image quality.

    build_tiny(folder)                       # config.json, model.safetensors, tokenizer/
    genir serve generator --backend scalewise --model folder

Determinism: each item is sampled with its own torch.Generator(seed), one item at a time inside
the batch call, so an image never depends on the batch it ran in.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from services.generator.pipeline import Item, Limits, resolve_device

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer"


@dataclass(frozen=True)
class ScaleWiseConfig:
    vocab_size: int
    text_dim: int = 32
    hidden: int = 64
    codebook: int = 16
    scales: tuple[int, ...] = (1, 2, 4, 8, 16)
    max_text_tokens: int = 128
    default_size: int = 256
    max_size: int = 1024
    size_multiple: int = 16
    default_guidance: float = 3.0    # Infinity's cfg in the paper's script
    tau: float = 1.0                 # sampling temperature, as the script's tau


def _model(cfg: ScaleWiseConfig):
    import torch
    from torch import nn

    class ScaleWise(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab_size, cfg.text_dim)
            self.colours = nn.Parameter(torch.rand(cfg.codebook, 3))
            self.head = nn.Sequential(nn.Linear(cfg.text_dim + 3 + 2 + 1, cfg.hidden), nn.GELU(),
                                      nn.Linear(cfg.hidden, cfg.codebook))

        def text_vector(self, ids, mask):
            e = self.embed(ids) * mask[..., None]
            return e.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

        def logits(self, text, prev, scale_index: int):
            """Cell logits of one scale: text (1, D), prev colours (s, s, 3)."""
            s = prev.shape[0]
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
            level = torch.full((s, s, 1), scale_index / max(1, len(cfg.scales) - 1))
            feats = torch.cat([text.expand(s, s, -1), prev, ys[..., None], xs[..., None], level], -1)
            return self.head(feats)

    return ScaleWise()


def build_tiny(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random scale-wise model folder (T5 tokenizer of the tiny models)."""
    import torch
    from safetensors.torch import save_file

    from genir.tiny_models.tokenizers_local import t5_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = t5_tokenizer(model_max_length=128)
    tok.save_pretrained(path / TOKENIZER)
    cfg = ScaleWiseConfig(vocab_size=len(tok))
    torch.manual_seed(seed)
    model = _model(cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS))
    (path / CONFIG).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return path


class ScaleWiseBackend:
    """The generator-backend interface (services/generator/backends.py) over the scale-wise model."""

    def __init__(self, path, *, model_id=None, device="auto"):
        self.path = Path(path)
        self.model_id = model_id or self.path.resolve().name
        self.device = resolve_device(device)
        self.limits: Limits | None = None
        self._lock = threading.Lock()

    def load(self) -> "ScaleWiseBackend":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        if not (self.path / CONFIG).is_file():
            raise FileNotFoundError(f"{self.path}: not a scale-wise model folder (no {CONFIG})")
        raw = json.loads((self.path / CONFIG).read_text())
        self.cfg = ScaleWiseConfig(**{**raw, "scales": tuple(raw["scales"])})
        self.model = _model(self.cfg)
        self.model.load_state_dict(load_file(str(self.path / WEIGHTS)))
        self.model.eval().to(self.device)
        self.tok = AutoTokenizer.from_pretrained(str(self.path / TOKENIZER))
        self._count_tok = AutoTokenizer.from_pretrained(str(self.path / TOKENIZER))  # never shared across threads
        c = self.cfg
        self.limits = Limits(size_multiple=c.size_multiple, default_width=c.default_size,
                             default_height=c.default_size, max_size=c.max_size, default_steps=len(c.scales),
                             default_guidance=c.default_guidance, max_prompt_tokens=c.max_text_tokens,
                             prompt_limit_source="scale-wise text encoder context", max_sequence_length=None)
        return self

    def count_tokens(self, text: str) -> int:
        return len(self._count_tok(text, add_special_tokens=True, truncation=False)["input_ids"]) if text else 0

    def _text(self, prompt: str):
        import torch

        ids = self.tok(prompt, add_special_tokens=True, truncation=True, max_length=self.cfg.max_text_tokens,
                       return_tensors="pt")["input_ids"].to(self.device)
        return self.model.text_vector(ids, torch.ones_like(ids, dtype=torch.float32))

    def _sample(self, it: Item):
        import torch
        import torch.nn.functional as F

        gen = torch.Generator(self.device).manual_seed(it.seed)
        cond = self._text(it.prompt)
        uncond = torch.zeros_like(cond)
        colours = torch.full((1, 1, 3), 0.5, device=self.device)
        n_scales = max(1, min(it.steps, len(self.cfg.scales)))
        for i, s in enumerate(self.cfg.scales[:n_scales]):
            prev = F.interpolate(colours.permute(2, 0, 1)[None], size=(s, s), mode="nearest")[0].permute(1, 2, 0)
            lc, lu = self.model.logits(cond, prev, i), self.model.logits(uncond, prev, i)
            logits = lu + it.guidance * (lc - lu)
            probs = torch.softmax(logits.reshape(-1, self.cfg.codebook) / self.cfg.tau, -1)
            idx = torch.multinomial(probs, 1, generator=gen).reshape(s, s)
            colours = self.model.colours[idx].clamp(0, 1)
        img = F.interpolate(colours.permute(2, 0, 1)[None], size=(it.height, it.width), mode="bilinear",
                            align_corners=False)[0]
        return img

    def generate_batch(self, items) -> list:
        import torch
        from PIL import Image

        out = []
        with self._lock, torch.inference_mode():
            for it in items:
                arr = (self._sample(it).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
                out.append(Image.fromarray(arr, "RGB"))
        return out

    def describe(self) -> dict:
        return {"model": self.model_id, "pipeline_class": "ScaleWiseAR", "backend": "scalewise",
                "device": self.device, "dtype": "float32"}

    def close(self) -> None:
        self.model = None
