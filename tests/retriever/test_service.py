"""genir.v1.Retriever as a real process over a corpus indexed by `genir index` (tiny BLIP), plus
a SigLIP server on the server-mode engine (qdrant-client ":memory:", the stand-in for a Qdrant
server). Ranks are checked against numpy brute force over the stored vectors."""

from __future__ import annotations

import base64
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from genir.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc
from services.retriever.store import EdgeStore
from testkit.procs import Proc, free_port, grpcurl, health_status, sample_sum, scrape
from tests.retriever.conftest import BLIP_SIZE, numpy_rank, run_index

SVC = "genir.v1.Retriever"


def image_msg(path) -> common_pb2.Image:
    return common_pb2.Image(data=path.read_bytes(), mime_type="image/jpeg")


def start_server(model_dir, tmp, *extra) -> tuple[Proc, str, int]:
    port, mport = free_port(), free_port()
    proc = Proc([sys.executable, "-m", "genir.cli", "serve", "retriever", "--model", model_dir,
                 "--port", port, "--metrics-port", mport, "--image-size", BLIP_SIZE, *extra], tmp / f"{model_dir.name}.log")
    proc.start().wait_healthy(port, timeout=90)
    return proc, f"127.0.0.1:{port}", mport


@pytest.fixture(scope="module")
def blip(blip_model, corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retriever")
    store = tmp / "store"
    summary, _ = run_index(blip_model, corpus, "coco", store, "--allow-missing")
    assert summary["points"] == corpus["n_ok"]
    s = EdgeStore(store)                       # read the stored vectors before the service owns the folder
    ids, vecs = s.matrix("coco")
    s.ensure("foreign", "clip:some-other-model@32", 16)   # same dimension, another model
    s.upsert("foreign", [0], np.eye(1, 16, dtype=np.float32))
    s.close()
    proc, target, mport = start_server(blip_model, tmp, "--store-path", store,
                                       "--default-collection", "coco")
    ch = grpc.insecure_channel(target)
    yield dict(proc=proc, target=target, mport=mport, stub=retriever_pb2_grpc.RetrieverStub(ch),
               ids=ids, vecs=vecs, corpus=corpus)
    ch.close()
    assert proc.terminate() == 0, proc.log()


def q_image(env, i):
    return env["stub"].EmbedImages(retriever_pb2.EmbedImagesRequest(
        images=[image_msg(env["corpus"]["root"] / env["corpus"]["paths"][i])])).vectors[0].values


def test_indexed_image_is_rank_0(blip):
    for i in (0, 37, 199):
        img = image_msg(blip["corpus"]["root"] / blip["corpus"]["paths"][i])
        for exact in (False, True):
            r = blip["stub"].Search(retriever_pb2.SearchRequest(collection="coco", image=img, top_k=5,
                                                                target_id=str(i), exact=exact))
            assert r.hits[0].id == str(i) and r.hits[0].rank == 0 and r.target_rank == 0
            assert r.hits[0].payload["path"] == blip["corpus"]["paths"][i]
            assert r.hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert r.collection_points == blip["corpus"]["n_ok"] and r.model == "blip:blip@32"
            assert {t.stage for t in r.timings} >= {"embed", "search", "rank"}


def test_target_rank_matches_numpy_for_image_text_and_fusion(blip):
    ids, vecs, stub = blip["ids"], blip["vecs"], blip["stub"]
    texts = ["a red circle on a blue background", "green lines", "a photo of a yellow square and a dog"]
    t_vecs = np.array([v.values for v in stub.EmbedTexts(retriever_pb2.EmbedTextsRequest(texts=texts)).vectors],
                      np.float32)
    targets = [3, 50, 120, 201, 239]
    for k, target in enumerate(targets):
        src = (target * 7 + 11) % blip["corpus"]["n_ok"]          # query with some other image
        qi = np.array(q_image(blip, src), np.float32)
        img = image_msg(blip["corpus"]["root"] / blip["corpus"]["paths"][src])
        text = texts[k % len(texts)]
        qt = t_vecs[k % len(texts)]

        r = stub.Search(retriever_pb2.SearchRequest(collection="coco", image=img, target_id=str(target)))
        assert r.target_rank == numpy_rank(ids, vecs @ qi, target)
        r = stub.Search(retriever_pb2.SearchRequest(collection="coco", text=text, target_id=str(target), exact=True))
        assert r.target_rank == numpy_rank(ids, vecs @ qt, target)
        top = [int(ids[i]) for i in np.lexsort((ids, -(vecs @ qt)))[:10]]
        assert [int(h.id) for h in r.hits] == top

        s_i, s_t = vecs @ qi, vecs @ qt
        z = lambda s: (s - s.mean()) / s.std()  # noqa: E731
        fused = (0.3 * z(s_i) + 0.7 * z(s_t)).astype(np.float32)
        r = stub.Search(retriever_pb2.SearchRequest(
            collection="coco", target_id=str(target), top_k=20,
            fusion=retriever_pb2.Fusion(image=img, text=text, image_weight=0.3, text_weight=0.7)))
        assert r.target_rank == numpy_rank(ids, fused, target)
        assert [int(h.id) for h in r.hits] == [int(ids[i]) for i in np.lexsort((ids, -fused))[:20]]


def test_vector_search_and_text_truncation(blip):
    stub = blip["stub"]
    v = q_image(blip, 17)
    r = stub.Search(retriever_pb2.SearchRequest(vector=retriever_pb2.Vector(values=v), top_k=0))  # default collection
    assert len(r.hits) == 10 and r.hits[0].id == "17"
    long = " ".join(["dog"] * 400)
    r = stub.EmbedTexts(retriever_pb2.EmbedTextsRequest(texts=["a dog", long]))
    assert list(r.truncated) == [False, True] and r.dim == 16 and len(r.vectors) == 2
    assert np.linalg.norm(r.vectors[1].values) == pytest.approx(1, abs=1e-5)
    assert stub.Search(retriever_pb2.SearchRequest(text=long)).text_truncated


def test_upsert_stream_and_collection_info(blip):
    stub, corpus = blip["stub"], blip["corpus"]

    def stream():
        yield retriever_pb2.UpsertRequest(collection="added", items=[
            retriever_pb2.UpsertItem(id=str(i), image=image_msg(corpus["root"] / corpus["paths"][i]),
                                     payload={"path": corpus["paths"][i]}) for i in range(5)])
        yield retriever_pb2.UpsertRequest(items=[
            retriever_pb2.UpsertItem(id="100", vector=retriever_pb2.Vector(values=q_image(blip, 100))),
            retriever_pb2.UpsertItem(id="101", image=common_pb2.Image(data=b"garbage")),
            retriever_pb2.UpsertItem(id="x", vector=retriever_pb2.Vector(values=[1.0] * 16)),
            retriever_pb2.UpsertItem(id="102", vector=retriever_pb2.Vector(values=[1.0] * 3))])

    r = stub.Upsert(stream())
    assert r.upserted == 6 and r.collection_points == 6 and len(r.failed) == 3
    assert any(f.startswith("101:") and "image" in f for f in r.failed)
    assert stub.Upsert(iter([retriever_pb2.UpsertRequest(collection="added", items=[
        retriever_pb2.UpsertItem(id="0", image=image_msg(corpus["root"] / corpus["paths"][0]))])])).collection_points == 6
    info = stub.CollectionInfo(retriever_pb2.CollectionInfoRequest(collection="added"))
    assert (info.name, info.model, info.dim, info.points, info.engine, info.distance) == \
        ("added", "blip:blip@32", 16, 6, "qdrant-edge", "Cosine")
    r = stub.Search(retriever_pb2.SearchRequest(collection="added", image=image_msg(corpus["root"] / corpus["paths"][3])))
    assert r.hits[0].id == "3" and r.hits[0].payload["path"] == corpus["paths"][3]


def test_bad_input_gives_clear_errors_and_server_keeps_serving(blip):
    t = blip["target"]
    vec16 = [0.25] * 16
    img = base64.b64encode(
        (blip["corpus"]["root"] / blip["corpus"]["paths"][0]).read_bytes()).decode()
    cases = [  # (request, grpc code, words the message must contain)
        ({"collection": "coco", "text": "   "}, 3, "text"),
        ({"collection": "coco", "image": {"data": base64.b64encode(b"not an image").decode()}}, 3, "image"),
        ({"collection": "nope", "text": "a dog"}, 5, "nope"),
        ({"collection": "coco", "vector": {"values": [0.1] * 7}}, 9, "vector"),
        ({"collection": "coco", "vector": {"values": []}}, 3, "vector"),
        ({"collection": "coco", "text": "a dog", "topK": 1001}, 3, "top_k"),
        ({"collection": "coco", "text": "a dog", "topK": -1}, 3, "top_k"),
        ({"collection": "coco", "vector": {"values": vec16}, "targetId": "99999"}, 5, "target_id"),
        ({"collection": "coco", "vector": {"values": vec16}, "targetId": "abc"}, 3, "target_id"),
        ({"collection": "foreign", "text": "a dog"}, 9, "clip:some-other-model"),
        ({"collection": "coco"}, 3, "query"),
        ({"collection": "coco", "fusion": {"image": {"data": img}, "text": ""}}, 3, "fusion.text"),
        ({"collection": "coco", "fusion": {"image": {"data": img}, "text": "x", "imageWeight": -1}}, 3, "image_weight"),
    ]
    for data, code, word in cases:
        out = grpcurl(t, f"{SVC}/Search", data=data)
        assert out.returncode == 64 + code, (data, out.returncode, out.stdout, out.stderr)
        err = json.loads(out.stdout or out.stderr)
        assert err["code"] == code and word in err["message"], (data, err)
    for method, data, code, word in [
        ("EmbedTexts", {"texts": []}, 3, "texts"),
        ("EmbedTexts", {"texts": ["ok", ""]}, 3, "texts[1]"),
        ("EmbedImages", {"images": [{"data": base64.b64encode(b"\x89PNG\r\n\x1a\n....").decode()}]}, 3, "images[0]"),
        ("CollectionInfo", {"collection": "missing"}, 5, "missing"),
    ]:
        out = grpcurl(t, f"{SVC}/{method}", data=data)
        assert out.returncode == 64 + code, (method, data, out.stdout, out.stderr)
        assert word in json.loads(out.stdout or out.stderr)["message"]
    assert health_status(t) == 1 and blip["proc"].alive()
    ok = grpcurl(t, f"{SVC}/Search", data={"collection": "coco", "text": "a red dog", "topK": 3})
    assert ok.returncode == 0 and len(json.loads(ok.stdout)["hits"]) == 3


def test_concurrent_searches_share_batches_and_keep_their_own_answers(blip):
    """16 calls at once: each gets what it gets alone; a bad one fails alone; batches form."""
    stub, paths = blip["stub"], blip["corpus"]["paths"]

    def request(i):
        if i == 5:
            return retriever_pb2.SearchRequest(collection="coco", text="a dog", target_id="99999")
        if i % 2:
            return retriever_pb2.SearchRequest(collection="coco", text=f"a shape number {i}", target_id=str(i), top_k=3)
        return retriever_pb2.SearchRequest(collection="coco", image=image_msg(blip["corpus"]["root"] / paths[i]),
                                           target_id=str(i), top_k=5)

    def call(i):
        try:
            r = stub.Search(request(i), timeout=60)
        except grpc.RpcError as e:
            return e.code()
        return [h.id for h in r.hits], r.target_rank, {t.stage for t in r.timings}

    before = sample_sum(scrape(blip["mport"]), "genir_retriever_batch_size_count")
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(call, range(16)))
    after = scrape(blip["mport"])
    alone = [call(i) for i in range(16)]
    assert together[5] == alone[5] == grpc.StatusCode.NOT_FOUND
    for i in set(range(16)) - {5}:
        assert together[i][:2] == alone[i][:2], i
        assert together[i][2] >= {"queue", "embed", "search", "rank"}
    batches = sample_sum(after, "genir_retriever_batch_size_count") - before
    assert 1 <= batches < 16, "16 concurrent calls ran one batch each: nothing was batched"


