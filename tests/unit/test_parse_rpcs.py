"""The pure per-RPC validators: a request proto in, plain values or the typed error out (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genir.v1 import common_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from orchestrator.requests import parse_create_session, parse_next_round
from services.common.errors import InvalidArgument
from services.refiner.server import Limits, parse_caption, parse_refine
from services.retriever.server import parse_search

LIMITS = Limits(max_new_tokens=64, max_pixels=10_000, max_request_pixels=15_000)


def png(w: int, h: int) -> common_pb2.Image:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return common_pb2.Image(data=buf.getvalue())


def test_parse_search_text_vector_and_image_queries():
    q, image = parse_search(retriever_pb2.SearchRequest(collection=" c ", text="a red kite", target_id="7"), None)
    assert (q.collection, q.text, q.top_k, q.target_id, image) == ("c", "a red kite", 10, 7, None)
    q, image = parse_search(retriever_pb2.SearchRequest(vector=retriever_pb2.Vector(values=[0, 1]), top_k=3), "d")
    assert q.collection == "d" and q.top_k == 3 and np.array_equal(q.vector, [0, 1]) and image is None
    req = retriever_pb2.SearchRequest(collection="c", fusion=retriever_pb2.Fusion(image=png(4, 4), text="kite"))
    q, (msg, field) = parse_search(req, None)
    assert q.fusion[1:] == ("kite", 0.5, 0.5) and field == "fusion.image" and msg.data == req.fusion.image.data


@pytest.mark.parametrize("request_, message", [
    (retriever_pb2.SearchRequest(text="a"), "collection: required"),
    (retriever_pb2.SearchRequest(collection="c", text="a", top_k=1001), "top_k: 1001 is out of range [1, 1000]"),
    (retriever_pb2.SearchRequest(collection="c", text="a", target_id="x"), "target_id"),
    (retriever_pb2.SearchRequest(collection="c"), "query: one of image, text, vector or fusion is required"),
])
def test_parse_search_refuses(request_, message):
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_search(request_, None)


def test_parse_caption_checks_images_from_headers_against_the_budgets():
    prompt = parse_caption(refiner_pb2.CaptionRequest(target=png(50, 50)), LIMITS)
    assert prompt.images and prompt.images[0].field == "target" and prompt.max_new_tokens <= 64
    with pytest.raises(InvalidArgument, match="target"):
        parse_caption(refiner_pb2.CaptionRequest(target=png(200, 200)), LIMITS)  # 40,000 px > 10,000


def test_parse_refine_needs_a_target_for_simulated_feedback():
    with pytest.raises(InvalidArgument, match="shown_rank: only meaningful with a target"):
        parse_refine(refiner_pb2.RefineRequest(caption="a", feedback="b", shown_rank=3), LIMITS)
    with pytest.raises(InvalidArgument, match="feedback_source: .* needs the target"):
        parse_refine(refiner_pb2.RefineRequest(caption="a", feedback="b",
                                               feedback_source=refiner_pb2.FEEDBACK_SOURCE_COMPARISON), LIMITS)


def test_parse_create_session_and_next_round():
    query, mode, options = parse_create_session(
        orchestrator_pb2.CreateSessionRequest(query=" a kite ", mode="hybrid"), "coco")
    assert (query, mode, options.collection, options.top_k) == ("a kite", "fusion", "coco", 10)
    assert not options.HasField("seed")  # drawn by the servicer, not by the pure parser
    with pytest.raises(InvalidArgument, match="chatir replays recorded dialogs"):
        parse_create_session(orchestrator_pb2.CreateSessionRequest(query="a", mode="chatir"), "coco")
    sid = "0123456789abcdef0123456789abcdef"
    assert parse_next_round(orchestrator_pb2.NextRoundRequest(session_id=sid, feedback="bluer")) == \
        (sid, "feedback", "bluer")
    with pytest.raises(InvalidArgument, match="input: set either query"):
        parse_next_round(orchestrator_pb2.NextRoundRequest())
    with pytest.raises(InvalidArgument, match="query: 4097 characters"):
        parse_next_round(orchestrator_pb2.NextRoundRequest(query="x" * 4097))
