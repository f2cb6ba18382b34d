"""Prompt construction: which images and texts go into each call, in which order."""

from __future__ import annotations

import re

import pytest

from services.refiner import prompts

T, G = b"target-bytes", b"shown-bytes"


def parts(prompt):
    """The user turn as a compact sequence: 'IMG' for a placeholder, the text otherwise."""
    system, user = prompt.messages
    assert system["role"] == "system" and user["role"] == "user" and len(prompt.messages) == 2
    return ["IMG" if p["type"] == "image" else p["text"] for p in user["content"]]


def system_text(prompt):
    return prompt.messages[0]["content"][0]["text"]


def test_every_prompt_has_a_versioned_id_and_placeholders_match_images():
    built = [prompts.caption(T), prompts.caption(T, "retrieval"), prompts.compare(T, G, "c"), prompts.critique(T, "c"),
             prompts.refine("c", "f", target=T), prompts.refine("c", "f", target=T, shown=G),
             prompts.refine("c", "f", target=T, shown=G, shown_rank=3), prompts.refine("c", "f"),
             prompts.refine("c", "f", shown=G)]
    assert {p.id for p in built} == set(prompts.ALL_IDS)
    for p in built:
        assert re.fullmatch(r"[a-z_]+@v\d+", p.id)
        assert p.placeholders == len(p.images)
        assert system_text(p) == prompts.SYSTEM[p.id]


def test_caption_sees_only_the_target_and_styles_differ():
    gen, ret = prompts.caption(T), prompts.caption(T, "retrieval")
    assert gen.id == "caption@v1" and ret.id == "caption_retrieval@v1"
    assert gen.images == [T] and ret.images == [T]
    assert parts(gen)[1] == "IMG" and parts(gen).count("IMG") == 1
    assert "text-to-image" in system_text(gen) and "search" in system_text(ret)
    assert gen.max_new_tokens == 500 and gen.output == prompts.PROMPT_TEXT


def test_compare_gets_target_first_then_shown_image_then_the_caption():
    p = prompts.compare(T, G, "a red kite over a field")
    assert p.id == "compare@v1" and p.images == [T, G]
    seq = parts(p)
    assert [i for i, x in enumerate(seq) if x == "IMG"] == [1, 3]
    assert "Target" in seq[0] and "shown" in seq[2]
    assert "a red kite over a field" in seq[4]
    assert "differences" in system_text(p).lower() and "matches" in system_text(p)
    assert p.max_new_tokens == 400 and p.output == prompts.REMARKS


def test_critique_gets_the_target_and_the_caption():
    p = prompts.critique(T, "two dogs")
    assert p.id == "critique@v1" and p.images == [T]
    assert parts(p)[1] == "IMG" and "two dogs" in parts(p)[2]
    assert p.output == prompts.REMARKS


def test_genir_refine_sees_target_caption_and_comparison_but_not_the_rendering():
    p = prompts.refine("a cat on a sofa", "the sofa is green, not red", target=T)
    assert p.id == "refine@v1" and p.images == [T]
    text = parts(p)[-1]
    assert text.index("a cat on a sofa") < text.index("the sofa is green, not red")
    assert p.output == prompts.PROMPT_TEXT and p.max_new_tokens == 500


def test_refine_adds_the_rendering_after_the_target_when_given():
    p = prompts.refine("c", "f", target=T, shown=G)
    assert p.id == "refine@v1" and p.images == [T, G]
    assert [x for x in parts(p) if x == "IMG"] == ["IMG", "IMG"] and parts(p)[1] == "IMG"


@pytest.mark.parametrize("rank,expected", [(0, "rank 1 "), (41, "rank 42 ")])
def test_prediction_refine_reports_the_true_rank(rank, expected):
    p = prompts.refine("a bus", "the bus is yellow", target=T, shown=G, shown_rank=rank)
    assert p.id == "refine_prediction@v1" and p.images == [T, G]
    text = parts(p)[-1]
    assert expected in text and "a bus" in text and "the bus is yellow" in text
    assert "search engine" in parts(p)[2]


def test_human_mode_merges_feedback_without_any_target():
    p = prompts.refine("a dog on grass", "the dog should be brown")
    assert p.id == "merge@v1" and p.images == []
    assert parts(p) == ["Previous description: a dog on grass\n\nFeedback: the dog should be brown\n\n"
                        "Write the new description."]
    with_image = prompts.refine("a dog on grass", "the dog should be brown", shown=G)
    assert with_image.id == "merge@v1" and with_image.images == [G] and parts(with_image)[1] == "IMG"
    assert "keeps everything" in system_text(p)


def test_prompts_render_through_the_real_gemma3_chat_template(tiny_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models / "gemma3")
    for p in (prompts.compare(T, G, "a red kite"), prompts.refine("c", "f"), prompts.caption(T)):
        text = processor.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        assert text.count("<start_of_image>") == len(p.images)
        assert prompts.SYSTEM[p.id][:40] in text  # the system turn is folded into the user turn
        assert text.rstrip().endswith("model")  # ends with the model's turn opener
