"""Tiny Gemma 3 vision-language model (``Gemma3ForConditionalGeneration`` + ``Gemma3Processor``).

Layout of ``google/gemma-3-4b-it`` as written by transformers v5 ``save_pretrained``
(config.json, generation_config.json, model.safetensors, processor_config.json,
tokenizer.json, tokenizer_config.json, chat_template.jinja).

Size relations kept from the real model:
* ``sqrt(mm_tokens_per_image)`` divides ``image_size / patch_size`` (real 896/14 = 64 -> 16x16 = 256 tokens;
  here 32/8 = 4 -> 2x2 = 4 tokens per image)
* processor ``image_seq_length`` = ``mm_tokens_per_image``
* ``boi/eoi/image_token_index`` = the tokenizer's ids
* sliding-window and full-attention layers interleave (real 5:1; here 1:1)
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

from ._common import seeded
from .tokenizers_local import gemma_tokenizer

IMAGE_SIZE, PATCH_SIZE, MM_TOKENS = 32, 8, 4
MAX_POSITIONS = 4096  # ~600-token prompts with two images + 500 new tokens fit easily
SLIDING_WINDOW = 128


def chat_template() -> str:
    return resources.files(__package__).joinpath("gemma3_chat_template.jinja").read_text(encoding="utf-8")


# The tiny model's shape (Gemma3TextConfig and SiglipVisionConfig fields; token ids come from the tokenizer).
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=SLIDING_WINDOW,
                 max_position_embeddings=MAX_POSITIONS, layer_types=["sliding_attention", "full_attention"])
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False)


def model_and_processor(text: dict, vision: dict, mm_tokens: int, construct=contextlib.nullcontext):
    """A Gemma 3 VLM of the given shape with random weights (made inside `construct()`), and its
    processor; the vocabulary is the local tokenizer's unless `text` names the real one's size."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        GenerationConfig,
        SiglipVisionConfig,
    )

    template = chat_template()
    tok = gemma_tokenizer(chat_template=template, model_max_length=text["max_position_embeddings"])
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    text_config = Gemma3TextConfig(**{"vocab_size": len(tok), **text}, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config = Gemma3Config(text_config=text_config, vision_config=SiglipVisionConfig(**vision),
                          mm_tokens_per_image=mm_tokens, boi_token_index=tok.boi_token_id,
                          eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id)
    with construct():
        model = Gemma3ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id, end_of_turn],
        pad_token_id=tok.pad_token_id,
        do_sample=True,  # the released generation_config samples with top_k=64, top_p=0.95
        top_k=64,
        top_p=0.95,
    )
    size = vision["image_size"]
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": size, "width": size}),
        tokenizer=tok,
        chat_template=template,
        image_seq_length=mm_tokens,
    )
    return model, processor


def tiny_model_and_processor():
    return model_and_processor(TINY_TEXT, TINY_VISION, MM_TOKENS)


def build_gemma3(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny Gemma 3 VLM folder to ``path``."""
    path = Path(path)
    with seeded(seed):
        model, processor = tiny_model_and_processor()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
