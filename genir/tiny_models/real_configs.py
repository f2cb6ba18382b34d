"""Real-size SD3.5-medium pipeline with random weights, for GPU benchmarks without downloads.

Every component is built from the published ``stabilityai/stable-diffusion-3.5-medium``
config values; only the weights are random and the tokenizers are the local ones
(their ids fit in the real vocab sizes: 49408 for CLIP, 32128 for T5). Timing and memory
are those of the real model; the images are noise.

Parameter counts: transformer 2.24 B, VAE 84 M, CLIP-L 124 M, CLIP-G 695 M, T5-XXL encoder 4.76 B
(4.89 B on the meta device, where the T5 input embedding is not tied to ``shared``).
Measured on one H100 (bf16, torch 2.11): construction 0.7 s and 15.2 GiB; 1024x1024 with CFG takes
0.41 s for 2 steps and 1.1 s for 10 steps once warm, peaking at 17.6 GiB.
Construct on ``device="meta"`` (e.g. under ``accelerate.init_empty_weights()``) to inspect shapes for free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .sd3 import assemble_pipeline, clip_text_config
from .tokenizers_local import clip_tokenizer, t5_tokenizer

CLIP_VOCAB, T5_VOCAB = 49408, 32128

SD35_MEDIUM_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)
SD35_MEDIUM_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    force_upcast=True,
    use_quant_conv=False,
    use_post_quant_conv=False,
    scaling_factor=1.5305,
    shift_factor=0.0609,
)
CLIP_L = dict(hidden=768, layers=12, heads=12, intermediate=3072, proj=768, act="quick_gelu")
CLIP_G = dict(hidden=1280, layers=32, heads=20, intermediate=5120, proj=1280, act="gelu")
T5_XXL = dict(d_model=4096, num_layers=24, num_heads=64, d_kv=64, d_ff=10240, feed_forward_proj="gated-gelu")


@contextlib.contextmanager
def _construct_on(device, dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype`` (no fp32 CPU copy of 8 B parameters)."""
    import torch

    old = torch.get_default_dtype()
    if dtype is not None and dtype.is_floating_point:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _cast_float_buffers(module, dtype) -> None:
    for sub in module.modules():
        for name, buf in sub.named_buffers(recurse=False):
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                sub._buffers[name] = buf.to(dtype)


# stabilityai/stable-diffusion-3.5-large transformer/config.json (8.1 B parameters); the text
# encoders and the VAE are the same as Medium's.
SD35_LARGE_TRANSFORMER = {**SD35_MEDIUM_TRANSFORMER, "num_layers": 38, "num_attention_heads": 38,
                          "caption_projection_dim": 2432, "pos_embed_max_size": 192,
                          "dual_attention_layers": ()}   # no MMDiT-X layers: Large is plain MMDiT


def sd35_large_pipeline(dtype=None, device="cpu", with_t5: bool = True, seed: int | None = 0):
    """As ``sd35_medium_pipeline``, with the SD3.5-Large transformer."""
    return sd35_medium_pipeline(dtype, device, with_t5, seed, transformer=SD35_LARGE_TRANSFORMER)