def test_metrics(blip):
    exact_before = sample_sum(scrape(blip["mport"]), "genir_retriever_search_seconds_count", exact="true")
    blip["stub"].Search(retriever_pb2.SearchRequest(collection="coco", text="a dog"))   # approximate asked
    blip["stub"].CollectionInfo(retriever_pb2.CollectionInfoRequest(collection="coco"))
    text = scrape(blip["mport"])
    # 240 points is below --exact-below-points: the approximate query was answered exactly
    assert sample_sum(text, "genir_retriever_search_seconds_count", exact="true") == exact_before + 1
    assert sample_sum(text, "genir_retriever_search_seconds_count") > 0
    assert sample_sum(text, "genir_retriever_embed_seconds_count", tower="text") > 0
    assert sample_sum(text, "genir_retriever_collection_points", collection="coco") == blip["corpus"]["n_ok"]
    assert sample_sum(text, "grpc_server_handled_total", grpc_service=SVC, grpc_method="Search",
                      grpc_code="NOT_FOUND") >= 1


def test_siglip_on_server_engine(tiny_models, corpus, tmp_path):
    """Server-mode code path: qdrant-client local mode (":memory:") stands in for a Qdrant server."""
    # --exact-below-points 0: approximate queries take the engine's own search path here
    proc, target, _ = start_server(tiny_models / "siglip", tmp_path, "--qdrant-url", ":memory:", "--exact-below-points", "0")
    try:
        with grpc.insecure_channel(target) as ch:
            stub = retriever_pb2_grpc.RetrieverStub(ch)
            paths = corpus["paths"][:40]
            r = stub.Upsert(iter([retriever_pb2.UpsertRequest(collection="s", items=[
                retriever_pb2.UpsertItem(id=str(i), image=image_msg(corpus["root"] / p), payload={"path": p})
                for i, p in enumerate(paths)])]))
            assert r.upserted == 40 and r.collection_points == 40
            info = stub.CollectionInfo(retriever_pb2.CollectionInfoRequest(collection="s"))
            assert info.engine == "qdrant" and info.dim == 32 and info.model.startswith("siglip:")
            vecs = np.array([v.values for v in stub.EmbedImages(retriever_pb2.EmbedImagesRequest(
                images=[image_msg(corpus["root"] / p) for p in paths])).vectors], np.float32)
            ids = np.arange(40)
            q = stub.EmbedTexts(retriever_pb2.EmbedTextsRequest(texts=["a blue square"])).vectors[0].values
            r = stub.Search(retriever_pb2.SearchRequest(collection="s", text="a blue square", target_id="9"))
            assert r.target_rank == numpy_rank(ids, vecs @ np.array(q, np.float32), 9)
            r = stub.Search(retriever_pb2.SearchRequest(collection="s", image=image_msg(corpus["root"] / paths[12])))
            assert r.hits[0].id == "12"
            with pytest.raises(grpc.RpcError) as e:
                stub.Search(retriever_pb2.SearchRequest(collection="s", vector=retriever_pb2.Vector(values=[1.0] * 16)))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        assert proc.terminate() == 0, proc.log()
