"""`genir eval --embedded`: the orchestrator's round engine in this process, no orchestrator server.

The engine still calls the generator, refiner and retriever over gRPC (with the orchestrator's
own deadlines and retries); only the orchestrator hop disappears.
"""

from __future__ import annotations

from evaluation.runner import EvalError
from orchestrator.datasets import load_corpus

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
    from orchestrator.clients import ServiceClients
    from orchestrator.engine import Engine

    check_args(args)
    from services.common import config

    clients = ServiceClients.local(args.generator, args.refiner, args.retriever, max_message_mb=args.max_message_mb,
                                   token=config.read_secret(None, config.BACKEND_TOKEN_ENV))  # backends with auth on
    return Engine(clients, corpus=load_corpus(args.corpus), image_root=args.image_root,
                  collection=args.collection)
