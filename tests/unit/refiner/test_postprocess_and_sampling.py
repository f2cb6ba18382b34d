"""Output clean-up and sampling resolution (pure functions, no model)."""

from __future__ import annotations

import pytest

from genir.v1 import common_pb2
from services.common.errors import InvalidArgument
from services.refiner.postprocess import clean_prompt, clean_remarks
from services.refiner.server import resolve_sampling


@pytest.mark.parametrize("raw,expected", [
    ('Sure! Here\'s a detailed caption for the image:\n\n"A red kite flies over a green field."',
     "A red kite flies over a green field."),
    ("**Caption:** A red kite over a field.", "A red kite over a field."),
    ("Here is the improved prompt:\n\n**A photo of a dog** sitting on a *blue* couch.\n\n"
     "Let me know if you want any changes!", "A photo of a dog sitting on a blue couch."),
    ("Refined prompt: \u201cA cat\u2019s tail in the sun.\u201d", "A cat\u2019s tail in the sun."),
    ("Okay.\nNew description - a dog on a beach", "a dog on a beach"),
    ("'A dog's bone on a plate'", "A dog's bone on a plate"),
    ("# Prompt\nA bright kitchen,\nwooden table", "A bright kitchen, wooden table"),
    ("A tall tree<end_of_turn>\n<start_of_turn>user", "A tall tree"),
    ("A dog\x1c in\ufffd snow", "A dog in snow"),
    ('The sign says "STOP" in red.', 'The sign says "STOP" in red.'),  # inner quotes stay
    ("A plain caption.", "A plain caption."),
])
def test_clean_prompt(raw, expected):
    assert clean_prompt(raw) == expected


def test_clean_remarks_keeps_one_remark_per_line():
    raw = ("Sure, here are the differences:\n\n- The **dog** is brown, not black.\n\n"
           "- The background is a beach.\n\nI hope this helps!")
    assert clean_remarks(raw) == "- The dog is brown, not black.\n- The background is a beach."


def sampling(**kw):
    return common_pb2.Sampling(**kw)


def test_unset_sampling_takes_the_paper_defaults_and_draws_a_seed():
    s = resolve_sampling(sampling(), 400, 1024)
    assert (s["temperature"], s["top_p"], s["repetition_penalty"], s["max_new_tokens"]) == (0.7, 0.9, 1.1, 400)
    assert s["top_k"] == 64  # Gemma-3's released generation config, inherited by the scripts
    assert 0 <= s["seed"] < 2**63
    assert resolve_sampling(sampling(), 500, 300)["max_new_tokens"] == 300  # capped by the server limit


def test_explicit_values_override_including_zero_temperature():
    s = resolve_sampling(sampling(temperature=0.0, top_p=1.0, max_new_tokens=16, repetition_penalty=1.0, seed=0,
                                  top_k=0), 500, 1024)
    assert s == {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 16, "repetition_penalty": 1.0,
                 "seed": 0}


@pytest.mark.parametrize("kw,field", [
    ({"temperature": 2.5}, "sampling.temperature"), ({"temperature": float("nan")}, "sampling.temperature"),
    ({"top_p": 0.0}, "sampling.top_p"), ({"top_p": 1.5}, "sampling.top_p"),
    ({"max_new_tokens": 0}, "sampling.max_new_tokens"), ({"max_new_tokens": 1025}, "sampling.max_new_tokens"),
    ({"repetition_penalty": 0.9}, "sampling.repetition_penalty"), ({"seed": -1}, "sampling.seed"),
    ({"top_k": -1}, "sampling.top_k"), ({"top_k": 1001}, "sampling.top_k"),
])
def test_out_of_range_sampling_names_the_field_and_range(kw, field):
    with pytest.raises(InvalidArgument) as e:
        resolve_sampling(sampling(**kw), 500, 1024)
    assert e.value.message.startswith(field) and ("range" in e.value.message or "finite" in e.value.message)
