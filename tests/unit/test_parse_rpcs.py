"""The pure per-RPC validators: a request proto in, plain values or the typed error out (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genir.v1 import common_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from orchestrator.datasets import Corpus
from orchestrator.requests import (
    parse_create_session,
    parse_delete_session,
    parse_describe,
    parse_get_image,
    parse_get_session,
    parse_next_round,
    parse_run_dialog,
)
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.refiner.server import Limits, parse_caption, parse_refine
from services.retriever.server import (
    parse_collection_info,
    parse_embed_images,
    parse_embed_texts,
    parse_search,
    parse_upsert_item,
    parse_upsert_items,
    parse_upsert_message,
)

LIMITS = Limits(max_new_tokens=64, max_pixels=10_000, max_request_pixels=15_000)
SID = "0123456789abcdef0123456789abcdef"


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
    assert parse_next_round(orchestrator_pb2.NextRoundRequest(session_id=SID, feedback="bluer")) == \
        (SID, "feedback", "bluer")
    with pytest.raises(InvalidArgument, match="input: set either query"):
        parse_next_round(orchestrator_pb2.NextRoundRequest())
    with pytest.raises(InvalidArgument, match="query: 4097 characters"):
        parse_next_round(orchestrator_pb2.NextRoundRequest(query="x" * 4097))
    with pytest.raises(InvalidArgument, match="session_id: required"):
        parse_next_round(orchestrator_pb2.NextRoundRequest(query="a kite"))


def raises(error, message: str, parse, *args):
    """`parse(*args)` raises `error` whose message contains `message` (no pattern syntax)."""
    with pytest.raises(error) as caught:
        parse(*args)
    assert message in caught.value.message, caught.value.message


# ---------------------------------------------------------------------- retriever
def test_parse_embed_images_and_texts():
    req = retriever_pb2.EmbedImagesRequest(images=[png(4, 4), png(2, 3)])
    assert [field for _, field in parse_embed_images(req)] == ["images[0]", "images[1]"]
    raises(InvalidArgument, "images (count): 0 is out of range [1, 256]", parse_embed_images,
           retriever_pb2.EmbedImagesRequest())
    texts = parse_embed_texts(retriever_pb2.EmbedTextsRequest(texts=[" a kite ", "sea"]))
    assert [(t.tower, t.value) for t in texts] == [("text", "a kite"), ("text", "sea")]
    raises(InvalidArgument, "texts (count): 300 is out of range [1, 256]", parse_embed_texts,
           retriever_pb2.EmbedTextsRequest(texts=["a"] * 300))
    raises(InvalidArgument, "texts[1]: must not be empty", parse_embed_texts,
           retriever_pb2.EmbedTextsRequest(texts=["a", " "]))


def test_parse_collection_info():
    req = retriever_pb2.CollectionInfoRequest(paths_offset=5, paths_limit=20)
    assert parse_collection_info(req, "coco") == ("coco", 5, 20)
    raises(InvalidArgument, "collection: required", parse_collection_info, req, None)
    raises(InvalidArgument, "paths_limit: 10001 is out of range [0, 10000]", parse_collection_info,
           retriever_pb2.CollectionInfoRequest(collection="c", paths_limit=10_001), None)


def test_parse_upsert_message_keeps_one_collection_per_stream():
    first = retriever_pb2.UpsertRequest(collection="c")
    assert parse_upsert_message(first, None, None) == "c"
    assert parse_upsert_message(retriever_pb2.UpsertRequest(), "c", None) == "c"
    assert parse_upsert_message(retriever_pb2.UpsertRequest(), None, "default") == "default"
    raises(InvalidArgument, "collection: 'd' differs from the stream's 'c'", parse_upsert_message,
           retriever_pb2.UpsertRequest(collection="d"), "c", None)
    raises(InvalidArgument, "items (count per message): 300 is out of range [0, 256]", parse_upsert_message,
           retriever_pb2.UpsertRequest(collection="c", items=[retriever_pb2.UpsertItem(id="1")] * 300), None, None)


def test_parse_upsert_item_image_or_vector():
    item = parse_upsert_item(retriever_pb2.UpsertItem(id="3", image=png(20, 10), payload={"path": "a.png"}),
                             0, 4, 10_000)
    assert (item.id, item.payload, item.pixels, item.image[1], item.vector) == (3, {"path": "a.png"}, 200,
                                                                               "items[0].image", None)
    item = parse_upsert_item(retriever_pb2.UpsertItem(id="4", vector=retriever_pb2.Vector(values=[1, 0])), 1, 2, 1)
    assert item.image is None and np.array_equal(item.vector, [1, 0])
    raises(InvalidArgument, "items[1].vector: 2 values, collection holds 3-d vectors", parse_upsert_item,
           retriever_pb2.UpsertItem(id="4", vector=retriever_pb2.Vector(values=[1, 0])), 1, 3, 1)
    raises(InvalidArgument, "items[0]: needs an image or a vector", parse_upsert_item,
           retriever_pb2.UpsertItem(id="4"), 0, 3, 1)
    raises(InvalidArgument, "items[0].payload: 17 keys, over the limit of 16", parse_upsert_item,
           retriever_pb2.UpsertItem(id="4", payload={str(i): "" for i in range(17)}), 0, 3, 1)


def test_parse_upsert_items_reports_bad_items_and_spends_one_pixel_budget():
    items = [retriever_pb2.UpsertItem(id="1", image=png(10, 10)), retriever_pb2.UpsertItem(id="x"),
             retriever_pb2.UpsertItem(id="2", image=png(10, 10)),
             retriever_pb2.UpsertItem(id="3", vector=retriever_pb2.Vector(values=[0, 1]))]
    ok, failed = parse_upsert_items(items, 2, 10_000, 150)
    assert [it.id for it in ok] == [1, 3]
    assert failed[0].startswith("x: items[1].id: 'x' is not a corpus id")
    assert failed[1] == "2: items[2].image: over the per-message pixel budget of 150; send it in a later message"


# ---------------------------------------------------------------------- orchestrator
def test_parse_session_and_image_requests():
    assert parse_get_session(orchestrator_pb2.GetSessionRequest(session_id=f" {SID} ", image_delivery=2)) == (SID, 2)
    raises(InvalidArgument, "image_delivery: unknown value 7", parse_get_session,
           orchestrator_pb2.GetSessionRequest(session_id=SID, image_delivery=7))
    raises(NotFound, "session_id: session 'nope' not found", parse_get_session,
           orchestrator_pb2.GetSessionRequest(session_id="nope"))
    assert parse_delete_session(orchestrator_pb2.DeleteSessionRequest(session_id=SID)) == SID
    raises(InvalidArgument, "session_id: required", parse_delete_session, orchestrator_pb2.DeleteSessionRequest())
    ref = "a" * 64 + ".png"
    assert parse_get_image(orchestrator_pb2.GetImageRequest(ref=ref)) == ref
    raises(InvalidArgument, "is not an image reference", parse_get_image,
           orchestrator_pb2.GetImageRequest(ref="../../etc/passwd"))


CORPUS = Corpus(("a.jpg", "b.jpg", "c.jpg"), {"a.jpg": 0, "b.jpg": 1, "c.jpg": 2})


def test_parse_run_dialog_resolves_options_and_checks_the_target():
    d = parse_run_dialog(orchestrator_pb2.RunDialogRequest(target_id="2", rounds=3), "coco", CORPUS)
    assert (d.mode, d.rounds, d.target_id, d.options.collection, d.options.seed) == ("genir", 3, "2", "coco", 0)
    chatir = orchestrator_pb2.RunDialogRequest(target_id="0", mode="chatir", rounds=1, dialog=["cap", "q? a"])
    assert parse_run_dialog(chatir, "coco", CORPUS).dialog == ("cap", "q? a")


@pytest.mark.parametrize("fields, corpus, error, message", [
    (dict(rounds=1), CORPUS, InvalidArgument, "target_id: required"),
    (dict(target_id="abc"), CORPUS, InvalidArgument, "target_id: 'abc' is not a corpus id"),
    (dict(target_id="3"), CORPUS, NotFound, "target_id: '3' is not in the corpus (ids 0..2)"),
    (dict(target_id="1"), None, FailedPrecondition, "target_id: the orchestrator has no corpus"),
    (dict(target_id="1", rounds=21), CORPUS, InvalidArgument, "rounds: 21 is out of range [0, 20]"),
    (dict(target_id="1", mode="chatir", rounds=2, dialog=["a"]), CORPUS, InvalidArgument,
     "dialog: chatir mode needs at least rounds + 1 = 3 strings"),
    (dict(target_id="1", mode="sketch"), CORPUS, InvalidArgument, "mode: unknown mode 'sketch'"),
])
def test_parse_run_dialog_refuses(fields, corpus, error, message):
    raises(error, message, parse_run_dialog, orchestrator_pb2.RunDialogRequest(**fields), "coco", corpus)


def test_parse_describe():
    mode, options = parse_describe(orchestrator_pb2.DescribeRequest(mode="verbal"), "coco")
    assert (mode, options.collection, options.top_k) == ("verbal", "coco", 10)
    raises(InvalidArgument, "options.collection: empty", parse_describe, orchestrator_pb2.DescribeRequest(), "")


def test_a_sha256_image_is_refused_outside_the_refiner():
    """Only the refiner keeps images by hash; elsewhere a sha256 is refused, with or without bytes."""
    from services.common import images

    named = common_pb2.Image(sha256="ab" * 32)
    both = common_pb2.Image(data=png(4, 4).data, sha256="ab" * 32)
    for msg in (named, both):
        raises(InvalidArgument, "images[0]: images named by sha256 are accepted by the refiner only",
               images.check_protos, [(msg, "images[0]")])
        raises(InvalidArgument, "items[0].image: images named by sha256 are accepted by the refiner only",
               parse_upsert_item, retriever_pb2.UpsertItem(id="1", image=msg), 0, 3, 10_000)