def sd35_medium_pipeline(dtype=None, device="cpu", with_t5: bool = True, seed: int | None = 0,
                         transformer: dict | None = None):
    """A ``StableDiffusion3Pipeline`` at SD3.5-medium size with random weights.

    ``dtype`` (default float32) and ``device`` apply to every component; ``device="meta"``
    allocates nothing. ``with_t5=False`` drops ``text_encoder_3``/``tokenizer_3`` as
    ``from_pretrained(..., text_encoder_3=None, tokenizer_3=None)`` does for the real model.
    """
    import torch
    from transformers import T5Config

    from ._common import seeded

    dtype = dtype or torch.float32
    tok1 = clip_tokenizer(77)
    tok2 = clip_tokenizer(77, pad_token="!")
    tok3 = t5_tokenizer(512) if with_t5 else None
    cfg1 = clip_text_config(tok1, vocab_size=CLIP_VOCAB, **CLIP_L)
    cfg2 = clip_text_config(tok2, vocab_size=CLIP_VOCAB, **CLIP_G)
    t5 = None
    if with_t5:
        t5 = T5Config(
            vocab_size=T5_VOCAB,
            pad_token_id=tok3.pad_token_id,
            eos_token_id=tok3.eos_token_id,
            decoder_start_token_id=tok3.pad_token_id,
            **T5_XXL,
        )
    rng = seeded(seed) if seed is not None else contextlib.nullcontext()
    with rng, _construct_on(device, dtype):
        pipe = assemble_pipeline(
            tokenizers=(tok1, tok2, tok3),
            text_configs=(cfg1, cfg2),
            t5_config=t5,
            transformer_kwargs=transformer or SD35_MEDIUM_TRANSFORMER,
            vae_kwargs=SD35_MEDIUM_VAE,
        )
        # buffers created with an explicit float32 (e.g. the transformer's pos_embed) follow too,
        # as they would when loading the real checkpoint with from_pretrained(dtype=...)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                _cast_float_buffers(component, dtype)
    return pipe


# ------------------------------------------------------------------------------ BLIP-base (retriever)
# Salesforce/blip-itm-base-coco: ViT-B/16 image tower, BERT-base text tower with cross-attention,
# 256-d ITC projections. GenIR/ChatIR run it at 224 px (197 image tokens).
BLIP_BASE_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=384, patch_size=16)
BLIP_BASE_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      encoder_hidden_size=768, vocab_size=30524, max_position_embeddings=512)
BLIP_BASE_EMBED_DIM = 256


def build_blip_base(path, seed: int = 0):
    """Write a BLIP-base-shaped image-text retrieval folder (random weights, local tokenizer) to ``path``."""
    from pathlib import Path

    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    from ._common import seeded
    from .retrievers import _blip_tokenizer

    path = Path(path)
    tok = _blip_tokenizer()
    config = BlipConfig(
        text_config=dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.sep_token_id,
                         sep_token_id=tok.sep_token_id, **BLIP_BASE_TEXT),
        vision_config=dict(initializer_range=0.02, **BLIP_BASE_VISION),
        image_text_hidden_size=BLIP_BASE_EMBED_DIM, projection_dim=BLIP_BASE_EMBED_DIM)
    with seeded(seed):
        model = BlipForImageTextRetrieval(config).eval()
    size = BLIP_BASE_VISION["image_size"]
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": size, "width": size}), tokenizer=tok
                  ).save_pretrained(path)
    model.save_pretrained(path)
    return path


# ------------------------------------------------------------------------ Gemma-3-4b-it (refiner)
# google/gemma-3-4b-it config.json: a 34-layer text decoder (5 sliding-window layers per global
# one) and a SigLIP-so400m image tower at 896 px pooled to 256 tokens.
GEMMA3_4B_TEXT = dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                      vocab_size=262208, max_position_embeddings=131072)
GEMMA3_4B_TEXT["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                 for i in range(GEMMA3_4B_TEXT["num_hidden_layers"])]
GEMMA3_4B_VISION = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                        image_size=896, patch_size=14, vision_use_head=False)
GEMMA3_4B_MM_TOKENS = 256


def build_gemma3_4b(path, seed: int = 0, dtype=None, device="cpu"):
    """Write a Gemma-3-4b-it-shaped VLM folder (random weights, local tokenizer) to ``path``; the
    refiner's Triton model loads it like the real checkpoint."""
    from pathlib import Path

    import torch

    from ._common import seeded
    from .gemma3 import model_and_processor

    @contextlib.contextmanager
    def construct():
        with seeded(seed), _construct_on(device, dtype or torch.bfloat16):
            yield

    path = Path(path)
    model, processor = model_and_processor(GEMMA3_4B_TEXT, GEMMA3_4B_VISION, GEMMA3_4B_MM_TOKENS, construct)
    processor.save_pretrained(path)
    model.save_pretrained(path)
    return path
