"""Request validation against the model's limits and the configured caps (no model needed)."""

import argparse
import math

import pytest

from genir.v1 import generator_pb2
from services.common.errors import InvalidArgument
from services.generator import server
from services.generator.pipeline import Limits

LIMITS = Limits(size_multiple=16, default_width=64, default_height=64, max_size=512, default_steps=28,
                default_guidance=7.0, max_prompt_tokens=20, prompt_limit_source="T5EncoderModel max_sequence_length",
                max_sequence_length=20)


def args(**over):
    p = argparse.ArgumentParser()
    server.add_arguments(p)
    ns = p.parse_args(["--model", "/nonexistent"])
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


CAPS = server.Caps.build(LIMITS, args())


def words(text: str) -> int:  # a stand-in tokenizer: one token per word plus an end token
    return len(text.split()) + 1


def parse(**fields):
    return server.parse_generate(generator_pb2.GenerateRequest(**fields), CAPS, words)


def test_flag_defaults_and_env(monkeypatch):
    a = args()
    assert (a.port, a.metrics_port, a.max_batch_size, a.max_batch_delay_ms, a.max_queue) == (50051, 9101, 8, 10.0, 64)
    assert (a.max_width, a.max_height, a.max_steps, a.max_guidance, a.max_images) == (1536, 1536, 100, 20.0, 4)
    assert not (a.compile or a.drop_t5 or a.attention_slicing or a.vae_tiling) and a.batch_invariant
    monkeypatch.setenv("GENIR_GENERATOR_MODEL", "/models/sd35")
    monkeypatch.setenv("GENIR_GENERATOR_DROP_T5", "1")
    p = argparse.ArgumentParser()
    server.add_arguments(p)
    ns = p.parse_args([])
    assert ns.model == "/models/sd35" and ns.drop_t5


def test_main_without_model_exits_2():
    assert server.main(args(model=None)) == 2


def test_offload_needs_a_gpu(caplog):
    assert server.main(args(offload="model", device="cpu")) == 2
    assert "--offload model moves pipeline parts onto a GPU" in caplog.text


def test_caps_intersect_flags_with_the_model():
    assert (CAPS.max_width, CAPS.max_height) == (512, 512)  # position embedding covers 512 px
    small = server.Caps.build(LIMITS, args(max_width=100, max_height=40, max_steps=10, max_guidance=3.0))
    assert (small.max_width, small.max_height) == (96, 32)  # rounded down to the size multiple
    assert small.default_width == 64 and small.default_height == 32
    assert small.default_steps == 10 and small.default_guidance == 3.0


def test_defaults_fill_unset_fields():
    p = parse(prompt="  a red kite  ")
    (it,) = p.items
    assert it.prompt == "a red kite" and it.negative_prompt == ""
    assert (it.width, it.height, it.steps, it.guidance) == (64, 64, 28, 7.0)
    assert 0 <= it.seed < 2**63 and p.fmt == "PNG" and p.quality == 90


def test_num_images_expand_to_consecutive_seeds_with_wraparound():
    p = parse(prompt="x", seed=41, num_images=3, width=32, height=48, num_inference_steps=2, guidance_scale=0.0)
    assert [it.seed for it in p.items] == [41, 42, 43]
    assert {it.key() for it in p.items} == {(32, 48, 2, 0.0, False)}
    top = parse(prompt="x", seed=2**63 - 1, num_images=2)
    assert [it.seed for it in top.items] == [2**63 - 1, 0]


def test_jpeg_with_quality():
    p = parse(prompt="x", output_format=generator_pb2.OUTPUT_FORMAT_JPEG, jpeg_quality=70)
    assert (p.fmt, p.quality) == ("JPEG", 70)


BAD = [
    (dict(prompt=""), "prompt", "empty"),
    (dict(prompt="   "), "prompt", "empty"),
    (dict(prompt="x" * 4097), "prompt", "4096"),
    (dict(prompt="w " * 40), "prompt", "limit of 20 tokens"),
    (dict(prompt="ok", negative_prompt="w " * 40), "negative_prompt", "limit of 20 tokens"),
    (dict(prompt="ok", seed=-5), "seed", "[0, 9223372036854775807]"),
    (dict(prompt="ok", width=50), "width", "multiple of 16 in [16, 512]"),
    (dict(prompt="ok", width=-16), "width", "multiple of 16"),
    (dict(prompt="ok", height=1024), "height", "multiple of 16 in [16, 512]"),
    (dict(prompt="ok", num_inference_steps=101), "num_inference_steps", "[1, 100]"),
    (dict(prompt="ok", num_inference_steps=-1), "num_inference_steps", "[1, 100]"),
    (dict(prompt="ok", guidance_scale=20.5), "guidance_scale", "[0, 20]"),
    (dict(prompt="ok", guidance_scale=-1), "guidance_scale", "[0, 20]"),
    (dict(prompt="ok", guidance_scale=math.nan), "guidance_scale", "finite"),
    (dict(prompt="ok", num_images=5), "num_images", "[1, 4]"),
    (dict(prompt="ok", output_format=9), "output_format", "OUTPUT_FORMAT_JPEG"),
    (dict(prompt="ok", jpeg_quality=101), "jpeg_quality", "[1, 100]"),
]


@pytest.mark.parametrize("fields,field,expect", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_names_field_and_range(fields, field, expect):
    with pytest.raises(InvalidArgument) as e:
        parse(**fields)
    assert e.value.message.startswith(f"{field}:"), e.value.message
    assert expect in e.value.message, e.value.message


def test_token_limit_message_states_the_limit_and_encoder():
    with pytest.raises(InvalidArgument) as e:
        parse(prompt="w " * 25)
    assert "26 tokens" in e.value.message and "20" in e.value.message and "T5" in e.value.message


def test_truncate_prompt_cuts_at_a_word_within_the_limit():
    long = " ".join(f"w{i}" for i in range(40))
    parsed = parse(prompt=long, negative_prompt="n " * 30, truncate_prompt=True)
    item = parsed.items[0]
    assert parsed.truncated and words(item.prompt) == 20 and long.startswith(item.prompt)
    assert words(item.negative_prompt) <= 20
    short = parse(prompt="a red kite", truncate_prompt=True)
    assert not short.truncated and short.items[0].prompt == "a red kite"


def test_fit_tokens_cuts_a_single_overlong_word_by_characters():
    chars = lambda t: len(t)  # noqa: E731 - one token per character
    assert server.fit_tokens("x" * 50, 10, chars) == "x" * 10
    assert server.fit_tokens("ab cd ef", 5, chars) == "ab cd"
