"""`genir serve orchestrator`: the genir.v1.Orchestrator servicer over the round engine.

The servicer parses requests (orchestrator/requests.py) and moves rounds between the engine
and the session store; the rounds themselves are the engine's (orchestrator/engine.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass

from genir import contract
from genir.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.clients import ClientConfig, ServiceClients
from orchestrator.corpus_images import CorpusImages
from orchestrator.datasets import DatasetError, load_corpus
from orchestrator.engine import Engine
from orchestrator.requests import (
    parse_create_session,
    parse_delete_session,
    parse_get_corpus_image,
    parse_get_image,
    parse_get_session,
    parse_next_round,
)
from orchestrator.sessions import SessionStore
from services.common import config, server
from services.common.retry import RetryPolicy
from services.common.server import Service, serve

log = logging.getLogger("genir.orchestrator")
SERVICE = "orchestrator"
STORAGE_PROBE_SECONDS = 2.0   # health is NOT_SERVING while the session store cannot be written


@dataclass(frozen=True)
class OrchestratorConfig(config.ClientTLSConfig, config.ServerConfig):
    """Every orchestrator setting (flags, env GENIR_ORCHESTRATOR_*)."""
    generator: str = config.flag("generator address host:port", "127.0.0.1:50051")
    refiner: str = config.flag("refiner address host:port", "127.0.0.1:50052")
    retriever: str = config.flag("retriever address host:port", "127.0.0.1:50053")
    collection: str = config.flag("default retriever collection (SessionOptions.collection overrides)", "")
    corpus: str | None = config.flag("corpus JSON (array of relative image paths; index = corpus id)")
    image_root: str | None = config.flag("folder the corpus paths are relative to (target and top-1 images)")
    db: str = config.flag("SQLite file for sessions (images beside it)", "orchestrator-sessions.sqlite")
    session_ttl: float = config.flag("seconds a session lives after its last round", 86400.0)
    backend_token_file: str | None = config.flag(
        f"file holding the bearer token sent to the backends (else env {config.BACKEND_TOKEN_ENV}). The token this "
        f"server requires: --auth-token-file / {config.INBOUND_TOKEN_ENV}")
    generator_timeout: float = config.flag("seconds per Generate attempt", 120.0)
    refiner_timeout: float = config.flag("seconds per refiner attempt", 120.0)
    retriever_timeout: float = config.flag("seconds per retriever attempt", 30.0)
    call_budget: float = config.flag("seconds for one backend call, retries and backoff included", 180.0)
    round_timeout: float = config.flag("seconds for one whole round", 600.0)
    retry_attempts: int = config.flag("attempts per backend call on UNAVAILABLE/RESOURCE_EXHAUSTED", 5)
    retry_initial_backoff: float = config.flag("seconds before the first retry (doubles, jittered)", 0.2)
    retry_max_backoff: float = config.flag("cap on one backoff pause, seconds", 3.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.register(parser, OrchestratorConfig, SERVICE, port=50050, metrics_port=9100)


def clients_from_config(args: OrchestratorConfig) -> ServiceClients:
    retry = RetryPolicy(attempts=max(1, args.retry_attempts), initial_backoff=args.retry_initial_backoff,
                        max_backoff=args.retry_max_backoff)
    common = dict(budget=args.call_budget, ca=args.client_tls_ca, cert=args.client_tls_cert,
                  key=args.client_tls_key, max_message_mb=args.max_message_mb, retry=retry,
                  token=config.read_secret(args.backend_token_file, config.BACKEND_TOKEN_ENV))
    return ServiceClients(ClientConfig("generator", args.generator, timeout=args.generator_timeout, **common),
                    ClientConfig("refiner", args.refiner, timeout=args.refiner_timeout, **common),
                    ClientConfig("retriever", args.retriever, timeout=args.retriever_timeout, **common))


def _deadline(context) -> float | None:
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, engine: Engine, store: SessionStore, max_message_mb: int = 64):
        self.engine = engine
        self.corpus_images = CorpusImages(engine.image_root)
        self.store = store
        # GetSession inlines images up to half the message limit, the rest go as references.
        self.inline_budget = max_message_mb * (1 << 20) // 2
        # One lock per session with a round in progress; weak values drop it once no call holds it,
        # so sessions that expire instead of being deleted leave nothing behind.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    def _session(self, rec, rounds) -> orchestrator_pb2.Session:
        out = orchestrator_pb2.Session(session_id=rec.id, mode=rec.mode, options=rec.options, rounds=rounds,
                                       created_at=rec.created_at, expires_at=rec.expires_at)
        out.created.FromNanoseconds(int(rec.created_at * 1e9))
        out.expires.FromNanoseconds(int(rec.expires_at * 1e9))
        return out

    @staticmethod
    def _inline(delivery: int, session_choice: int) -> bool:
        choice = delivery or session_choice
        return choice != common_pb2.IMAGE_DELIVERY_REFERENCE

    # ------------------------------------------------------------------ sessions
    async def CreateSession(self, request, context):
        query, mode, options = parse_create_session(request, self.engine.collection)
        if not options.HasField("seed"):
            options.seed = contract.random_seed()
        rec = self.store.new(mode, options)    # stored only together with its first round
        m, st = self.engine.session_state(mode, options, rec.id, [])
        rnd = await self.engine.human_round(m, st, query=query, deadline=_deadline(context))
        rnd.session_id = rec.id
        rec.expires_at, stored = await self.store.off_loop(self.store.add_round, rec.id, rnd, rec)
        return self._session(rec, [self._out(rnd, stored, request.options.image_delivery, options.image_delivery)])

    async def NextRound(self, request, context):
        session_id, which, text = parse_next_round(request)
        rec = await self.store.off_loop(self.store.get, session_id)
        async with self._lock(rec.id):
            rounds = await self.store.off_loop(self.store.rounds, rec.id, inline=False)
            self.store.check_room(rounds)
            m, st = self.engine.session_state(rec.mode, rec.options, rec.id, rounds)
            kw = {"feedback": text} if which == "feedback" else {"query": text}
            rnd = await self.engine.human_round(m, st, deadline=_deadline(context), **kw)
            rnd.session_id = rec.id
            _, stored = await self.store.off_loop(self.store.add_round, rec.id, rnd)
        return self._out(rnd, stored, request.image_delivery, rec.options.image_delivery)

    def _out(self, rnd, stored, delivery: int, session_choice: int):
        """The round with its image inline, or as stored (a reference bound to the session), as asked."""
        return rnd if self._inline(delivery, session_choice) else stored

    async def GetSession(self, request, context):
        session_id, delivery = parse_get_session(request)
        rec = await self.store.off_loop(self.store.get, session_id)
        inline = self._inline(delivery, rec.options.image_delivery)
        rounds = await self.store.off_loop(self.store.rounds, rec.id, inline=inline, inline_budget=self.inline_budget)
        return self._session(rec, rounds)

    async def DeleteSession(self, request, context):
        session_id = parse_delete_session(request)
        deleted = await self.store.off_loop(self.store.delete, session_id)
        self._locks.pop(session_id, None)
        return orchestrator_pb2.DeleteSessionResponse(deleted=deleted)

    async def GetImage(self, request, context):
        return await self.store.off_loop(self.store.get_image, parse_get_image(request))

    async def GetCorpusImage(self, request, context):
        rel, max_side = parse_get_corpus_image(request, self.engine.collection, self.engine.corpus)
        # decoding and scaling run off the event loop
        pic = await asyncio.to_thread(self.corpus_images.get, rel, max_side)
        return common_pb2.Image(data=pic.data, mime_type=pic.mime_type, width=pic.width, height=pic.height)

    # ------------------------------------------------------------------ simulated dialogs
    # RunDialog and Describe are parsed by the engine (orchestrator/requests.py), which in-process
    # callers drive without this servicer.
    async def Describe(self, request, context):
        models, settings = await self.engine.describe(request.mode, request.options, _deadline(context))
        return orchestrator_pb2.DescribeResponse(models=models, settings_json=json.dumps(settings, sort_keys=True))

    async def RunDialog(self, request, context):
        async for rnd in self.engine.run_dialog(request, deadline=_deadline(context)):
            yield rnd


async def _purge_loop(store: SessionStore, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            removed = await store.off_loop(store.purge)
            if removed:
                log.info("expired %d stored image(s)", removed)
        except Exception:  # noqa: BLE001 - housekeeping must not stop the server
            log.exception("session purge failed")


async def start(cfg: OrchestratorConfig) -> int:
    try:
        corpus = load_corpus(cfg.corpus) if cfg.corpus else None
    except DatasetError as e:
        log.error("%s", e)
        return 2
    store = SessionStore(cfg.db, ttl=cfg.session_ttl)
    engine = Engine(clients_from_config(cfg), corpus=corpus, image_root=cfg.image_root,
                    collection=cfg.collection, round_timeout=cfg.round_timeout, images=store)
    servicer = OrchestratorServicer(engine, store, cfg.max_message_mb)
    purger = asyncio.ensure_future(_purge_loop(store, min(60.0, max(1.0, cfg.session_ttl / 4))))

    async def close():
        purger.cancel()
        await engine.close()
        await asyncio.to_thread(store.close)

    if corpus is not None:
        log.info("corpus: %d images from %s (image root %s)", len(corpus), cfg.corpus, cfg.image_root)

    async def storage_writable() -> bool:
        return await store.off_loop(store.writable)

    return await serve(cfg, [Service("genir.v1.Orchestrator", orchestrator_pb2_grpc.add_OrchestratorServicer_to_server,
                                     servicer)], load=lambda: store.off_loop(store.purge), close=close,
                       readiness=storage_writable, readiness_every=STORAGE_PROBE_SECONDS)


def main(args) -> int:
    return server.main(OrchestratorConfig.from_args(args), SERVICE, start)
