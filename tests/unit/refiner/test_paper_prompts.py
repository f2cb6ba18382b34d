"""The `paper` prompt set: per stage and mode, the inputs passed and the constraints the rendered
chat states, as the authors' scripts ask them (docs/paper.md names these tests per row)."""

from __future__ import annotations

import re

import pytest

from services.common import presets
from services.refiner import prompts

T, G = b"target-bytes", b"shown-bytes"
PAPER = prompts.prompt_set("paper")


def user_parts(p):
    return ["IMG" if part["type"] == "image" else part["text"] for part in p.messages[1]["content"]]


def chat(p) -> str:
    """Everything the model reads, system and user turns, lower-cased."""
    return " ".join(part.get("text", "<image>") for m in p.messages for part in m["content"]).lower()


def test_default_set_is_paper_and_v1_stays_selectable():
    assert prompts.prompt_set("") is PAPER and prompts.prompt_set("PAPER") is PAPER
    assert prompts.prompt_set("v1").caption(T).id == "caption@v1"
    with pytest.raises(ValueError, match="allowed: paper, v1"):
        prompts.prompt_set("v2")


def test_genir_caption_asks_for_a_detailed_concise_diffusion_prompt_under_500_tokens():
    p = PAPER.caption(T)
    assert p.id == "paper.caption@1" and p.images == [T] and user_parts(p)[0] == "IMG"
    text = chat(p)
    assert "concise but detailed" in text and "diffusion" in text and "under 500 tokens" in text
    assert all(w in text for w in ("style", "composition", "colours", "details"))
    assert "caption only" in text and p.max_new_tokens == 500 and p.output == prompts.PROMPT_TEXT


def test_verbal_caption_is_the_same_request_with_the_200_token_cap():
    p = PAPER.caption(T, tokens=presets.stage_tokens("verbal", "caption"))
    assert p.id == "paper.caption@1" and p.max_new_tokens == 200 and "under 200 tokens" in chat(p)


def test_prediction_round0_asks_for_a_detailed_retrieval_caption_not_a_short_sentence():
    p = PAPER.caption(T, "retrieval")
    text = chat(p)
    assert p.id == "paper.caption_retrieval@1" and p.images == [T] and p.max_new_tokens == 200
    assert "detailed, descriptive caption" in text and "retrieval" in text and "under 200 tokens" in text
    assert "large collection" in text and "sentence" not in text and "twenty" not in text


def test_genir_compare_sees_target_then_rendering_and_the_caption_and_asks_only_differences():
    p = PAPER.compare(T, G, "a red kite over a field")
    assert p.id == "paper.compare@1" and p.images == [T, G] and user_parts(p)[:2] == ["IMG", "IMG"]
    text = chat(p)
    assert "a red kite over a field" in text and "only how they differ" in text and "concise" in text
    assert "under 400 tokens" in text and p.max_new_tokens == 400 and p.output == prompts.REMARKS


def test_prediction_compare_speaks_of_a_retrieved_image_and_the_query():
    p = PAPER.compare(T, G, "a bus", retrieval=True)
    text = chat(p)
    assert p.id == "paper.compare_retrieval@1" and p.images == [T, G] and p.max_new_tokens == 400
    assert '"a bus"' in text and "retrieval system gave me the second image" in text and "drew" not in text


def test_genir_refine_corrects_the_comparison_issues_only():
    p = PAPER.refine("a cat on a sofa", "the sofa is green, not red", target=T)
    text = chat(p)
    assert p.id == "paper.refine@1" and p.images == [T] and p.max_new_tokens == 500
    assert "the sofa is green, not red" in text and "'a cat on a sofa'" in text
    assert "correcting the issues the comparison names" in text and "under 500 tokens" in text
    assert "missing" not in text and "adds details" not in text  # v1 asked for more; the script does not
    assert PAPER.refine("c", "f", target=T, shown=G).images == [T, G]  # the rendering only when passed


def test_verbal_refine_uses_the_critique_and_never_mentions_an_image_made_from_the_caption():
    p = PAPER.refine("two dogs", "say the dogs are brown", target=T, source=prompts.CRITIQUE, tokens=200)
    text = chat(p)
    assert p.id == "paper.refine_critique@1" and p.images == [T] and p.max_new_tokens == 200
    assert "critique" in text and "say the dogs are brown" in text and '"two dogs"' in text
    assert "staying true to what the image shows" in text and "under 200 tokens" in text
    for word in ("generated", "synthetic", "rendering", "made from", "differences from the target"):
        assert word not in text


def test_verbal_critique_plays_the_detail_critic_with_the_four_criteria():
    p = PAPER.critique(T, "two dogs", tokens=200)
    text = chat(p)
    assert p.id == "paper.critique@1" and p.images == [T] and p.max_new_tokens == 200
    assert "detail critic" in text and '"two dogs"' in text and "under 200 tokens" in text
    assert all(w in text for w in ("accuracy", "detail", "clarity", "usefulness for a text-to-image system"))
    assert p.output == prompts.REMARKS


@pytest.mark.parametrize("rank,shown", [(0, "rank 1"), (41, "rank 42"), (None, "unknown")])
def test_prediction_refine_sees_both_images_the_comparison_and_the_true_rank(rank, shown):
    p = PAPER.refine("a bus", "the bus is yellow", target=T, shown=G, shown_rank=rank if rank is not None else 0)
    if rank is None:
        p = PAPER.refine("a bus", "the bus is yellow", target=T, shown=G, shown_rank=None, source="")
        assert p.id == "paper.refine@1"  # no rank given: not the prediction stage
        return
    text = chat(p)
    assert p.id == "paper.refine_prediction@1" and p.images == [T, G] and p.max_new_tokens == 200
    assert shown in text and "the bus is yellow" in text and '"a bus"' in text
    assert "unique about the target" in text and "under 200 tokens" in text


def test_human_feedback_is_merged_without_a_target_in_both_sets():
    for name in prompts.PROMPT_SETS:
        p = prompts.prompt_set(name).refine("a dog", "make it brown", source=prompts.PERSON)
        assert p.id == "merge@v1" and p.images == []


@pytest.mark.parametrize("tokens,limit,expected", [(None, 1024, 500), (120, 1024, 120), (None, 300, 300)])
def test_the_stated_cap_is_the_budget_sent(tokens, limit, expected):
    p = PAPER.caption(T, tokens=tokens, limit=limit)
    assert p.max_new_tokens == expected and f"under {expected} tokens" in chat(p)


def test_every_paper_prompt_id_is_versioned_and_placeholders_match_images():
    built = [PAPER.caption(T), PAPER.caption(T, "retrieval"), PAPER.compare(T, G, "c"),
             PAPER.compare(T, G, "c", retrieval=True), PAPER.critique(T, "c"), PAPER.refine("c", "f", target=T),
             PAPER.refine("c", "f", target=T, source=prompts.CRITIQUE),
             PAPER.refine("c", "f", target=T, shown=G, shown_rank=2)]
    assert {p.id for p in built} == set(prompts.PAPER)
    for p in built:
        assert re.fullmatch(r"paper\.[a-z_]+@\d+", p.id) and p.placeholders == len(p.images)
        assert "{" not in chat(p)  # every field was filled in
