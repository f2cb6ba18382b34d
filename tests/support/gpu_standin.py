"""A GPU STAND-IN, named as such: a generator backend with the limits of SD3.5-Large that records
what it is asked to render instead of running a 1024² SD3.5-Large denoiser (which needs a GPU).

It plugs into the real generator service (`genir serve generator --backend
tests.support.gpu_standin:SD35LargeStandIn --model <tiny sd3 folder>`), so validation, batching,
seeds and encoding are the service's own; only the pipeline call is replaced. Every item reaching
the pipeline-call boundary is appended as a JSON line to $GENIR_STANDIN_RECORD. The prompt limit is
counted with the folder's real T5 tokenizer (tokenizer_3), as SD3.5 counts it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict
from pathlib import Path

from services.generator.pipeline import Item, Limits

# stabilityai/stable-diffusion-3.5-large: transformer sample_size 128 x VAE 8 = 1024 px default,
# pos_embed_max_size 192 x patch 2 x VAE 8 = 3072 px largest side; the pipeline's call defaults
# are 28 steps and guidance 7.0; T5 reads 256 tokens (diffusers' default max_sequence_length).
SD35_LARGE_LIMITS = Limits(size_multiple=16, default_width=1024, default_height=1024, max_size=3072,
                           default_steps=28, default_guidance=7.0, max_prompt_tokens=256,
                           prompt_limit_source="T5EncoderModel max_sequence_length", max_sequence_length=256)


class SD35LargeStandIn:
    def __init__(self, path, *, model_id=None, device="cpu"):
        self.path = Path(path)
        self.model_id = model_id or "stable-diffusion-3.5-large (GPU stand-in)"
        self.device = device
        self.limits = SD35_LARGE_LIMITS
        self.record = Path(os.environ["GENIR_STANDIN_RECORD"])
        self._lock = threading.Lock()
        self._tok = None

    def load(self):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(self.path / "tokenizer_3"))
        return self

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"]) if text else 0

    def generate_batch(self, items: list[Item]):
        from PIL import Image

        with self._lock, self.record.open("a") as f:
            for it in items:
                f.write(json.dumps(asdict(it)) + "\n")
        return [Image.new("RGB", (it.width, it.height), (it.seed % 251, 80, 160)) for it in items]

    def describe(self) -> dict:
        return {"model": self.model_id, "pipeline_class": "StableDiffusion3Pipeline", "backend": "gpu-standin",
                "device": self.device, "dtype": "bfloat16"}

    def close(self) -> None:
        pass
