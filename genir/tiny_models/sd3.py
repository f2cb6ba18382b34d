"""Tiny Stable Diffusion 3.5-medium-shaped pipeline (MMDiT-X) with random weights.

Same components and folder layout as ``stabilityai/stable-diffusion-3.5-medium``:
CLIP-L + CLIP-G (``CLIPTextModelWithProjection``) + T5 encoder, an MMDiT-X transformer
(``dual_attention_layers`` + RMS qk-norm), a 4-block 16-channel ``AutoencoderKL``
(VAE scale factor 8) and ``FlowMatchEulerDiscreteScheduler(shift=3.0)``.

Size relations kept from the real model (they must hold for the pipeline to run):
* ``pooled_projection_dim`` = CLIP-L projection + CLIP-G projection (real 768 + 1280)
* ``joint_attention_dim`` = T5 ``d_model`` >= CLIP-L hidden + CLIP-G hidden (real 4096 >= 2048)
* ``caption_projection_dim`` = heads x head_dim (real 24 x 64)
* ``sample_size`` x VAE factor 8 = default image size (real 128 -> 1024 px; here 8 -> 64 px)
"""

from __future__ import annotations

from pathlib import Path

from ._common import seeded
from .tokenizers_local import clip_tokenizer, t5_tokenizer

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 256

# tiny sizes
CLIP_L_HIDDEN, CLIP_G_HIDDEN, CLIP_PROJ = 32, 32, 32
T5_D_MODEL = 64
HEADS, HEAD_DIM = 4, 8
LATENT_SIZE = 8  # 64 px default
POS_EMBED_MAX = 32  # patch grid up to 32x32 -> images up to 512 px


def clip_text_config(
    tok, *, hidden: int, layers: int, heads: int, intermediate: int, proj: int, act: str, vocab_size=None
):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=proj,
        hidden_act=act,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def assemble_pipeline(*, tokenizers, text_configs, t5_config, transformer_kwargs, vae_kwargs):
    """Instantiate every component (random init) and wrap them in a ``StableDiffusion3Pipeline``.

    ``t5_config=None`` leaves out ``text_encoder_3``/``tokenizer_3`` (load such a pipeline with
    ``text_encoder_3=None, tokenizer_3=None``, exactly like real SD3.5 without T5).
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    tok1, tok2, tok3 = tokenizers
    te1 = CLIPTextModelWithProjection(text_configs[0]).eval()
    te2 = CLIPTextModelWithProjection(text_configs[1]).eval()
    te3 = T5EncoderModel(t5_config).eval() if t5_config is not None else None
    transformer = SD3Transformer2DModel(**transformer_kwargs).eval()
    vae = AutoencoderKL(**vae_kwargs).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=te1,
        tokenizer=tok1,
        text_encoder_2=te2,
        tokenizer_2=tok2,
        text_encoder_3=te3,
        tokenizer_3=tok3 if te3 is not None else None,
    )


def tiny_pipeline():
    from transformers import T5Config

    tok1 = clip_tokenizer(CLIP_MAX_LENGTH)
    tok2 = clip_tokenizer(CLIP_MAX_LENGTH, pad_token="!")  # SD3's tokenizer_2 pads with "!"
    tok3 = t5_tokenizer(T5_MAX_LENGTH)
    common = dict(layers=2, heads=2, proj=CLIP_PROJ)
    cfg1 = clip_text_config(tok1, hidden=CLIP_L_HIDDEN, intermediate=2 * CLIP_L_HIDDEN, act="quick_gelu", **common)
    cfg2 = clip_text_config(tok2, hidden=CLIP_G_HIDDEN, intermediate=2 * CLIP_G_HIDDEN, act="gelu", **common)
    t5 = T5Config(
        vocab_size=len(tok3),
        d_model=T5_D_MODEL,
        d_kv=16,
        d_ff=2 * T5_D_MODEL,
        num_layers=1,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        pad_token_id=tok3.pad_token_id,
        eos_token_id=tok3.eos_token_id,
        decoder_start_token_id=tok3.pad_token_id,
    )
    assert T5_D_MODEL >= CLIP_L_HIDDEN + CLIP_G_HIDDEN
    transformer_kwargs = dict(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=T5_D_MODEL,
        caption_projection_dim=HEADS * HEAD_DIM,
        pooled_projection_dim=2 * CLIP_PROJ,
        pos_embed_max_size=POS_EMBED_MAX,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    vae_kwargs = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=8 * LATENT_SIZE,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    )
    return assemble_pipeline(
        tokenizers=(tok1, tok2, tok3),
        text_configs=(cfg1, cfg2),
        t5_config=t5,
        transformer_kwargs=transformer_kwargs,
        vae_kwargs=vae_kwargs,
    )


def build_sd3(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny SD3.5-medium-shaped pipeline folder to ``path``."""
    path = Path(path)
    with seeded(seed):
        pipe = tiny_pipeline()
    pipe.save_pretrained(path, safe_serialization=True)
    return path
