"""The Triton model's vision-feature cache, on the tiny random Gemma-3 in this process (the model's
own code through benchmarks/triton_inprocess.py, which stands in for Triton's stub only).

The tower runs once per distinct image; what generate() then reads is bit for bit what the plain
transformers path (pixel_values into generate()) computes, so the texts do not change.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from benchmarks.triton_inprocess import InProcessGemma, Request
from testkit.images import marked_png as png

TOKENS = 10


TARGET, SHOWN = png((200, 30, 30)), png((20, 40, 220), size=(64, 64))
ONE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the picture."}]}]
TWO = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]}]


@pytest.fixture(scope="module")
def gemma(tiny_models):
    model = InProcessGemma(tiny_models / "gemma3", parameters={"num_threads": "1"})
    # The tiny checkpoint keeps Gemma-3's zero-initialised image projection, so every image would
    # reach the language model as zeros and no test here could tell one image from another.
    # Random values (in this process only) make what generate() reads depend on the pixels.
    projection = model.model.model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        projection.copy_(torch.randn(projection.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    return model


def plain_generate(model, messages, blobs) -> str:
    """Greedy text the plain transformers way: the processor's pixel_values straight into generate()."""
    from transformers import GenerationConfig

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    text = model.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = model.processor(text=[text], images=[images], return_tensors="pt")
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=TOKENS, eos_token_id=model.stop_ids,
                              pad_token_id=model.pad_id, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0)
    with torch.inference_mode():
        out = model.model.generate(**enc, generation_config=config)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    stop = next((j for j, t in enumerate(new) if t in model.stop_ids), len(new))
    return model.tokenizer.decode(new[:stop], skip_special_tokens=True)


def test_the_tower_runs_once_per_image_and_greedy_text_matches_plain_transformers(gemma):
    model = gemma.model
    greedy = {"temperature": 0, "repetition_penalty": 1.0, "max_new_tokens": TOKENS, "seed": 1}
    before = dict(model.images.tower)
    first = gemma.infer([Request(ONE, [TARGET], greedy)])[0][0]
    again = gemma.infer([Request(TWO, [TARGET, SHOWN], greedy), Request(ONE, [TARGET], greedy)])
    runs = {k: model.images.tower[k] - before[k] for k in before}
    assert runs == {"miss": 2, "hit": 2}        # TARGET and SHOWN through the tower once each
    assert again[1][0] == first                 # the cached features give the same text
    assert first == plain_generate(model, ONE, [TARGET])
    assert again[0][0] == plain_generate(model, TWO, [TARGET, SHOWN])


def test_images_change_what_the_model_reads(gemma):
    model = gemma.model
    red, blue = (model.images.features(model.images.get(b), model._tower) for b in (TARGET, SHOWN))
    assert not torch.equal(red, blue)


def test_cached_features_equal_the_towers_output_on_the_processors_pixels(gemma):
    model = gemma.model
    entry = model.images.get(TARGET)
    cached = model.images.features(entry, model._tower)
    pixels = model.processor(text=["<start_of_image>"], images=[[Image.open(io.BytesIO(TARGET)).convert("RGB")]],
                             return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        direct = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
    assert torch.equal(cached, direct)


def test_generate_reads_the_same_logits_from_cached_features_as_from_pixels(gemma):
    """A batch of two rows (three images, one twice): the forward pass fed the cached features
    gives exactly the logits of the forward pass fed the processor's pixels."""
    model = gemma.model
    rows = [{"messages": TWO, "images": [model.images.get(TARGET), model.images.get(SHOWN)]},
            {"messages": ONE, "images": [model.images.get(TARGET)]}]
    enc = model._encode(rows)
    pixels = enc.pop("pixel_values")
    with torch.inference_mode():
        from_pixels = model.model(**enc, pixel_values=pixels).logits
        from_cache = model.model(**enc, mm_encoder_outputs={"image": model._image_features(rows)}).logits
    assert torch.equal(from_cache, from_pixels)


def test_seeded_sampling_gives_the_same_text_from_cached_features(gemma):
    sampled = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": TOKENS, "seed": 42}
    fresh = png((10, 200, 90), size=(30, 50))
    first = gemma.infer([Request(ONE, [fresh], sampled)])[0][0]       # tower runs
    second = gemma.infer([Request(ONE, [fresh], sampled)])[0][0]      # features from the cache
    assert first == second and first.strip()
