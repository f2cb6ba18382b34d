"""genir.tiny_models: build every tiny model once, reload each through the stock
``from_pretrained`` / ``Auto*`` calls, run one step, and check byte-for-byte determinism."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genir.tiny_models import MARKER, MODEL_NAMES, build_all

REPO = Path(__file__).resolve().parents[2]

EXPECTED_FILES = {
    "sd3": {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder_2/config.json",
        "text_encoder_2/model.safetensors",
        "text_encoder_3/config.json",
        "text_encoder_3/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer_2/tokenizer.json",
        "tokenizer_2/tokenizer_config.json",
        "tokenizer_3/tokenizer.json",
        "tokenizer_3/tokenizer_config.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    },
    "gemma3": {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    },
    "blip": {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"},
    "clip": {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"},
    "siglip": {"config.json", "model.safetensors", "processor_config.json", "spiece.model", "tokenizer_config.json"},
}


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _images():
    from PIL import Image

    return [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (80, 48), (20, 40, 220))]


TEXTS = ["a photo of a dog on a red couch", "two grey cats sleeping in the sun"]


@pytest.fixture(scope="module")
def second_build(tmp_path_factory):
    """Same seed, separate process, different hash seed: started first so it overlaps the main build."""
    out = tmp_path_factory.mktemp("tiny_b")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="123", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "genir.tiny_models", str(out), "--seed", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield out, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, second_build) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tiny_a")
    paths = build_all(out, seed=0)
    assert list(paths) == list(MODEL_NAMES)
    return paths


# --------------------------------------------------------------------------------------
# layout, determinism, caching
# --------------------------------------------------------------------------------------


def test_layout(tiny):
    for name, path in tiny.items():
        assert path.name == name and path.is_dir()
        files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        missing = EXPECTED_FILES[name] - files
        assert not missing, (name, missing)
        marker = json.loads((path / MARKER).read_text())
        assert marker["seed"] == 0 and marker["model"] == name
        assert set(marker["files"]) == files - {MARKER}
        # nothing left behind by the staging / rename dance
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_same_seed_identical_bytes_across_processes(tiny, second_build):
    out_b, proc = second_build
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    for name, path_a in tiny.items():
        a, b = _hashes(path_a), _hashes(out_b / name)
        assert a == b, (name, sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def test_skip_rebuild_and_seed(tmp_path, tiny):
    path = build_all(tmp_path, seed=0, only=["clip"])["clip"]
    # identical to the module build (same seed, same process)
    assert _hashes(path) == _hashes(tiny["clip"])

    sentinel = path / "sentinel"  # survives a skip, disappears when the folder is replaced
    sentinel.write_text("x")
    assert build_all(tmp_path, seed=0, only="clip")["clip"] == path
    assert sentinel.exists()  # complete -> skipped

    build_all(tmp_path, seed=0, only=["clip"], force=True)
    assert not sentinel.exists()  # force -> rebuilt
    assert _hashes(path) == _hashes(tiny["clip"])

    # a damaged folder is rebuilt
    (path / "config.json").write_text("{}")
    build_all(tmp_path, seed=0, only=["clip"])
    assert _hashes(path) == _hashes(tiny["clip"])

    # another seed: new weights, same tokenizer
    build_all(tmp_path, seed=1, only=["clip"])
    assert json.loads((path / MARKER).read_text())["seed"] == 1
    h0, h1 = _hashes(tiny["clip"]), _hashes(path)
    assert h0["model.safetensors"] != h1["model.safetensors"]
    assert h0["tokenizer.json"] == h1["tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]

    with pytest.raises(ValueError):
        build_all(tmp_path, only=["nope"])


# --------------------------------------------------------------------------------------
# reload through the production calls and run one step
# --------------------------------------------------------------------------------------


def test_sd3_pipeline(tiny):
    import torch
    from diffusers import AutoPipelineForText2Image, StableDiffusion3Pipeline

    pipe = AutoPipelineForText2Image.from_pretrained(tiny["sd3"])
    assert isinstance(pipe, StableDiffusion3Pipeline)
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    assert pipe.vae_scale_factor == 8
    assert pipe.scheduler.config.shift == 3.0
    cfg = pipe.transformer.config
    assert tuple(cfg.dual_attention_layers) == (0,) and cfg.qk_norm == "rms_norm"
    assert pipe.tokenizer.model_max_length == pipe.tokenizer_2.model_max_length == 77
    assert pipe.tokenizer_2.pad_token == "!"
    assert pipe.tokenizer_3.model_max_length >= 256
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        TEXTS[0],
        negative_prompt="blurry",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    )
    image = out.images[0]
    assert image.size == (64, 64) and image.mode == "RGB"


def _gemma_messages(instruction: str):
    gen, target = _images()
    return [
        {"role": "system", "content": [{"type": "text", "text": "You help a user find the image they have in mind."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Generated image:"},
                {"type": "image", "image": gen},
                {"type": "text", "text": "Target image:"},
                {"type": "image", "image": target},
                {"type": "text", "text": instruction},
            ],
        },
    ]


def test_gemma3_two_image_chat(tiny):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["gemma3"])
    model = AutoModelForImageTextToText.from_pretrained(tiny["gemma3"])
    assert type(processor).__name__ == "Gemma3Processor"
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert model.config.text_config.max_position_embeddings >= 2048
    tok = processor.tokenizer
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert set(model.generation_config.eos_token_id) == {tok.eos_token_id, end_of_turn}

    msgs = _gemma_messages("Describe the differences between the two images.")
    inputs = processor.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # template's <bos>, not doubled
    assert ids.count(tok.image_token_id) == 2 * model.config.mm_tokens_per_image
    prompt = processor.decode(inputs["input_ids"][0])
    assert prompt.startswith("<bos><start_of_turn>user\nYou help a user")
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert new.shape == (8,)
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)

    # refiner-sized request: ~600-token prompt, 500 new tokens
    long = _gemma_messages("Compare the two images and list the differences in colour, shape and size. " * 40)
    inputs = processor.apply_chat_template(
        long, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["input_ids"].shape[1] >= 600
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=500, min_new_tokens=500, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 500


def test_gemma3_tokenizer_decodes_words(tiny):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny["gemma3"]).tokenizer
    text = "a photo of a dog on a red couch, describe the differences"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) <= 13  # whole-word pieces
    assert tok(text).input_ids[0] == tok.bos_token_id  # adds <bos> like the real tokenizer
    assert tok.decode(ids) == text


def test_blip_retrieval_embeddings(tiny):
    import torch
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    processor = AutoProcessor.from_pretrained(tiny["blip"])
    model = BlipForImageTextRetrieval.from_pretrained(tiny["blip"]).eval()
    tok = processor.tokenizer
    assert type(tok).__name__ == "BertTokenizer" and tok.bos_token == "[DEC]"
    assert "[ENC]" in tok.get_vocab() and model.config.text_config.bos_token_id == tok.bos_token_id
    assert model.config.vision_config.image_size == 48 and model.config.vision_config.patch_size == 8
    assert model.config.text_config.max_position_embeddings >= 256
    dim = model.config.image_text_hidden_size
    assert dim == 16

    text = processor(text=TEXTS + ["word " * 400], padding=True, truncation=True, max_length=200, return_tensors="pt")
    assert text["input_ids"].shape == (3, 200)
    pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 48, 48)
    small = processor(images=_images(), size={"height": 32, "width": 32}, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        t = model.text_encoder(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).last_hidden_state
        t = model.text_proj(t[:, 0])
        v = model.vision_proj(model.vision_model(pixel_values=pixels).last_hidden_state[:, 0])
        v32 = model.vision_model(pixel_values=small, interpolate_pos_encoding=True).last_hidden_state
        itm = model(input_ids=text["input_ids"][:2], attention_mask=text["attention_mask"][:2], pixel_values=pixels)
    assert t.shape == (3, dim) and v.shape == (2, dim)
    assert v32.shape == (2, 1 + 4 * 4, model.config.vision_config.hidden_size)
    assert itm.itm_score.shape == (2, 2)


def test_clip_embeddings(tiny):
    import torch
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["clip"])
    model = AutoModel.from_pretrained(tiny["clip"]).eval()
    assert type(model).__name__ == "CLIPModel" and type(processor).__name__ == "CLIPProcessor"
    text = processor(text=TEXTS, padding=True, truncation=True, return_tensors="pt")
    images = processor(images=_images(), return_tensors="pt")
    assert images["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        t = model.get_text_features(**text).pooler_output
        v = model.get_image_features(**images).pooler_output
    assert t.shape == v.shape == (2, 16)


def test_siglip_embeddings(tiny):
    import torch
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["siglip"])
    model = AutoModel.from_pretrained(tiny["siglip"]).eval()
    assert type(model).__name__ == "SiglipModel" and type(processor).__name__ == "SiglipProcessor"
    tok = processor.tokenizer
    assert type(tok).__name__ == "SiglipTokenizer" and tok.model_max_length == 64
    text = processor(text=TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert text["input_ids"].shape == (2, 64)
    assert text["input_ids"][0, -1].item() == tok.pad_token_id == tok.eos_token_id
    assert tok.decode(text["input_ids"][0], skip_special_tokens=True) == TEXTS[0]
    images = processor(images=_images(), return_tensors="pt")
    assert images["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        t = model.get_text_features(**text).pooler_output
        v = model.get_image_features(**images).pooler_output
        logits = model(**text, **images).logits_per_image
    assert t.shape == v.shape == (2, 32) and logits.shape == (2, 2)


def test_tokenizer_ids_fit_real_vocab_sizes():
    from genir.tiny_models.real_configs import CLIP_VOCAB, T5_VOCAB
    from genir.tiny_models.tokenizers_local import clip_tokenizer, t5_tokenizer

    assert len(clip_tokenizer()) <= CLIP_VOCAB and len(t5_tokenizer()) <= T5_VOCAB
    assert clip_tokenizer(pad_token="!").pad_token_id == 0  # as in the real CLIP vocab


def test_sd35_medium_real_size_on_meta():
    import torch
    from accelerate import init_empty_weights

    from genir.tiny_models.real_configs import sd35_medium_pipeline

    with init_empty_weights():
        pipe = sd35_medium_pipeline(torch.bfloat16, "meta", with_t5=False)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert 2.20e9 < count(pipe.transformer) < 2.28e9
    assert 80e6 < count(pipe.vae) < 90e6
    assert 120e6 < count(pipe.text_encoder) < 130e6
    assert 680e6 < count(pipe.text_encoder_2) < 700e6
    assert all(p.device.type == "meta" for p in pipe.transformer.parameters())
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.bfloat16}
    assert pipe.vae_scale_factor == 8 and pipe.transformer.config.pos_embed_max_size == 384
    assert torch.get_default_dtype() == torch.float32  # restored


def test_sd35_large_transformer_on_meta_is_medium_widened_without_dual_attention():
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    from genir.tiny_models.real_configs import SD35_LARGE_TRANSFORMER

    with init_empty_weights():
        large = SD3Transformer2DModel(**SD35_LARGE_TRANSFORMER)
    assert 8.0e9 < sum(p.numel() for p in large.parameters()) < 8.15e9   # published: 8.1 B
    assert large.config.num_layers == 38 and not large.config.dual_attention_layers
