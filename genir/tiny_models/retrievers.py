"""Tiny dual-encoder retrievers: BLIP (image-text retrieval), CLIP and SigLIP.

Each folder is ``save_pretrained`` of the model plus its processor, the layout of
``Salesforce/blip-itm-base-coco``, ``openai/clip-vit-base-patch32`` and
``google/siglip-base-patch16-224``. All produce small embeddings (16 / 16 / 32 dims).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._common import seeded
from .tokenizers_local import bert_tokenizer, clip_tokenizer, siglip_tokenizer

# BLIP: the real checkpoints are trained at 384 px and run at lower resolutions by
# interpolating the position embeddings; the tiny one keeps that shape (48 px, 8 px
# patches -> 6x6 grid) so callers can run it at e.g. 32 px with interpolate_pos_encoding.
BLIP_IMAGE_SIZE, BLIP_PATCH, BLIP_EMBED_DIM = 48, 8, 16
BLIP_TEXT_POSITIONS = 512  # as BERT; production truncates captions at 200 tokens
CLIP_IMAGE_SIZE, CLIP_PATCH, CLIP_EMBED_DIM = 32, 8, 16
SIGLIP_IMAGE_SIZE, SIGLIP_PATCH, SIGLIP_TEXT_LENGTH = 32, 8, 64

_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _blip_tokenizer():
    """BERT WordPiece + ``[DEC]`` as bos and ``[ENC]`` as an extra special token, as BLIP's own setup does."""
    tok = bert_tokenizer(model_max_length=BLIP_TEXT_POSITIONS)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def build_blip(path: str | Path, seed: int = 0) -> Path:
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    path = Path(path)
    tok = _blip_tokenizer()
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tok),
            encoder_hidden_size=_TOWER["hidden_size"],
            max_position_embeddings=BLIP_TEXT_POSITIONS,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.sep_token_id,
            sep_token_id=tok.sep_token_id,
            initializer_range=0.2,  # at 0.02 a 32-wide random BERT gives every text the same CLS vector
            **_TOWER,
        ),
        # BlipVisionConfig defaults initializer_range to 1e-10 (real weights overwrite it); random tiny
        # weights need a real spread or every image embeds to the same vector.
        vision_config=dict(image_size=BLIP_IMAGE_SIZE, patch_size=BLIP_PATCH, initializer_range=0.05, **_TOWER),
        image_text_hidden_size=BLIP_EMBED_DIM,
        projection_dim=BLIP_EMBED_DIM,
    )
    with seeded(seed):
        model = BlipForImageTextRetrieval(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": BLIP_IMAGE_SIZE, "width": BLIP_IMAGE_SIZE}), tokenizer=tok
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_clip(path: str | Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = Path(path)
    tok = clip_tokenizer(model_max_length=77)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **_TOWER,
        ),
        vision_config=dict(image_size=CLIP_IMAGE_SIZE, patch_size=CLIP_PATCH, **_TOWER),
        projection_dim=CLIP_EMBED_DIM,
    )
    with seeded(seed):
        model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_siglip(path: str | Path, seed: int = 0) -> Path:
    """SigLIP: text is pooled from the *last* position, so callers pad to ``max_length`` (64) like the real one."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        tok = siglip_tokenizer(scratch, model_max_length=SIGLIP_TEXT_LENGTH)
        config = SiglipConfig(
            text_config=dict(
                vocab_size=len(tok),
                max_position_embeddings=SIGLIP_TEXT_LENGTH,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                bos_token_id=None,
                **_TOWER,
            ),
            vision_config=dict(image_size=SIGLIP_IMAGE_SIZE, patch_size=SIGLIP_PATCH, **_TOWER),
        )
        with seeded(seed):
            model = SiglipModel(config).eval()
        image_processor = SiglipImageProcessor(size={"height": SIGLIP_IMAGE_SIZE, "width": SIGLIP_IMAGE_SIZE})
        processor = SiglipProcessor(image_processor=image_processor, tokenizer=tok)
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return path
