"""Every prompt the refiner sends to the vision-language model, versioned.

A builder returns a `Prompt`: chat messages (a system turn and a user turn whose content is a list
of text parts and {"type": "image"} placeholders) plus the images for the placeholders, in order.
The id ("compare@v1") is reported in every response, so results can be traced to the exact wording;
change a text -> bump its version.

What each call sees (GenIR, docs/method.md):

  id                      images (in order)            texts
  caption@v1              target                       -                  (GenIR round 0)
  caption_retrieval@v1    target                       -                  (baselines: a search query)
  compare@v1              target, shown                previous caption   (only the differences)
  critique@v1             target                       previous caption   (verbal baseline)
  refine@v1               target [, shown]             caption, feedback  (simulated user)
  refine_prediction@v1    target [, shown]             caption, feedback, shown image's rank
  merge@v1                [shown]                      caption, feedback  (human mode: no target)

GenIR's refine sees the target, the previous caption and the comparison, not the rendering; the
rendering is added only when the caller passes it. The prediction-feedback baseline gets the
retrieved image and the target's true rank (the reference code always said rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAPTION_TOKENS = 500  # paper: at most 500 new tokens for caption/refine
COMPARE_TOKENS = 400  # and 400 for compare

# Output shapes, for postprocess: a single-paragraph prompt, or a short list of remarks.
PROMPT_TEXT = "prompt"
REMARKS = "remarks"


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: list[dict]
    images: list[Any] = field(default_factory=list)
    max_new_tokens: int = CAPTION_TOKENS
    output: str = PROMPT_TEXT

    @property
    def placeholders(self) -> int:
        return sum(1 for m in self.messages for p in m["content"] if p.get("type") == "image")


# ---------------------------------------------------------------------- texts
SYSTEM = {
    "caption@v1": (
        "You write prompts for a text-to-image model. Study the picture and describe it so that the "
        "model could paint an image that looks as close to it as possible: the main subjects and what "
        "they are doing, their colours, shapes, sizes and positions, the setting and background, the "
        "lighting, the photographic or artistic style, and the framing. Write one paragraph of plain "
        "text. Answer with the description alone: no title, no introduction, no quotation marks."),
    "caption_retrieval@v1": (
        "You write search queries for an image search engine. Describe the picture in one plain "
        "sentence of about fifteen to twenty-five words, the way a caption in a photo collection "
        "would: the main objects, what they are doing and where. Answer with the sentence alone."),
    "compare@v1": (
        "You help a person find a picture they have in mind. You see two images: first the target, "
        "the picture they are looking for; second, an image that was shown to them for their current "
        "description. Name only the visible differences between the second image and the target: "
        "objects that are missing, extra or different, and differences in colour, number, size, "
        "position, background, lighting, style or viewpoint. Leave out everything that already "
        "matches. Be brief: one difference per line, no introduction."),
    "critique@v1": (
        "You help a person improve a search query for a photo. You see the photo they are looking for "
        "and their current query. Point out what the query gets wrong or leaves out compared with the "
        "photo (objects, details, colours, counts, positions, setting) and say how to change it. Be "
        "brief: one point per line, no introduction, and do not rewrite the query yourself."),
    "refine@v1": (
        "You improve prompts for a text-to-image model so that the image it makes looks like a target "
        "picture. You get the target, the current prompt and notes on how the image made from that "
        "prompt differs from the target. Write a new, complete prompt that keeps what is right, fixes "
        "every difference in the notes and adds details of the target that are still missing. Answer "
        "with the new prompt alone, as one paragraph of plain text."),
    "refine_prediction@v1": (
        "You improve a search query so that an image search engine ranks a target photo first. You get "
        "the target, the image the engine returned first for the current query, where the target is "
        "currently ranked, the current query and notes on how the returned image differs from the "
        "target. Write a new, complete query that describes the target and sets it apart from the "
        "returned image. Answer with the new query alone, as plain text."),
    "merge@v1": (
        "You help a person describe a picture they have in mind. They give their previous description "
        "and a short piece of feedback about it. Rewrite them into one complete, self-contained "
        "description that applies the feedback and keeps everything from the previous description "
        "that the feedback does not change. Do not invent details that neither of them mentions. "
        "Answer with the new description alone, as one paragraph of plain text."),
}

ALL_IDS = tuple(SYSTEM)


def _text(s: str) -> dict:
    return {"type": "text", "text": s}


IMAGE = {"type": "image"}


def _chat(prompt_id: str, parts: list[dict]) -> list[dict]:
    return [{"role": "system", "content": [_text(SYSTEM[prompt_id])]}, {"role": "user", "content": parts}]


def _rank_sentence(rank: int | None) -> str:
    if rank is None:
        return "The target's current rank is unknown."
    return f"The target is currently at rank {rank + 1} of the search results (rank 1 is the top)."


# ---------------------------------------------------------------------- builders
def caption(target: Any, style: str = "generation") -> Prompt:
    """Round 0: describe the target (`style` "generation" for GenIR, "retrieval" for baselines)."""
    if style == "retrieval":
        pid = "caption_retrieval@v1"
        parts = [_text("Picture:"), IMAGE, _text("Write the search query for this picture.")]
    else:
        pid = "caption@v1"
        parts = [_text("Picture:"), IMAGE, _text("Write the text-to-image prompt for this picture.")]
    return Prompt(pid, _chat(pid, parts), [target], CAPTION_TOKENS)


def compare(target: Any, shown: Any, caption_text: str) -> Prompt:
    pid = "compare@v1"
    parts = [_text("Target picture:"), IMAGE,
             _text("Image shown for the current description:"), IMAGE,
             _text(f"Current description: {caption_text}\n\nList the differences of the shown image from the target.")]
    return Prompt(pid, _chat(pid, parts), [target, shown], COMPARE_TOKENS, REMARKS)


def critique(target: Any, caption_text: str) -> Prompt:
    pid = "critique@v1"
    parts = [_text("Photo being searched for:"), IMAGE,
             _text(f"Current query: {caption_text}\n\nHow should the query change to match the photo?")]
    return Prompt(pid, _chat(pid, parts), [target], CAPTION_TOKENS, REMARKS)


def refine(caption_text: str, feedback: str, target: Any = None, shown: Any = None,
           shown_rank: int | None = None) -> Prompt:
    """The next query. With a target: the simulated user (prediction variant when `shown_rank` is
    given). Without one: human mode, merging a person's feedback into a complete new query."""
    if target is None:
        pid = "merge@v1"
        parts: list[dict] = []
        images = []
        if shown is not None:
            parts += [_text("Image the person was shown for the previous description:"), IMAGE]
            images.append(shown)
        parts.append(_text(f"Previous description: {caption_text}\n\nFeedback: {feedback}\n\n"
                           "Write the new description."))
        return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)

    images = [target]
    if shown_rank is not None:
        pid = "refine_prediction@v1"
        parts = [_text("Target photo:"), IMAGE]
        if shown is not None:
            parts += [_text("Image the search engine returned first for the current query:"), IMAGE]
            images.append(shown)
        parts.append(_text(f"{_rank_sentence(shown_rank)}\n\nCurrent query: {caption_text}\n\n"
                           f"Notes: {feedback}\n\nWrite the improved query."))
        return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)

    pid = "refine@v1"
    parts = [_text("Target picture:"), IMAGE]
    if shown is not None:
        parts += [_text("Image made from the current prompt:"), IMAGE]
        images.append(shown)
    parts.append(_text(f"Current prompt: {caption_text}\n\nDifferences from the target: {feedback}\n\n"
                       "Write the improved prompt."))
    return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)
