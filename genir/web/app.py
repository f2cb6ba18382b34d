"""`genir serve web`: a web page where a person searches for a photo they remember.

A Starlette app under uvicorn. Starlette rather than FastAPI or Gradio: the page needs six small
JSON/image routes and one static page; Starlette gives routing, static files and async handlers
(our gRPC client is asyncio) with two small dependencies, and no generated UI we would have to
fight for keyboard use and accessible markup. The app talks to the orchestrator over gRPC only
(genir.client); it has no path to the models or the image folder.

Routes: `/` and `/s/<session id>` (the page; the second is the shareable session URL, `?found=ID`
records the photo marked found), `POST /api/sessions`, `GET /api/sessions/<id>`,
`POST /api/sessions/<id>/rounds`, `GET /img/render/<ref>`, `GET /img/corpus/<id>?max_side=N&collection=C`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from genir import contract
from genir.client import Client, describe_error
from services.common import config, server

log = logging.getLogger("genir.web")
SERVICE = "web"
STATIC = Path(__file__).resolve().parent / "static"
THUMB_SIDE = 256
# gRPC status -> HTTP status the page shows; the message is the orchestrator's own.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 502, grpc.StatusCode.PERMISSION_DENIED: 502,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


ORCHESTRATOR_TOKEN_ENV = "GENIR_WEB_ORCHESTRATOR_TOKEN"


@dataclass(frozen=True)
class WebConfig(config.ClientTLSConfig):
    """Every web page setting (flags, env GENIR_WEB_*). Not a `config.ServerConfig`: the page is an
    HTTP server, so the gRPC server flags (TLS, metrics, drain, message sizes) do not apply."""
    host: str = config.flag("address to bind (the page has no login of its own: keep it local or put it "
                            "behind your own authentication)", "127.0.0.1")
    port: int = config.flag("HTTP port", 8080)
    orchestrator: str = config.flag("orchestrator address host:port", "127.0.0.1:50050")
    orchestrator_token_file: str | None = config.flag(
        f"file with the orchestrator's bearer token (else env {ORCHESTRATOR_TOKEN_ENV})")
    log_level: str = config.flag("logging level", "INFO")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.register(parser, WebConfig, SERVICE)


# ---------------------------------------------------------------------- JSON shapes
def rfc3339(ts) -> str:
    return ts.ToDatetime(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


def hit_json(hit, collection: str) -> dict:
    q = f"collection={collection}&" if collection else ""
    return {"id": hit.id, "rank": hit.rank + 1, "score": round(float(hit.score), 4),
            "path": hit.payload.get("path", ""),
            "thumb": f"/img/corpus/{hit.id}?{q}max_side={THUMB_SIDE}", "full": f"/img/corpus/{hit.id}?{q}max_side=0"}


def round_json(rnd, collection: str) -> dict:
    """A round for the page: 1-based ranks (the wire keeps 0-based), image URLs on this server."""
    g = rnd.generated
    image = f"/img/render/{g.ref}" if g.ref else None
    return {"index": rnd.index, "query": rnd.query, "feedback": rnd.feedback, "rendering": image,
            "width": g.width, "height": g.height, "seconds": round(sum(t.seconds for t in rnd.timings), 2),
            "hits": [hit_json(h, collection) for h in rnd.hits]}


def session_json(s) -> dict:
    collection = s.options.collection
    return {"session_id": s.session_id, "mode": s.mode, "collection": collection, "top_k": s.options.top_k,
            "created": rfc3339(s.created), "expires": rfc3339(s.expires),
            "rounds": [round_json(r, collection) for r in s.rounds]}


# ---------------------------------------------------------------------- handlers
class BadRequest(Exception):
    pass


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > contract.MAX_QUERY_CHARS:
        raise BadRequest(f"{name}: a string of at most {contract.MAX_QUERY_CHARS} characters")
    return value


def make_app(connect) -> Starlette:
    """The app; `connect()` makes its genir.client.Client once the server's event loop runs."""
    client: Client = None  # set by the lifespan below

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal client
        client = connect()
        try:
            yield
        finally:
            await client.close()

    async def page(request: Request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def create(request: Request):
        body = await _body(request)
        query = _text(body, "query")
        if not query or not query.strip():
            raise BadRequest("query: describe the photo you are looking for")
        mode = _text(body, "mode") or ""
        s = await client.create_session(query, mode=mode, collection=_text(body, "collection") or "")
        return JSONResponse(session_json(s))

    async def get(request: Request):
        s = await client.get_session(request.path_params["sid"])
        return JSONResponse(session_json(s))

    async def next_round(request: Request):
        body = await _body(request)
        query, feedback = _text(body, "query"), _text(body, "feedback")
        if (query is None) == (feedback is None):
            raise BadRequest("give either feedback on the rendering or an edited description, not both")
        sid = request.path_params["sid"]
        rnd = await client.next_round(sid, query=query, feedback=feedback)
        s = await client.get_session(sid)
        return JSONResponse({"round": round_json(rnd, s.options.collection), "session": session_json(s)})

    async def render(request: Request):
        img = await client.get_image(request.path_params["ref"])
        return Response(img.data, media_type=img.mime_type or "image/png",
                        headers={"Cache-Control": "private, max-age=86400, immutable"})

    async def corpus(request: Request):
        try:
            side = int(request.query_params.get("max_side", THUMB_SIDE))
        except ValueError:
            raise BadRequest("max_side: an integer") from None
        img = await client.corpus_image(request.path_params["cid"], max_side=side,
                                        collection=request.query_params.get("collection", ""))
        return Response(img.data, media_type=img.mime_type, headers={"Cache-Control": "private, max-age=3600"})

    async def rpc_error(request: Request, exc: grpc.aio.AioRpcError):
        status = HTTP_STATUS.get(exc.code(), 502)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, describe_error(exc))
        return JSONResponse({"error": describe_error(exc)}, status_code=status)

    async def bad_request(request: Request, exc: BadRequest):
        return JSONResponse({"error": f"INVALID_ARGUMENT: {exc}"}, status_code=400)

    routes = [
        Route("/", page), Route("/s/{sid}", page),
        Route("/api/sessions", create, methods=["POST"]),
        Route("/api/sessions/{sid}", get),
        Route("/api/sessions/{sid}/rounds", next_round, methods=["POST"]),
        Route("/img/render/{ref}", render),
        Route("/img/corpus/{cid}", corpus),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={grpc.aio.AioRpcError: rpc_error, BadRequest: bad_request})


async def start(cfg: WebConfig) -> int:
    """Serve the page until SIGTERM/SIGINT (uvicorn's own handling); 1 when it could not start."""
    import uvicorn

    token = config.read_secret(cfg.orchestrator_token_file, ORCHESTRATOR_TOKEN_ENV)
    app = make_app(lambda: Client(cfg.orchestrator, token=token, ca=cfg.client_tls_ca,
                                  cert=cfg.client_tls_cert, key=cfg.client_tls_key))
    log.info("web page on http://%s:%d/ (orchestrator %s, token %s)", cfg.host, cfg.port, cfg.orchestrator,
             "set" if token else "none")
    web = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(),
                                        access_log=False))
    await web.serve()
    return 0 if web.started else 1


def main(args) -> int:
    return server.main(WebConfig.from_args(args), SERVICE, start)
