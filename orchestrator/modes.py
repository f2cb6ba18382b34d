"""Dialog modes as small strategies over one round engine (the method and baselines: docs/method.md).

A mode answers three questions through four verbs of the engine (`RoundServices`: render,
search, refiner, corpus_image); the engine does everything else (seeds, timings, deadlines,
target rank, delivery, persistence):
  first(st)  -> the simulated user's round-0 query (the VLM sees the target),
  follow(st) -> the simulated user's next query from the previous round (st.last),
  show(st, q)-> what the user is shown for query q, and the ranking of the corpus.
Human sessions use only show(): their queries come from the person (or Refine merges the
person's feedback).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from genir import contract
from genir.v1 import common_pb2, refiner_pb2, retriever_pb2
from orchestrator.datasets import chatir_query
from orchestrator.dialog import DialogState
from services.common.errors import InvalidArgument

log = logging.getLogger("genir.orchestrator.modes")


class RoundServices(Protocol):
    """All a mode may ask of the engine (orchestrator.engine.Engine implements it)."""

    async def render(self, st: DialogState, query: str) -> tuple[common_pb2.Image, str]: ...

    async def search(self, st: DialogState, **query) -> retriever_pb2.SearchResponse: ...

    async def refiner(self, stage: str, method: str, st: DialogState, req) -> refiner_pb2.RefinerResponse: ...

    def corpus_image(self, hit) -> common_pb2.Image: ...


@dataclass
class Step:
    """A query and where it came from."""
    query: str
    feedback: str = ""
    prompt_id: str = ""


@dataclass
class Shown:
    """What one round showed: an image (rendering or retrieved) and the ranked hits."""
    image: common_pb2.Image | None
    hits: list = field(default_factory=list)
    target_rank: int | None = None
    rendered_query: str = ""      # set when the query was cut to the generator's limits


class Mode:
    name = ""
    session = True        # usable in human-in-the-loop sessions
    target_image = True   # the simulated user needs to see the target

    def __init__(self, services: RoundServices):
        self.svc = services

    async def first(self, st: DialogState) -> Step:
        raise NotImplementedError

    async def follow(self, st: DialogState) -> Step:
        raise NotImplementedError

    async def show(self, st: DialogState, query: str) -> Shown:
        raise NotImplementedError

    # shared verbs ------------------------------------------------------------------
    async def _caption(self, st, style) -> Step:
        r = await self.svc.refiner("caption", "Caption", st, refiner_pb2.CaptionRequest(
            target=st.target, style=style, sampling=st.sampling("caption"), prompt_set=st.prompt_set))
        return Step(r.text, "", r.prompt_id)

    async def _compare_refine(self, st, *, pass_shown: bool = False) -> Step:
        last = st.last
        style = refiner_pb2.CAPTION_STYLE_RETRIEVAL if pass_shown else refiner_pb2.CAPTION_STYLE_GENERATION
        cmp = await self.svc.refiner("compare", "Compare", st, refiner_pb2.CompareRequest(
            target=st.target, generated=last.image, caption=last.query, sampling=st.sampling("compare"),
            prompt_set=st.prompt_set, style=style))
        if not cmp.text.strip():
            return _unchanged(st, "comparison")
        req = refiner_pb2.RefineRequest(caption=last.query, feedback=cmp.text, target=st.target,
                                        sampling=st.sampling("refine"), prompt_set=st.prompt_set,
                                        feedback_source=refiner_pb2.FEEDBACK_SOURCE_COMPARISON)
        if pass_shown:  # prediction feedback: the retrieved image and the rank it really had
            req.generated.CopyFrom(last.image)
            if last.target_rank is not None:
                req.shown_rank = last.target_rank
        ref = await self.svc.refiner("refine", "Refine", st, req)
        return Step(ref.text, cmp.text, ref.prompt_id)

    async def _render(self, st, query) -> Shown:
        """The rendering of `query` (cut to the generator's limits first when too long)."""
        image, rendered = await self.svc.render(st, query)
        return Shown(image, rendered_query=rendered)

    async def _search(self, st, **query) -> Shown:
        resp = await self.svc.search(st, **query)
        return Shown(None, list(resp.hits), resp.target_rank if resp.HasField("target_rank") else None)


def _unchanged(st, what: str) -> Step:
    """A VLM can answer nothing: with no feedback there is nothing to refine, so the round searches
    with the previous query again (its empty `feedback` shows it), instead of failing the dialog."""
    log.warning("round %d: empty %s from the refiner; keeping the previous query", st.index, what)
    return Step(st.last.query, "", "")


class GenIR(Mode):
    """Render the query, search image->image; the simulated user compares and refines."""
    name = "genir"

    async def first(self, st):
        return await self._caption(st, refiner_pb2.CAPTION_STYLE_GENERATION)

    async def follow(self, st):
        return await self._compare_refine(st)

    async def show(self, st, query):
        made = await self._render(st, query)
        shown = await self._search(st, image=made.image)
        shown.image, shown.rendered_query = made.image, made.rendered_query
        return shown


class Verbal(Mode):
    """Text only: critique -> refine; text->image search; nothing is shown but the hits."""
    name = "verbal"

    async def first(self, st):
        return await self._caption(st, refiner_pb2.CAPTION_STYLE_GENERATION)

    async def follow(self, st):
        last = st.last
        crit = await self.svc.refiner("critique", "Critique", st, refiner_pb2.CritiqueRequest(
            target=st.target, caption=last.query, sampling=st.sampling("critique"), prompt_set=st.prompt_set))
        if not crit.text.strip():
            return _unchanged(st, "critique")
        ref = await self.svc.refiner("refine", "Refine", st, refiner_pb2.RefineRequest(
            caption=last.query, feedback=crit.text, target=st.target, sampling=st.sampling("refine"),
            prompt_set=st.prompt_set, feedback_source=refiner_pb2.FEEDBACK_SOURCE_CRITIQUE))
        return Step(ref.text, crit.text, ref.prompt_id)

    async def show(self, st, query):
        return await self._search(st, text=query)


class Prediction(Mode):
    """Text->image search; the top-1 retrieved image is shown; compare + refine from it, with
    the comparison actually used and the target's true rank passed (the reference code's bugs)."""
    name = "prediction"

    async def first(self, st):
        return await self._caption(st, refiner_pb2.CAPTION_STYLE_RETRIEVAL)

    async def follow(self, st):
        return await self._compare_refine(st, pass_shown=True)

    async def show(self, st, query):
        shown = await self._search(st, text=query)
        if shown.hits:
            shown.image = await asyncio.to_thread(self.svc.corpus_image, shown.hits[0])   # file read + decode
        return shown


class ChatIR(Mode):
    """ChatIR human dialogs: round t's query is the caption plus the first t Q/A turns (or, with
    options.chatir_per_round, the t-th string alone)."""
    name = "chatir"
    session = False
    target_image = False

    async def first(self, st):
        return Step(self._query(st, 0))

    async def follow(self, st):
        return Step(self._query(st, st.index), st.dialog[st.index])

    async def show(self, st, query):
        return await self._search(st, text=query)

    @staticmethod
    def _query(st, t):
        return chatir_query(st.dialog, t, per_round=st.options.chatir_per_round)


class Fusion(GenIR):
    """GenIR's dialog, but its rendering and the query text are searched together (score fusion).
    Not the paper's "hybrid" (Table 5: a per-query choice between two runs; `genir eval compare
    --hybrid`). Weights default to 0.5 each; 0 is allowed for image-only or text-only search."""
    name = "fusion"

    async def show(self, st, query):
        made = await self._render(st, query)
        w_image, w_text = fusion_weights(st.options)
        fusion = retriever_pb2.Fusion(image=made.image, text=query, image_weight=w_image, text_weight=w_text)
        shown = await self._search(st, fusion=fusion)
        shown.image, shown.rendered_query = made.image, made.rendered_query
        return shown


def fusion_weights(options) -> tuple[float, float]:
    """(image, text) weights: unset = 0.5; both 0 would score every image equally."""
    w_image = options.image_weight if options.HasField("image_weight") else 0.5
    w_text = options.text_weight if options.HasField("text_weight") else 0.5
    if w_image == 0 and w_text == 0:
        raise InvalidArgument("options.image_weight, options.text_weight: both 0; at least one must be > 0")
    return w_image, w_text


MODES: dict[str, type[Mode]] = {m.name: m for m in (GenIR, Verbal, Prediction, ChatIR, Fusion)}
ALIASES = contract.MODE_ALIASES


def mode_name(value: str, *, session: bool) -> str:
    """Validated mode name ("" = genir); the message lists the allowed modes."""
    name = (value or contract.DEFAULT_MODE).strip().lower()
    if name in ALIASES:
        log.warning("mode %r is now called %r (score fusion of rendering and text); the old name still works",
                    name, ALIASES[name])
        name = ALIASES[name]
    allowed = contract.SESSION_MODES if session else contract.MODES
    if name not in allowed:
        extra = " (chatir replays recorded dialogs: use RunDialog)" if session and name == "chatir" else ""
        raise InvalidArgument(f"mode: unknown mode {value!r}{extra}; allowed: {', '.join(allowed)}")
    return name
