"""Every prompt the refiner sends to the vision-language model, in versioned prompt sets.

A builder returns a `Prompt`: chat messages (a system turn and a user turn whose content is a list
of text parts and {"type": "image"} placeholders) plus the images for the placeholders, in order.
The id ("paper.compare@1") is reported in every response, so results can be traced to the exact
wording; change a text -> bump its version.

Two sets, chosen per request (`prompt_set`); the method they serve is in docs/method.md:

  paper  (default) asks, stage by stage, what the authors' scripts ask, in our own words, with the
         same inputs, constraints and token caps; each system turn states its cap, as the scripts do.
  v1     the project's first prompts (kept unchanged so earlier runs can be repeated).

What each call sees:

  stage (paper id)               images            texts
  caption  paper.caption@1       target            -                   GenIR and verbal round 0
           paper.caption_retrieval@1  target       -                   prediction round 0
  compare  paper.compare@1       target, shown     previous caption    GenIR: rendering vs target
           paper.compare_retrieval@1 target, shown current query       prediction: top-1 vs target
  critique paper.critique@1      target            previous caption    verbal ("detail critic")
  refine   paper.refine@1        target [, shown]  caption, comparison GenIR
           paper.refine_critique@1 target          caption, critique   verbal (never mentions a rendering)
           paper.refine_prediction@1 target, shown caption, comparison, rank   prediction
  merge    merge@v1              [shown]           caption, feedback   human sessions (no script)

Deliberate differences from the scripts (docs/paper.md): prediction refine gets the comparison
and the target's true rank (the script computes the comparison but never passes it, and always
says rank 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common import presets

CAPTION_TOKENS = 500  # v1: at most 500 new tokens for caption/refine
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
        _add_shown(parts, images, shown, "Image the person was shown for the previous description:")
        parts.append(_text(f"Previous description: {caption_text}\n\nFeedback: {feedback}\n\n"
                           "Write the new description."))
        return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)

    images = [target]
    if shown_rank is not None:
        pid = "refine_prediction@v1"
        parts = [_text("Target photo:"), IMAGE]
        _add_shown(parts, images, shown, "Image the search engine returned first for the current query:")
        parts.append(_text(f"{_rank_sentence(shown_rank)}\n\nCurrent query: {caption_text}\n\n"
                           f"Notes: {feedback}\n\nWrite the improved query."))
        return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)

    pid = "refine@v1"
    parts = [_text("Target picture:"), IMAGE]
    _add_shown(parts, images, shown, "Image made from the current prompt:")
    parts.append(_text(f"Current prompt: {caption_text}\n\nDifferences from the target: {feedback}\n\n"
                       "Write the improved prompt."))
    return Prompt(pid, _chat(pid, parts), images, CAPTION_TOKENS)


def _add_shown(parts: list[dict], images: list, shown: Any, label: str) -> None:
    """The image the user was shown, under `label`, when there is one."""
    if shown is not None:
        parts += [_text(label), IMAGE]
        images.append(shown)


# ====================================================================== the paper set
# Sources of feedback a refine turns into a new query.
COMPARISON, CRITIQUE, PERSON = "comparison", "critique", "person"

PAPER = {
    "paper.caption@1": (
        "You caption images for text-to-image diffusion models, writing descriptions that are concise "
        "but detailed. Keep the description under {tokens} tokens."),
    "paper.caption_retrieval@1": (
        "You caption images with concise but detailed descriptions that tell one image apart from "
        "others in a retrieval task. Keep the description under {tokens} tokens."),
    "paper.compare@1": (
        "You analyse an original image against a synthetic image generated from its caption and point "
        "out the important differences that the caption's refinement must address. Keep the analysis "
        "under {tokens} tokens."),
    "paper.compare_retrieval@1": (
        "You compare images to help a person improve the text query they use in an image retrieval "
        "system. Keep the analysis under {tokens} tokens."),
    "paper.critique@1": (
        "You are the detail critic in an iterative caption refinement process: you help improve image "
        "captions by finding what is wrong with them and suggesting improvements."),
    "paper.refine@1": (
        "You refine image captions from feedback on how an original image differs from the image that "
        "was generated from its caption. Keep the refined caption under {tokens} tokens."),
    "paper.refine_critique@1": (
        "You refine image captions, improving them according to a critique of the caption."),
    "paper.refine_prediction@1": (
        "You are an image retrieval expert who refines text queries so that they match target images "
        "better in a retrieval system. Keep the refined query under {tokens} tokens."),
}

PAPER_ASK = {
    "paper.caption@1": (
        "Write a detailed, descriptive caption of this image to be used as the prompt of a diffusion "
        "model. Cover the visual elements, the style, the composition, the colours and the details. "
        "Answer with the caption only, ready to give to a diffusion model: no introduction and no "
        "explanation."),
    "paper.caption_retrieval@1": (
        "Write a detailed, descriptive caption of this image for image retrieval. Cover the distinctive "
        "visual elements, style, composition, colours and details that would pick out this particular "
        "image in a large collection. Answer with the caption only: no introduction and no explanation."),
    "paper.compare@1": (
        "The first image has this original caption: {caption}. Someone drew the second image from that "
        "caption. Compare what the two images contain and tell me only how they differ. Be concise and "
        "clear."),
    "paper.compare_retrieval@1": (
        "I search for the first image with this text query: \"{caption}\". The retrieval system gave me "
        "the second image instead. Compare what the two images contain and tell me only what differs and "
        "which details I should add to or change in my query to retrieve the first image. Be concise and "
        "clear."),
    "paper.critique@1": (
        "In this caption refinement process you are the detail critic. Review this caption of the image: "
        "\"{caption}\". Give specific feedback on how to improve it, judging its accuracy, detail, clarity "
        "and usefulness for a text-to-image system. Keep the critique under {tokens} tokens. Answer with "
        "the critique only, as constructive feedback."),
    "paper.refine@1": (
        "Please refine the caption below for this image. It was used to generate a synthetic version of "
        "the image, and the result did not fully match. This is the comparison feedback:\n\n{feedback}\n\n"
        "Previous caption: '{caption}'\n\nWrite an improved caption that would generate an image closer "
        "to the original, correcting the issues the comparison names. Answer with the refined caption "
        "only, with no explanation or text around it."),
    "paper.refine_critique@1": (
        "Here is a critique: \"{feedback}\". Refine this caption of the image with it: \"{caption}\". "
        "Write an improved version that deals with the issues raised while staying true to what the "
        "image shows. Answer with the refined caption only, with no explanation or text around it. Keep "
        "the answer under {tokens} tokens."),
    "paper.refine_prediction@1": (
        "I want a text query that retrieves this target image from a large collection. My current query "
        "is: \"{caption}\"\n\n{rank}\n\nHow the retrieved image differs from the target: {feedback}\n\n"
        "Look at both images, the target and the retrieved one. Refine my query so that it matches the "
        "target better and sets it apart from similar images in the collection, focusing on what is "
        "unique about the target and missing from my query. Answer with the refined query only, with no "
        "explanation or text around it."),
}


def _paper(pid: str, images: list, tokens: int, output: str = PROMPT_TEXT, **fields) -> Prompt:
    """A paper-set prompt: images first, then the request, as the scripts order the user turn."""
    system = PAPER[pid].format(tokens=tokens)
    ask = PAPER_ASK[pid].format(tokens=tokens, **fields)
    parts = [IMAGE for _ in images] + [_text(ask)]
    messages = [{"role": "system", "content": [_text(system)]}, {"role": "user", "content": parts}]
    return Prompt(pid, messages, list(images), tokens, output)


def _budget(tokens: int | None, mode: str, stage: str, limit: int) -> int:
    return min(tokens or presets.stage_tokens(mode, stage) or CAPTION_TOKENS, limit)


class PaperSet:
    name = "paper"

    def caption(self, target, style="generation", tokens=None, limit=1 << 30) -> Prompt:
        if style == "retrieval":
            return _paper("paper.caption_retrieval@1", [target], _budget(tokens, "prediction", "caption", limit))
        return _paper("paper.caption@1", [target], _budget(tokens, "genir", "caption", limit))

    def compare(self, target, shown, caption_text, tokens=None, limit=1 << 30, retrieval=False) -> Prompt:
        if retrieval:
            return _paper("paper.compare_retrieval@1", [target, shown],
                          _budget(tokens, "prediction", "compare", limit), REMARKS, caption=caption_text)
        return _paper("paper.compare@1", [target, shown], _budget(tokens, "genir", "compare", limit), REMARKS,
                      caption=caption_text)

    def critique(self, target, caption_text, tokens=None, limit=1 << 30) -> Prompt:
        return _paper("paper.critique@1", [target], _budget(tokens, "verbal", "critique", limit), REMARKS,
                      caption=caption_text)

    def refine(self, caption_text, feedback, *, target=None, shown=None, shown_rank=None, source="",
               tokens=None, limit=1 << 30) -> Prompt:
        if target is None or source == PERSON:
            return V1Set().refine(caption_text, feedback, shown=shown, tokens=tokens, limit=limit)
        if shown_rank is not None:
            images = [target] + ([shown] if shown is not None else [])
            return _paper("paper.refine_prediction@1", images, _budget(tokens, "prediction", "refine", limit),
                          caption=caption_text, feedback=feedback, rank=_rank_sentence(shown_rank))
        if source == CRITIQUE:
            return _paper("paper.refine_critique@1", [target], _budget(tokens, "verbal", "refine", limit),
                          caption=caption_text, feedback=feedback)
        images = [target] + ([shown] if shown is not None else [])
        return _paper("paper.refine@1", images, _budget(tokens, "genir", "refine", limit),
                      caption=caption_text, feedback=feedback)


class V1Set:
    """The first prompts, unchanged; `tokens` only sets the budget (their texts state none)."""
    name = "v1"

    @staticmethod
    def _cap(p: Prompt, tokens, limit) -> Prompt:
        from dataclasses import replace

        return replace(p, max_new_tokens=min(tokens or p.max_new_tokens, limit))

    def caption(self, target, style="generation", tokens=None, limit=1 << 30) -> Prompt:
        return self._cap(caption(target, style), tokens, limit)

    def compare(self, target, shown, caption_text, tokens=None, limit=1 << 30, retrieval=False) -> Prompt:
        return self._cap(compare(target, shown, caption_text), tokens, limit)

    def critique(self, target, caption_text, tokens=None, limit=1 << 30) -> Prompt:
        return self._cap(critique(target, caption_text), tokens, limit)

    def refine(self, caption_text, feedback, *, target=None, shown=None, shown_rank=None, source="",
               tokens=None, limit=1 << 30) -> Prompt:
        if source == PERSON:
            target = None
        return self._cap(refine(caption_text, feedback, target=target, shown=shown, shown_rank=shown_rank),
                         tokens, limit)


PROMPT_SETS = {"paper": PaperSet(), "v1": V1Set()}
DEFAULT_SET = "paper"


def prompt_set(name: str):
    """The prompt set called `name` ("" = the default); ValueError names the allowed sets."""
    key = (name or DEFAULT_SET).strip().lower()
    if key not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; allowed: {', '.join(PROMPT_SETS)}")
    return PROMPT_SETS[key]
