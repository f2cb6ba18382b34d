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


async def discover_models(generator: str | None, retriever: str | None, collection: str,
                          timeout: float = 5.0) -> dict[str, str]:
    """Model ids the backends report (generator Info, the collection's embedding model); best effort."""
    import logging

    import grpc

    from genir.v1 import generator_pb2, generator_pb2_grpc, retriever_pb2, retriever_pb2_grpc

    log = logging.getLogger("genir.eval")
    found: dict[str, str] = {}
    if generator:
        try:
            async with grpc.aio.insecure_channel(generator) as ch:
                info = await generator_pb2_grpc.GeneratorStub(ch).Info(generator_pb2.InfoRequest(), timeout=timeout)
                found["generator"] = info.model
        except grpc.aio.AioRpcError as e:
            log.warning("generator %s: no model id (%s)", generator, e.code().name)
    if retriever and collection:
        try:
            async with grpc.aio.insecure_channel(retriever) as ch:
                info = await retriever_pb2_grpc.RetrieverStub(ch).CollectionInfo(
                    retriever_pb2.CollectionInfoRequest(collection=collection), timeout=timeout)
                found["retriever"] = info.model
        except grpc.aio.AioRpcError as e:
            log.warning("retriever %s: no model id for collection %r (%s)", retriever, collection, e.code().name)
    return {k: v for k, v in found.items() if v}
