"""Dialog modes as small strategies over one round engine (see shared/reference/genir_method.md).

A mode answers three questions; the engine does everything else (seeds, timings, deadlines,
target rank, delivery, persistence):
  first(st)  -> the simulated user's round-0 query (the VLM sees the target),
  follow(st) -> the simulated user's next query from the previous round (st.last),
  show(st, q)-> what the user is shown for query q, and the ranking of the corpus.
Human sessions use only show(): their queries come from the person (or Refine merges the
person's feedback).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from genir.v1 import common_pb2, refiner_pb2, retriever_pb2
from orchestrator.datasets import chatir_query
from services.common.errors import InvalidArgument

if TYPE_CHECKING:  # pragma: no cover
    from orchestrator.engine import DialogState, Engine


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


class Mode:
    name = ""
    session = True        # usable in human-in-the-loop sessions
    target_image = True   # the simulated user needs to see the target

    def __init__(self, eng: "Engine"):
        self.eng = eng

    async def first(self, st: "DialogState") -> Step:
        raise NotImplementedError

    async def follow(self, st: "DialogState") -> Step:
        raise NotImplementedError

    async def show(self, st: "DialogState", query: str) -> Shown:
        raise NotImplementedError

    # shared verbs ------------------------------------------------------------------
    async def _caption(self, st, style) -> Step:
        r = await self.eng.refiner("caption", "Caption", st, refiner_pb2.CaptionRequest(
            target=st.target, style=style, sampling=st.sampling("caption")))
        return Step(r.text, "", r.prompt_id)

    async def _compare_refine(self, st, *, pass_shown: bool = False) -> Step:
        last = st.last
        cmp = await self.eng.refiner("compare", "Compare", st, refiner_pb2.CompareRequest(
            target=st.target, generated=last.image, caption=last.query, sampling=st.sampling("compare")))
        req = refiner_pb2.RefineRequest(caption=last.query, feedback=cmp.text, target=st.target,
                                        sampling=st.sampling("refine"))
        if pass_shown:  # prediction feedback: the retrieved image and the rank it really had
            req.generated.CopyFrom(last.image)
            if last.target_rank is not None:
                req.shown_rank = last.target_rank
        ref = await self.eng.refiner("refine", "Refine", st, req)
        return Step(ref.text, cmp.text, ref.prompt_id)

    async def _render(self, st, query) -> common_pb2.Image:
        return await self.eng.generate(st, query)

    async def _search(self, st, **query) -> Shown:
        resp = await self.eng.search(st, **query)
        return Shown(None, list(resp.hits), resp.target_rank if resp.HasField("target_rank") else None)


class GenIR(Mode):
    """Render the query, search image->image; the simulated user compares and refines."""
    name = "genir"

    async def first(self, st):
        return await self._caption(st, refiner_pb2.CAPTION_STYLE_GENERATION)

    async def follow(self, st):
        return await self._compare_refine(st)

    async def show(self, st, query):
        image = await self._render(st, query)
        shown = await self._search(st, image=image)
        shown.image = image
        return shown


class Verbal(Mode):
    """Text only: critique -> refine; text->image search; nothing is shown but the hits."""
    name = "verbal"

    async def first(self, st):
        return await self._caption(st, refiner_pb2.CAPTION_STYLE_GENERATION)

    async def follow(self, st):
        last = st.last
        crit = await self.eng.refiner("critique", "Critique", st, refiner_pb2.CritiqueRequest(
            target=st.target, caption=last.query, sampling=st.sampling("critique")))
        ref = await self.eng.refiner("refine", "Refine", st, refiner_pb2.RefineRequest(
            caption=last.query, feedback=crit.text, target=st.target, sampling=st.sampling("refine")))
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
            shown.image = await asyncio.to_thread(self.eng.corpus_image, shown.hits[0])   # file read + decode
        return shown


class ChatIR(Mode):
    """ChatIR human dialogs: round t's query is the caption plus the first t Q/A turns."""
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
        return chatir_query(st.dialog, t)


class Hybrid(GenIR):
    """GenIR's dialog, but its rendering and the query text are searched together (score fusion)."""
    name = "hybrid"

    async def show(self, st, query):
        image = await self._render(st, query)
        fusion = retriever_pb2.Fusion(image=image, text=query, image_weight=st.options.image_weight or 0.5,
                                      text_weight=st.options.text_weight or 0.5)
        shown = await self._search(st, fusion=fusion)
        shown.image = image
        return shown


MODES: dict[str, type[Mode]] = {m.name: m for m in (GenIR, Verbal, Prediction, ChatIR, Hybrid)}
SESSION_MODES = tuple(name for name, m in MODES.items() if m.session)


def mode_name(value: str, *, session: bool) -> str:
    """Validated mode name ("" = genir); the message lists the allowed modes."""
    name = (value or "genir").strip().lower()
    allowed = SESSION_MODES if session else tuple(MODES)
    if name not in allowed:
        extra = " (chatir replays recorded dialogs: use RunDialog)" if session and name == "chatir" else ""
        raise InvalidArgument(f"mode: unknown mode {value!r}{extra}; allowed: {', '.join(allowed)}")
    return name
