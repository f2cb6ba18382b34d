"""`genir eval --embedded`: the orchestrator's round engine in this process, no orchestrator server.

The engine still calls the generator, refiner and retriever over gRPC (with the orchestrator's
own deadlines and retries); only the orchestrator hop disappears.
"""

from __future__ import annotations

from orchestrator.datasets import load_corpus
from orchestrator.evaluation.runner import EvalError

DEFAULT_BACKENDS = {"generator": "127.0.0.1:50051", "refiner": "127.0.0.1:50052", "retriever": "127.0.0.1:50053"}


def check_args(args) -> None:
    for name, default in DEFAULT_BACKENDS.items():
        if not getattr(args, name):
            setattr(args, name, default)
    if not args.collection:
        raise EvalError("--embedded needs --collection (the retriever collection of the corpus)")
    if not args.image_root:
        raise EvalError("--embedded needs --image-root (the simulated user reads the target images)")


def make_engine(args):
    from orchestrator.backends import Backends
    from orchestrator.engine import Engine

    check_args(args)
    backends = Backends.local(args.generator, args.refiner, args.retriever, max_message_mb=args.max_message_mb)
    return Engine(backends, corpus=load_corpus(args.corpus), image_root=args.image_root,
                  collection=args.collection)


RENDERING_MODES = ("genir", "fusion")
REFINER_MODES = ("genir", "fusion", "verbal", "prediction")


async def discover(generator: str | None, refiner: str | None, retriever: str | None, collection: str,
                   options, mode: str, timeout: float = 5.0) -> tuple[dict[str, str], dict]:
    """(model ids, effective settings) as the services report them; best effort, and what could not
    be asked is written as such (never guessed).

    Model ids: generator Info, refiner Info, the collection's embedding model. Effective settings:
    the preset applied to the generator's family (orchestrator/settings.py, the rule the engine
    uses) and the refiner's per-stage budgets and sampling.
    """
    import logging

    import grpc

    from genir.v1 import (
        generator_pb2,
        generator_pb2_grpc,
        refiner_pb2,
        refiner_pb2_grpc,
        retriever_pb2,
        retriever_pb2_grpc,
    )
    from orchestrator.settings import effective_render, refiner_settings

    log = logging.getLogger("genir.eval")
    found: dict[str, str] = {}
    effective: dict = {"preset": options.preset}

    async def ask(name, target, call):
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                return await call(ch)
        except grpc.aio.AioRpcError as e:
            log.warning("%s %s: no Info (%s)", name, target, e.code().name)
            return None

    if mode in RENDERING_MODES and not generator:
        effective["render"] = {"unknown": "the orchestrator's generator was not asked; pass --generator HOST:PORT "
                               "to record its model and effective settings"}
    if generator and mode in RENDERING_MODES:
        info = await ask("generator", generator, lambda ch: generator_pb2_grpc.GeneratorStub(ch).Info(
            generator_pb2.InfoRequest(), timeout=timeout))
        if info is not None:
            found["generator"] = info.model
            effective["render"] = effective_render(options, info).effective(info)
        else:
            effective["render"] = {"unknown": f"generator Info not answered at {generator}; pass --generator"}
    if refiner and mode in REFINER_MODES:
        info = await ask("refiner", refiner, lambda ch: refiner_pb2_grpc.RefinerStub(ch).Info(
            refiner_pb2.RefinerInfoRequest(), timeout=timeout))
        effective["refiner"] = refiner_settings(options, mode)
        if info is not None:
            found["refiner"] = info.model
            if not options.prompt_set:
                effective["refiner"]["prompt_set"] = info.default_prompt_set
            if options.preset != "paper":
                effective["refiner"] |= {"temperature": round(info.temperature, 6), "top_p": round(info.top_p, 6),
                                         "top_k": info.top_k, "repetition_penalty": round(info.repetition_penalty, 6)}
                effective["refiner"].pop("sampling", None)
    if retriever and collection:
        info = await ask("retriever", retriever, lambda ch: retriever_pb2_grpc.RetrieverStub(ch).CollectionInfo(
            retriever_pb2.CollectionInfoRequest(collection=collection), timeout=timeout))
        if info is not None:
            found["retriever"] = info.model
    return {k: v for k, v in found.items() if v}, effective
