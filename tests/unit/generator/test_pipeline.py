"""The diffusers backend on the tiny SD3.5-shaped pipeline: limits, determinism, batch invariance."""

import pytest

from services.common.images import encode_image
from services.generator.pipeline import Item, Pipeline


def png(img) -> bytes:
    return encode_image(img, "PNG")


def test_limits_come_from_the_loaded_pipeline(sd3):
    lim = sd3.limits
    pipe = sd3.pipe
    # SD3: VAE factor 8 x transformer patch 2; default = sample_size x VAE factor
    assert lim.size_multiple == pipe.vae_scale_factor * pipe.transformer.config.patch_size == 16
    assert lim.default_width == lim.default_height == pipe.transformer.config.sample_size * pipe.vae_scale_factor
    assert lim.max_size == pipe.transformer.config.pos_embed_max_size * 16
    assert lim.max_prompt_tokens == min(256, pipe.tokenizer_3.model_max_length)
    assert "T5" in lim.prompt_limit_source
    assert lim.default_steps == 28 and lim.default_guidance == 7.0  # the pipeline's own call defaults
    assert sd3.describe()["pipeline_class"] == "StableDiffusion3Pipeline"


def test_drop_t5_loads_without_the_third_encoder_and_limits_to_clip(sd3_dir):
    p = Pipeline(sd3_dir, device="cpu", drop_t5=True).load()
    assert p.pipe.text_encoder_3 is None and p.pipe.tokenizer_3 is None
    assert p.limits.max_prompt_tokens == 77 and p.limits.max_sequence_length is None
    assert "CLIP" in p.limits.prompt_limit_source
    img = p.generate_batch([Item("a red kite", 3, 32, 32, 2, 4.0)])[0]
    assert img.size == (32, 32)


def test_token_count_uses_the_limiting_tokenizer(sd3):
    short = sd3.count_tokens("a red kite over a beach")
    assert 0 < short < 20
    assert sd3.count_tokens("dog " * 300) > sd3.limits.max_prompt_tokens
    assert sd3.count_tokens("") == 0


@pytest.mark.parametrize("guidance,negative", [(5.0, ""), (1.0, ""), (4.5, "blurry, low quality")])
def test_image_is_byte_identical_alone_and_batched(sd3, guidance, negative):
    # guidance 1.0 disables classifier-free guidance (batch 1 vs 8 in the transformer);
    # 5.0 runs it (batch 2 vs 16); both must be batch-invariant.
    items = [Item(f"a photo of object {i}", 100 + i, 48, 32, 2, guidance, negative) for i in range(8)]
    batched = sd3.generate_batch(items)
    alone = [sd3.generate_batch([it])[0] for it in items]
    pairs = sd3.generate_batch(items[2:4])
    assert [im.size for im in batched] == [(48, 32)] * 8
    assert [png(a) for a in alone] == [png(b) for b in batched]
    assert [png(a) for a in alone[2:4]] == [png(b) for b in pairs]
    assert len({png(b) for b in batched}) == 8  # distinct seeds/prompts -> distinct images


def test_same_seed_same_bytes_other_seed_other_bytes(sd3):
    a = sd3.generate_batch([Item("a lighthouse", 7, 32, 32, 2, 5.0)])[0]
    b = sd3.generate_batch([Item("a lighthouse", 7, 32, 32, 2, 5.0)])[0]
    c = sd3.generate_batch([Item("a lighthouse", 8, 32, 32, 2, 5.0)])[0]
    assert png(a) == png(b) and png(a) != png(c)


def test_incompatible_items_are_refused(sd3):
    with pytest.raises(ValueError, match="differ"):
        sd3.generate_batch([Item("a", 1, 32, 32, 2, 5.0), Item("b", 2, 64, 32, 2, 5.0)])
    assert Item("a", 1, 32, 32, 2, 5.0).key() != Item("a", 1, 32, 32, 2, 5.0, "ugly").key()
    assert Item("a", 1, 32, 32, 2, 5.0).key() == Item("b", 9, 32, 32, 2, 5.0).key()


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        Pipeline(tmp_path, device="cpu").load()


def test_compile_switch_wraps_the_denoiser_and_limits_still_derive(sd3_dir):
    # torch.compile is lazy: wrapping costs nothing until the first call (not made here)
    p = Pipeline(sd3_dir, device="cpu", compile=True).load()
    assert type(p.pipe.transformer).__name__ == "OptimizedModule"
    assert p.limits.size_multiple == 16 and p.limits.default_width == 64


def test_memory_switches_are_applied(sd3_dir):
    p = Pipeline(sd3_dir, device="cpu", vae_tiling=True, attention_slicing=True).load()
    assert p.pipe.vae.use_tiling and p.pipe.vae.use_slicing
    img = p.generate_batch([Item("a red kite", 3, 32, 32, 2, 4.0)])[0]
    assert img.size == (32, 32)


def test_model_offload_installs_hooks_and_renders_the_same_image(sd3_dir):
    # CPU stands in for the GPU here (the hooks move components to `device` for each forward pass)
    off = Pipeline(sd3_dir, device="cpu", offload="model").load()
    assert len(off.pipe._all_hooks) >= 3          # text encoders, denoiser, VAE each behind a hook
    plain = Pipeline(sd3_dir, device="cpu").load()
    item = [Item("a red kite", 3, 32, 32, 2, 4.0)]
    assert off.generate_batch(item)[0].tobytes() == plain.generate_batch(item)[0].tobytes()
    with pytest.raises(ValueError, match="offload"):
        Pipeline(sd3_dir, device="cpu", offload="everything")
