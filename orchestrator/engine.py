"""The round engine: one loop for every mode, simulated dialogs and human sessions alike.

    engine = Engine(ServiceClients.local(...), corpus=load_corpus(...), image_root=..., collection="coco")
    async for rnd in engine.run_dialog(orchestrator_pb2.RunDialogRequest(target_id="7", rounds=10)):
        ...                                   # genir.v1.Round, streamed as each round finishes
    await engine.close()

A round is: the query (from the simulated user's caption / feedback, a person, or a ChatIR
dialog) -> what the mode shows (rendering or top-1 retrieved image) and the corpus ranking,
with the target's exact rank when a target is known. Every stage is timed into Round.timings and
the `genir_stage_seconds{stage}` histogram. Seeds derive from (base seed, target id, round
index, stage), so the same request replays the same dialog.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import AsyncIterator

from genir.v1 import common_pb2, generator_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from orchestrator.clients import ServiceClients
from orchestrator.datasets import Corpus
from orchestrator.dialog import DialogState, Last
from orchestrator.modes import ALIASES, MODES, Mode, Shown, Step
from orchestrator.requests import parse_describe, parse_run_dialog
from orchestrator.settings import (
    REFINER_MODES,
    RENDERING_MODES,
    effective_render,
    effective_settings,
    fit_chars,
)
from services.common import validation
from services.common.errors import FailedPrecondition, InvalidArgument, ServiceError
from services.common.images import DEFAULT_MAX_PIXELS, decode_image
from services.common.paths import corpus_fingerprint, echo, first_difference_paged, resolve_in_root

log = logging.getLogger("genir.orchestrator.engine")

CORPUS_CHECK_TTL_S = 30.0     # a collection re-indexed meanwhile is noticed within this time
CORPUS_PAGE = 10_000


class Engine:
    """Runs rounds over the backends. `images` (a store with put_image) enables delivery by reference."""

    def __init__(self, clients: ServiceClients, *, corpus: Corpus | None = None, image_root: str | Path | None = None,
                 collection: str = "", round_timeout: float = 600.0, images=None, own_clients: bool = True):
        self.clients = clients
        self.corpus = corpus
        self.image_root = Path(image_root) if image_root else None
        self.collection = collection
        self.round_timeout = round_timeout
        self.images = images
        self._own = own_clients
        self._modes: dict[str, Mode] = {name: cls(self) for name, cls in MODES.items()}
        self._modes.update({old: self._modes[new] for old, new in ALIASES.items()})  # sessions stored before
        self._generator_info: generator_pb2.GeneratorInfo | None = None
        self.max_pixels = DEFAULT_MAX_PIXELS
        self._corpus_checked: dict[str, float] = {}
        self._corpus_fp: str | None = None
        self._cache_lock = threading.Lock()
        self._image_cache: OrderedDict[tuple, common_pb2.Image] = OrderedDict()

    # ------------------------------------------------------------------ simulated dialogs
    async def run_dialog(self, request: orchestrator_pb2.RunDialogRequest,
                         deadline: float | None = None) -> AsyncIterator[orchestrator_pb2.Round]:
        """Stream rounds 0..request.rounds of a simulated dialog (the refiner sees the target)."""
        mode, st = self.dialog_state(request)
        await self.check_corpus(st.collection, request.corpus_fingerprint)
        if mode.target_image:     # read and decoded off the event loop
            st.target = await asyncio.to_thread(self.target_image, st.target_id)
        delivery = st.options.image_delivery
        for t in range(request.rounds + 1):
            st.begin(t, self._deadline(deadline))
            step = await (mode.first(st) if t == 0 else mode.follow(st))
            rnd = await self.play(mode, st, step)
            yield await self.deliver(rnd, delivery)

    def dialog_state(self, request: orchestrator_pb2.RunDialogRequest) -> tuple[Mode, DialogState]:
        """Validate a RunDialogRequest and build the dialog's state (the target image is read later)."""
        d = parse_run_dialog(request, self.collection, self.corpus)
        st = DialogState(options=d.options, collection=d.options.collection, top_k=d.options.top_k,
                         base_seed=d.options.seed, key=d.target_id, mode=d.mode, target_id=d.target_id,
                         dialog=d.dialog)
        return self._modes[d.mode], st

    async def check_corpus(self, collection: str, client_fingerprint: str = "") -> None:
        """Target ids are positions in a corpus list: the client's, ours and the collection's must be one list."""
        if self._corpus_fp is None:
            self._corpus_fp = corpus_fingerprint(self.corpus.paths)   # once: the list never changes
        mine = self._corpus_fp
        if client_fingerprint and client_fingerprint != mine:
            n = client_fingerprint.split(":", 1)[0]
            raise FailedPrecondition(f"corpus: the client's corpus list ({echo(n, 12)[1:-1]} paths, fingerprint "
                                     f"{echo(client_fingerprint, 48)}) is not the orchestrator's --corpus "
                                     f"({len(self.corpus)} paths, {mine}); its ids would name other images")
        cached = self._corpus_checked.get(collection)
        if cached is not None and time.monotonic() - cached < CORPUS_CHECK_TTL_S:
            return
        info = await self.clients.retriever.call("CollectionInfo", retriever_pb2.CollectionInfoRequest(
            collection=collection))
        if not info.corpus_fingerprint:
            raise FailedPrecondition(f"corpus: collection {collection!r} records no corpus list (written by Upsert, "
                                     f"or its last `genir index` did not complete); index it with `genir index`")
        if info.corpus_fingerprint != mine:
            diff = await self._first_difference(collection, info.corpus_size)
            raise FailedPrecondition(f"corpus: collection {collection!r} was indexed from another corpus list than "
                                     f"the orchestrator's --corpus: {diff}; re-index or use the indexed list")
        self._corpus_checked[collection] = time.monotonic()

    async def _first_difference(self, collection: str, size: int) -> str:
        async def page(offset: int, limit: int):
            return (await self.clients.retriever.call("CollectionInfo", retriever_pb2.CollectionInfoRequest(
                collection=collection, paths_offset=offset, paths_limit=limit))).paths

        return await first_difference_paged(self.corpus.paths, size, page, CORPUS_PAGE)

    def target_image(self, target_id: str) -> common_pb2.Image:
        return self._read_corpus_image(self.corpus.path_of(int(target_id)), f"target {target_id}")

    def corpus_image(self, hit) -> common_pb2.Image:
        """The real corpus image of a hit (prediction mode shows the top-1)."""
        path = hit.payload.get("path") or (self.corpus.path_of(int(hit.id)) if self.corpus else "")
        if not path:
            raise FailedPrecondition(f"hit {hit.id}: no image path (no payload 'path' and no --corpus)")
        return self._read_corpus_image(path, f"corpus id {hit.id}")

    def _read_corpus_image(self, rel: str, what: str) -> common_pb2.Image:
        if self.image_root is None:
            raise FailedPrecondition(f"{what}: the orchestrator has no --image-root to read {echo(rel)} from")
        try:
            path = resolve_in_root(self.image_root, rel, what)
        except InvalidArgument as e:
            # A stored path that leaves the root is the collection's fault, not this request's.
            raise FailedPrecondition(e.message) from None
        try:
            st = path.stat()
        except OSError:
            # the relative corpus path only: server paths stay in the server's log
            raise FailedPrecondition(f"{what}: image file {echo(rel)} is missing under --image-root") from None
        # Keyed by the file's identity too: a file fixed or replaced on disk is read again.
        key = (rel, st.st_mtime_ns, st.st_size)
        with self._cache_lock:    # reads run on worker threads
            if key in self._image_cache:
                self._image_cache.move_to_end(key)
                return self._image_cache[key]
        try:
            data = path.read_bytes()
            im = decode_image(data, what, self.max_pixels)
        except InvalidArgument as e:
            log.warning("cannot decode corpus image %s: %s", path, e.message)
            raise FailedPrecondition(f"{what}: image file {echo(rel)} is not a readable image") from None
        except OSError as e:
            log.warning("cannot read corpus image %s: %s", path, e)
            raise FailedPrecondition(f"{what}: image file {echo(rel)} is unreadable ({type(e).__name__})") from None
        msg = common_pb2.Image(data=data, mime_type=mimetypes.guess_type(rel)[0] or "application/octet-stream",
                               width=im.width, height=im.height)
        with self._cache_lock:        # only images that decoded: a failed read is tried again next time
            self._image_cache[key] = msg
            while len(self._image_cache) > 64:
                self._image_cache.popitem(last=False)
        return msg

    # ------------------------------------------------------------------ human sessions
    def session_state(self, mode: str, options: orchestrator_pb2.SessionOptions, key: str,
                      rounds: list[orchestrator_pb2.Round]) -> tuple[Mode, DialogState]:
        """State of a human session (no target) positioned after its stored rounds."""
        st = DialogState(options=options, collection=options.collection, top_k=options.top_k,
                         base_seed=options.seed, key=key, mode=ALIASES.get(mode, mode), index=len(rounds))
        if rounds:
            prev = rounds[-1]
            # A person's next round starts from the last query (and their feedback); the previous
            # rendering is not needed, so it is not read back from the store.
            st.last = Last(prev.query, None, prev.target_rank if prev.HasField("target_rank") else None)
        return self._modes[mode], st

    async def human_round(self, mode: Mode, st: DialogState, *, query: str = "", feedback: str = "",
                          deadline: float | None = None) -> orchestrator_pb2.Round:
        """One session round from a full new query, or feedback the refiner merges into the last query."""
        st.begin(st.index, self._deadline(deadline))
        if feedback:
            if st.last is None:
                raise FailedPrecondition("feedback: the session has no previous query to refine")
            r = await self.refiner("refine", "Refine", st, refiner_pb2.RefineRequest(
                caption=st.last.query, feedback=feedback, sampling=st.sampling("refine"), prompt_set=st.prompt_set,
                feedback_source=refiner_pb2.FEEDBACK_SOURCE_PERSON))
            step = Step(r.text, feedback, r.prompt_id)
        else:
            step = Step(query)
        return await self.play(mode, st, step)

    # ------------------------------------------------------------------ the round
    async def play(self, mode: Mode, st: DialogState, step: Step) -> orchestrator_pb2.Round:
        """Show the step's query, rank the corpus, and record the round (images inline)."""
        query = step.query.strip()
        if not query:  # a VLM can answer nothing; keep searching with the previous query
            if st.last is None:
                raise FailedPrecondition(f"round {st.index}: the refiner returned an empty query")
            log.warning("round %d: empty query from the refiner; reusing the previous one", st.index)
            query = st.last.query
        shown: Shown = await mode.show(st, query)
        rnd = orchestrator_pb2.Round(index=st.index, query=query, feedback=step.feedback, hits=shown.hits,
                                     timings=st.timings, seed=st.seed(), prompt_id=step.prompt_id,
                                     backend_timings=st.backend_timings)
        if shown.image is not None:
            rnd.generated.CopyFrom(shown.image)
        if shown.target_rank is not None:
            rnd.target_rank = shown.target_rank
        if shown.rendered_query:
            rnd.query_cut, rnd.rendered_query = True, shown.rendered_query
        st.last = Last(query, shown.image, shown.target_rank)
        return rnd

    async def deliver(self, rnd: orchestrator_pb2.Round, delivery: int) -> orchestrator_pb2.Round:
        """Inline bytes, or a reference fetched later with GetImage (stored off the event loop)."""
        if delivery != common_pb2.IMAGE_DELIVERY_REFERENCE or not rnd.generated.data:
            return rnd
        if self.images is None:
            raise FailedPrecondition("options.image_delivery: delivery by reference needs the orchestrator's image store")
        out = orchestrator_pb2.Round()
        out.CopyFrom(rnd)
        img = rnd.generated
        ref = await self.images.off_loop(self.images.put_image, img)
        out.generated.CopyFrom(common_pb2.Image(ref=ref, mime_type=img.mime_type,
                                                width=img.width, height=img.height))
        return out

    # ------------------------------------------------------------------ backend verbs
    async def generator_info(self, deadline: float | None = None) -> generator_pb2.GeneratorInfo:
        """The generator's model and limits, asked once (the preset depends on its family)."""
        if self._generator_info is None:
            self._generator_info = await self.clients.generator.call("Info", generator_pb2.InfoRequest(),
                                                                      deadline=deadline)
        return self._generator_info

    async def describe(self, mode: str, options: orchestrator_pb2.SessionOptions,
                       deadline: float | None = None) -> tuple[dict[str, str], dict]:
        """(model ids, effective settings) of a dialog of `mode` under `options`, as this engine's
        backends report them; a backend that does not answer is written as unknown."""
        name, opts = parse_describe(orchestrator_pb2.DescribeRequest(mode=mode, options=options), self.collection)
        dl = self._deadline(deadline)

        async def ask(backend, method, req):
            try:
                return await backend.call(method, req, deadline=dl)
            except ServiceError as e:
                log.warning("describe: %s %s: %s", backend.name, method, e)
                return None

        gen = await ask(self.clients.generator, "Info", generator_pb2.InfoRequest()) \
            if name in RENDERING_MODES else None
        ref = await ask(self.clients.refiner, "Info", refiner_pb2.RefinerInfoRequest()) \
            if name in REFINER_MODES else None
        col = await ask(self.clients.retriever, "CollectionInfo",
                        retriever_pb2.CollectionInfoRequest(collection=opts.collection))
        models = {"generator": gen and gen.model, "refiner": ref and ref.model, "retriever": col and col.model}
        return {k: v for k, v in models.items() if v}, effective_settings(opts, name, gen, ref)

    async def render(self, st: DialogState, query: str) -> tuple[common_pb2.Image, str]:
        """(image, rendered query): the query as rendered when it had to be cut, else "".

        A refiner answer longer than the generator reads is cut here, never refused: first to the
        generator's character limit (at a word boundary), then to its token limit by the generator
        itself (truncate_prompt, as the reference pipelines do). The round keeps the full query.
        """
        info = await self.generator_info(st.deadline)
        r = effective_render(st.options, info)
        prompt = fit_chars(query, info.max_prompt_chars)
        req = generator_pb2.GenerateRequest(prompt=prompt, seed=st.seed(), width=r.width, height=r.height,
                                            num_inference_steps=r.steps, truncate_prompt=True,
                                            output_format=generator_pb2.OUTPUT_FORMAT_PNG)
        if r.guidance is not None:
            req.guidance_scale = r.guidance
        with st.stage("generate"):
            resp = await self.clients.generator.call("Generate", req, deadline=st.deadline)
        st.record_backend("generate", resp.timings)
        if not resp.images:
            raise FailedPrecondition("generator: Generate returned no image")
        rendered = resp.rendered_prompt if resp.prompt_truncated else prompt
        if rendered != query:
            log.info("round %d: query of %d characters rendered from its first %d", st.index, len(query), len(rendered))
            return resp.images[0], rendered
        return resp.images[0], ""

    async def search(self, st: DialogState, **query) -> retriever_pb2.SearchResponse:
        # Text towers read at most a few hundred tokens; a longer answer is cut to what the
        # retriever accepts instead of failing the dialog.
        if "text" in query:
            query["text"] = fit_chars(query["text"], validation.MAX_TEXT_CHARS)
        if "fusion" in query:
            query["fusion"].text = fit_chars(query["fusion"].text, validation.MAX_TEXT_CHARS)
        req = retriever_pb2.SearchRequest(collection=st.collection, top_k=st.top_k, **query)
        if st.target_id is not None:
            # Simulated dialogs rank the whole corpus exactly, as the authors' scripts do: the hits
            # (and prediction mode's top-1, which the simulated user then sees) never come from
            # an approximate index.
            req.target_id, req.exact = st.target_id, True
        with st.stage("retrieve"):
            resp = await self.clients.retriever.call("Search", req, deadline=st.deadline)
        st.record_backend("retrieve", resp.timings)
        return resp

    async def refiner(self, stage: str, method: str, st: DialogState, req) -> refiner_pb2.RefinerResponse:
        with st.stage(stage):
            resp = await self.clients.refiner.call(method, req, deadline=st.deadline)
        st.record_backend(stage, resp.timings)
        return resp

    def _deadline(self, outer: float | None) -> float:
        own = time.monotonic() + self.round_timeout
        return own if outer is None else min(own, outer)

    async def close(self) -> None:
        if self._own:
            await self.clients.close()
