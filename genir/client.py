"""A small asyncio client for the genir orchestrator (genir.v1.Orchestrator over gRPC).

    import asyncio
    from genir.client import Client

    async def main():
        async with Client("127.0.0.1:50050") as c:          # token=..., ca=/cert=/key= for TLS
            s = await c.create_session("a brown dog on a beach")
            r0 = s.rounds[0]
            print([(h.rank + 1, h.payload["path"]) for h in r0.hits])   # ranks are 0-based on the wire
            png = (await c.get_image(r0.generated.ref)).data            # the rendering
            thumb = (await c.corpus_image(r0.hits[0].id, max_side=256)).data
            r1 = await c.next_round(s.session_id, feedback="the dog should be black")
            print(r1.query)

    asyncio.run(main())

Images come by reference by default (`Image.ref`, fetched with `get_image`), which keeps rounds
small. The web page (`genir serve web`), the evaluation runner and the README examples use it.
"""

from __future__ import annotations

from typing import AsyncIterator

import grpc

from genir.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

REFERENCE = common_pb2.IMAGE_DELIVERY_REFERENCE
INLINE = common_pb2.IMAGE_DELIVERY_INLINE


def read_token(path: str | None = None, env: str = "GENIR_AUTH_TOKEN") -> str | None:
    """A bearer token from a file (wins) or an environment variable, never argv (config.read_secret)."""
    from services.common.config import read_secret

    return read_secret(path, env)


class Client:
    """One channel to an orchestrator; every call sends the bearer token when one is given."""

    def __init__(self, target: str, *, token: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, max_message_mb: int = 64, timeout: float = 900.0):
        from services.common.channels import open_channel

        self.target = target
        self.timeout = timeout
        self.channel = open_channel(target, ca=ca, cert=cert, key=key, max_message_mb=max_message_mb)
        self.stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def _kw(self, timeout: float | None) -> dict:
        return {"timeout": timeout or self.timeout, "metadata": self.metadata}

    # -------------------------------------------------------------- sessions
    async def create_session(self, query: str, *, mode: str = "", collection: str = "", top_k: int = 0,
                             seed: int | None = None, delivery: int = REFERENCE,
                             timeout: float | None = None) -> orchestrator_pb2.Session:
        """Start a search; the session comes back with round 0 (rendering + top-K hits)."""
        opts = orchestrator_pb2.SessionOptions(collection=collection, top_k=top_k, image_delivery=delivery)
        if seed is not None:
            opts.seed = seed
        req = orchestrator_pb2.CreateSessionRequest(query=query, mode=mode, options=opts)
        return await self.stub.CreateSession(req, **self._kw(timeout))

    async def next_round(self, session_id: str, *, query: str | None = None, feedback: str | None = None,
                         timeout: float | None = None) -> orchestrator_pb2.Round:
        """The next round from a full new `query` or short `feedback` (exactly one)."""
        if (query is None) == (feedback is None):
            raise ValueError("next_round: give exactly one of query or feedback")
        req = orchestrator_pb2.NextRoundRequest(session_id=session_id)
        if query is not None:
            req.query = query
        else:
            req.feedback = feedback
        return await self.stub.NextRound(req, **self._kw(timeout))

    async def get_session(self, session_id: str, *, delivery: int = REFERENCE,
                          timeout: float | None = None) -> orchestrator_pb2.Session:
        req = orchestrator_pb2.GetSessionRequest(session_id=session_id, image_delivery=delivery)
        return await self.stub.GetSession(req, **self._kw(timeout or 60))

    async def delete_session(self, session_id: str, timeout: float | None = None) -> bool:
        resp = await self.stub.DeleteSession(orchestrator_pb2.DeleteSessionRequest(session_id=session_id),
                                             **self._kw(timeout or 60))
        return resp.deleted

    # -------------------------------------------------------------- images
    async def get_image(self, ref: str, timeout: float | None = None) -> common_pb2.Image:
        """A rendering delivered by reference."""
        return await self.stub.GetImage(orchestrator_pb2.GetImageRequest(ref=ref), **self._kw(timeout or 60))

    async def corpus_image(self, corpus_id: str, *, max_side: int = 0, collection: str = "",
                           timeout: float | None = None) -> common_pb2.Image:
        """A corpus photo by id; `max_side` 16..2048 gives a thumbnail, 0 the file itself."""
        req = orchestrator_pb2.GetCorpusImageRequest(collection=collection, id=str(corpus_id), max_side=max_side)
        return await self.stub.GetCorpusImage(req, **self._kw(timeout or 60))

    # -------------------------------------------------------------- simulated dialogs
    async def run_dialog(self, request: orchestrator_pb2.RunDialogRequest,
                         timeout: float | None = None) -> AsyncIterator[orchestrator_pb2.Round]:
        async for rnd in self.stub.RunDialog(request, **self._kw(timeout)):
            yield rnd

    async def describe(self, mode: str, options: orchestrator_pb2.SessionOptions | None = None,
                       timeout: float | None = None) -> tuple[dict[str, str], dict]:
        """(model ids, effective settings) of a dialog of `mode`, as the orchestrator's backends report them."""
        import json

        resp = await self.stub.Describe(orchestrator_pb2.DescribeRequest(mode=mode, options=options),
                                        **self._kw(timeout or 60))
        return dict(resp.models), json.loads(resp.settings_json or "{}")

    # -------------------------------------------------------------- lifetime
    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def describe_error(exc: BaseException) -> str:
    """One line for a person: the gRPC status and the server's message."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
