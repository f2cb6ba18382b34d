"""The bad-input corpus: malformed requests to all five servers of a running stack (orchestrator,
generator, refiner, retriever as real genir processes; Triton itself over HTTP). Each row names the
status it must get and a piece of the message that names the problem. No message may carry the
auth token, a server-side path or a traceback. After the corpus every service is still SERVING,
a normal dialog still works and no process was restarted.

Senders: "json" = the real grpcurl binary with a JSON body (grpcurl refuses some wrong types
itself: those rows expect "CLIENT" and grpcurl's own message, and the same mistake is also sent
as raw protobuf bytes); "raw" = serialized bytes over a generic gRPC call; "http" = Triton's
KServe-v2 HTTP endpoint.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

import pytest

from genir.v1 import common_pb2, generator_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from testkit.procs import health_status
from tests.system.badinput import Outcome, img, png, png_header_only, truncated_png, via_bytes, via_grpcurl, via_http
from tests.system.conftest import MAX_MESSAGE_MB

pytestmark = pytest.mark.timeout(600)

OK_PNG = png()
TWO_MB = 2 * MAX_MESSAGE_MB * 1024 * 1024
BIG = "x" * TWO_MB
GOOD_SAMPLING_IMG = img(OK_PNG)

GEN, REF, RET, ORC = "genir.v1.Generator", "genir.v1.Refiner", "genir.v1.Retriever", "genir.v1.Orchestrator"
INVALID, NOT_FOUND, CLIENT = "INVALID_ARGUMENT", "NOT_FOUND", "CLIENT"
FAILED, EXHAUSTED, UNIMPLEMENTED = "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"


@dataclass
class Row:
    id: str
    server: str          # orchestrator | generator | refiner | retriever | triton
    method: str          # "Service/Method", or the Triton URL path
    via: str             # json | raw | raw-stream-out | raw-stream-in | http
    payload: object
    code: str            # expected grpc.StatusCode name, "CLIENT", or an HTTP status
    needle: str          # the message must contain this (case-insensitive)


def gen(id, payload, needle, code=INVALID, via="json"):
    return Row(f"generator-{id}", "generator", f"{GEN}/Generate", via, payload, code, needle)


def ref(id, method, payload, needle, code=INVALID, via="json"):
    return Row(f"refiner-{id}", "refiner", f"{REF}/{method}", via, payload, code, needle)


def ret(id, method, payload, needle, code=INVALID, via="json"):
    return Row(f"retriever-{id}", "retriever", f"{RET}/{method}", via, payload, code, needle)


def orc(id, method, payload, needle, code=INVALID, via="json"):
    return Row(f"orchestrator-{id}", "orchestrator", f"{ORC}/{method}", via, payload, code, needle)


def tri(id, body, needle, code="400", path="/v2/models/gemma3/infer"):
    return Row(f"triton-{id}", "triton", path, "http", body, code, needle)


def tensor(name, data, datatype="BYTES", shape=None):
    return {"name": name, "datatype": datatype, "shape": shape or [1, len(data)] if name == "images" else
            shape or [1, 1], "data": data}


def triton_body(messages='[{"role": "user", "content": "hi"}]', images=("",), sampling='{"max_new_tokens": 2}',
                drop=None):
    inputs = [tensor("messages", [messages]), tensor("images", list(images)), tensor("sampling", [sampling])]
    return json.dumps({"inputs": [t for t in inputs if t["name"] != drop]})


P = {"prompt": "a red square"}
CAP = {"target": GOOD_SAMPLING_IMG}
BOMB = png_header_only(20000, 20000)
TALL = png_header_only(1, 50_000_000)
ZERO = png_header_only(0, 0)

ROWS = [
    # ---------------------------------------------------------------- generator
    gen("empty-prompt", {"prompt": ""}, "prompt: must not be empty"),
    gen("blank-prompt", {"prompt": " \t\n "}, "prompt: must not be empty"),
    gen("long-prompt", {"prompt": "a" * 5000}, "prompt: 5000 characters, over the limit of 4096"),
    gen("too-many-tokens", {"prompt": "red cat " * 400}, "tokens, over the limit of"),
    gen("nul-prompt", {"prompt": "a\u0000b"}, "prompt: contains a NUL"),
    gen("long-negative", {**P, "negative_prompt": "n" * 4097}, "negative_prompt: 4097 characters"),
    gen("negative-seed", {**P, "seed": -1}, "seed: -1 is out of range"),
    gen("negative-steps", {**P, "num_inference_steps": -5}, "num_inference_steps: -5 is out of range"),
    gen("huge-steps", {**P, "num_inference_steps": 100000}, "num_inference_steps: 100000 is out of range"),
    gen("negative-guidance", {**P, "guidance_scale": -1}, "guidance_scale: -1 is out of range"),
    gen("nan-guidance", {**P, "guidance_scale": "NaN"}, "guidance_scale: must be a finite number"),
    gen("inf-guidance", {**P, "guidance_scale": "Infinity"}, "guidance_scale: must be a finite number"),
    gen("negative-width", {**P, "width": -64}, "width: -64 is not allowed"),
    gen("huge-width", {**P, "width": 1_000_000}, "width: 1000000 is not allowed"),
    gen("max-int-height", {**P, "height": 2**31 - 1}, "height: 2147483647 is not allowed"),
    gen("odd-width", {**P, "width": 33}, "width: 33 is not allowed; use a multiple"),
    gen("negative-images", {**P, "num_images": -1}, "num_images: -1 is out of range"),
    gen("huge-images", {**P, "num_images": 1000}, "num_images: 1000 is out of range"),
    gen("unknown-format-enum", {**P, "output_format": 7}, "output_format: unknown value 7"),
    gen("quality-101", {**P, "output_format": 2, "jpeg_quality": 101}, "jpeg_quality: 101 is out of range"),
    gen("quality-negative", {**P, "output_format": 2, "jpeg_quality": -3}, "jpeg_quality: -3 is out of range"),
    gen("wrongtype-prompt-number", '{"prompt": 5}', "expecting string", code=CLIENT),
    gen("wrongtype-width-string", '{"prompt": "a", "width": "abc"}', "invalid syntax", code=CLIENT),
    gen("wrongtype-width-float", '{"prompt": "a", "width": 1.5}', "invalid syntax", code=CLIENT),
    gen("int32-overflow", '{"prompt": "a", "width": 99999999999}', "out of range", code=CLIENT),
    gen("unknown-field", '{"prompt": "a", "bogus_field": 1}', "no known field named bogus_field", code=CLIENT),
    gen("unknown-enum-name", '{"prompt": "a", "output_format": "GIF"}', 'does not have value named "GIF"',
        code=CLIENT),
    gen("not-json", '{"prompt": ', "error getting request data", code=CLIENT),
    # the wrong types grpcurl refuses, as raw protobuf: prompt (field 1) sent as a varint
    gen("raw-prompt-as-varint", b"\x08\x05", "prompt: must not be empty", via="raw"),
    gen("raw-garbage", b"\xff\xff\xff\xff", "request: not a valid protobuf message", via="raw"),
    gen("raw-invalid-utf8", b"\x0a\x02\xff\xfe", "request: not a valid protobuf message", via="raw"),
    gen("raw-truncated-field", b"\x0a\x10ab", "request: not a valid protobuf message", via="raw"),
    gen("oversized-message", generator_pb2.GenerateRequest(prompt=BIG), "larger than max", code=EXHAUSTED,
        via="raw"),
    Row("generator-unknown-method", "generator", f"{GEN}/Nope", "raw", b"", UNIMPLEMENTED, "method not found"),
    # ---------------------------------------------------------------- refiner
    ref("caption-no-target", "Caption", {}, "target: required image is missing"),
    ref("caption-empty-bytes", "Caption", {"target": {"data": "", "mime_type": "image/png"}},
        "target: required image is missing"),
    ref("caption-not-image", "Caption", {"target": img(b"hello, I am not a picture")}, "target: not a recognised image"),
    ref("caption-truncated-png", "Caption", {"target": img(truncated_png())}, "target: truncated or corrupt PNG"),
    ref("caption-bomb", "Caption", {"target": img(BOMB)}, "20000x20000 = 400000000 pixels, over the limit"),
    ref("caption-huge-dims", "Caption", {"target": img(TALL)}, "1x50000000 = 50000000 pixels, over the limit"),
    ref("caption-zero-dims", "Caption", {"target": img(ZERO)}, "target:"),
    ref("caption-jpeg-garbage", "Caption", {"target": img(b"\xff\xd8\xff\xe0" + b"\x00" * 40)}, "target:"),
    ref("caption-ref-only", "Caption", {"target": {"ref": "abc.png"}}, "target: image references are not accepted"),
    ref("caption-unknown-style", "Caption", {**CAP, "style": 9}, "style: unknown value 9"),
    ref("temperature-high", "Caption", {**CAP, "sampling": {"temperature": 5}}, "sampling.temperature: 5 is out of range"),
    ref("temperature-nan", "Caption", {**CAP, "sampling": {"temperature": "NaN"}}, "sampling.temperature: must be a finite"),
    ref("top-p-zero", "Caption", {**CAP, "sampling": {"top_p": 0}}, "sampling.top_p: 0 is out of range (0, 1]"),
    ref("tokens-zero", "Caption", {**CAP, "sampling": {"max_new_tokens": 0}}, "sampling.max_new_tokens: 0 is out of range"),
    ref("tokens-huge", "Caption", {**CAP, "sampling": {"max_new_tokens": 1_000_000}},
        "sampling.max_new_tokens: 1000000 is out of range"),
    ref("penalty-low", "Caption", {**CAP, "sampling": {"repetition_penalty": 0.5}},
        "sampling.repetition_penalty: 0.5 is out of range"),
    ref("negative-seed", "Caption", {**CAP, "sampling": {"seed": -7}}, "sampling.seed: -7 is out of range"),
    ref("compare-no-caption", "Compare", {**CAP, "generated": GOOD_SAMPLING_IMG}, "caption: must not be empty"),
    ref("compare-garbage-generated", "Compare", {**CAP, "generated": img(b"\x00" * 64), "caption": "x"},
        "generated: not a recognised image"),
    ref("refine-no-feedback", "Refine", {"caption": "a cat"}, "feedback: must not be empty"),
    ref("refine-long-caption", "Refine", {"caption": "c" * 9000, "feedback": "f"}, "caption: 9000 characters"),
    ref("refine-negative-rank", "Refine", {"caption": "a", "feedback": "b", **CAP, "shown_rank": -1},
        "shown_rank: -1 is out of range"),
    ref("refine-rank-no-target", "Refine", {"caption": "a", "feedback": "b", "shown_rank": 3},
        "shown_rank: only meaningful with a target"),
    ref("critique-nul-caption", "Critique", {**CAP, "caption": "a\u0000"}, "caption: contains a NUL"),
    ref("wrongtype-target-string", "Caption", '{"target": "not-an-object"}', "expecting start of JSON object",
        code=CLIENT),
    ref("raw-garbage", "Caption", b"\x12\xff", "request: not a valid protobuf message", via="raw"),
    ref("oversized-message", "Caption", refiner_pb2.CaptionRequest(target=common_pb2.Image(data=b"\x89" * TWO_MB)),
        "larger than max", code=EXHAUSTED, via="raw"),
    # ---------------------------------------------------------------- retriever
    ret("search-no-collection", "Search", {"text": "a"}, "collection: required"),
    ret("search-unknown-collection", "Search", {"collection": "nope", "text": "a"}, "collection: 'nope' does not exist",
        code=NOT_FOUND),
    ret("search-bad-collection-name", "Search", {"collection": "../../etc", "text": "a"},
        "collection: '../../etc' is not a valid name"),
    ret("search-no-query", "Search", {"collection": "hard"}, "query: one of image, text, vector or fusion"),
    ret("search-negative-topk", "Search", {"collection": "hard", "text": "a", "top_k": -1}, "top_k: -1 is out of range"),
    ret("search-huge-topk", "Search", {"collection": "hard", "text": "a", "top_k": 5000}, "top_k: 5000 is out of range"),
    ret("search-empty-text", "Search", {"collection": "hard", "text": ""}, "text: must not be empty"),
    ret("search-long-text", "Search", {"collection": "hard", "text": "t" * 9000}, "text: 9000 characters"),
    ret("search-garbage-image", "Search", {"collection": "hard", "image": img(b"GIF89a\x00\x00")}, "image:"),
    ret("search-bomb", "Search", {"collection": "hard", "image": img(BOMB)}, "image: image is 20000x20000"),
    ret("search-empty-vector", "Search", {"collection": "hard", "vector": {"values": []}}, "vector.values: empty vector"),
    ret("search-nan-vector", "Search", {"collection": "hard", "vector": {"values": [1, "NaN"]}}, "finite"),
    ret("search-zero-vector", "Search", {"collection": "hard", "vector": {"values": [0, 0, 0]}}, "zero vector"),
    ret("search-wrong-dim", "Search", {"collection": "hard", "vector": {"values": [1, 2, 3]}}, "3 values", code=FAILED),
    ret("search-target-not-id", "Search", {"collection": "hard", "text": "a", "target_id": "abc"},
        "target_id: 'abc' is not a corpus id"),
    ret("search-target-negative", "Search", {"collection": "hard", "text": "a", "target_id": "-1"},
        "target_id: '-1' is not a corpus id"),
    ret("search-target-unknown", "Search", {"collection": "hard", "text": "a", "target_id": "999999"},
        "target_id: 999999 is not in", code=NOT_FOUND),
    ret("search-fusion-negative-weight", "Search",
        {"collection": "hard", "fusion": {"image": GOOD_SAMPLING_IMG, "text": "a", "image_weight": -1}},
        "fusion.image_weight: -1 is out of range"),
    ret("search-fusion-nan-weight", "Search",
        {"collection": "hard", "fusion": {"image": GOOD_SAMPLING_IMG, "text": "a", "text_weight": "NaN"}},
        "fusion.text_weight: nan is out of range"),
    ret("embed-images-too-many", "EmbedImages", {"images": [GOOD_SAMPLING_IMG] * 300}, "images (count): 300 is out"),
    ret("embed-texts-none", "EmbedTexts", {"texts": []}, "texts (count): 0 is out of range [1, 256]"),
    ret("embed-texts-too-many", "EmbedTexts", {"texts": ["a"] * 300}, "texts (count): 300 is out of range"),
    ret("embed-images-truncated", "EmbedImages", {"images": [img(truncated_png())]}, "images[0]: truncated or corrupt"),
    ret("info-unknown-collection", "CollectionInfo", {"collection": "missing-one"}, "'missing-one' does not exist",
        code=NOT_FOUND),
    ret("upsert-empty-stream", "Upsert", [], "collection: the stream was empty", via="raw-stream-in"),
    ret("upsert-too-many-items", "Upsert",
        [retriever_pb2.UpsertRequest(collection="hard", items=[retriever_pb2.UpsertItem(id="1")] * 300)],
        "items (count per message): 300 is out of range", via="raw-stream-in"),
    ret("upsert-garbage-message", "Upsert", [b"\xff\xff"], "request: not a valid protobuf message",
        via="raw-stream-in"),
    ret("wrongtype-topk-bool", "Search", '{"collection": "hard", "text": "a", "top_k": true}', "expecting number",
        code=CLIENT),
    ret("search-vector-too-wide", "Search",
        retriever_pb2.SearchRequest(collection="hard", vector=retriever_pb2.Vector(values=[0.5] * 20_000)),
        "vector.values: 20000 values, over the limit of 16384", via="raw"),
    ret("oversized-message", "Search", retriever_pb2.SearchRequest(collection="hard", text=BIG), "larger than max",
        code=EXHAUSTED, via="raw"),
    # ---------------------------------------------------------------- orchestrator
    orc("create-empty-query", "CreateSession", {"query": ""}, "query: must not be empty"),
    orc("create-long-query", "CreateSession", {"query": "q" * 5000}, "query: 5000 characters"),
    orc("create-unknown-mode", "CreateSession", {"query": "a", "mode": "telepathy"}, "mode: unknown mode 'telepathy'"),
    orc("create-chatir-mode", "CreateSession", {"query": "a", "mode": "chatir"}, "mode:"),
    orc("create-topk-huge", "CreateSession", {"query": "a", "options": {"top_k": 1000}}, "options.top_k: 1000 is out of"),
    orc("create-negative-width", "CreateSession", {"query": "a", "options": {"width": -1}}, "options.width: -1 is out"),
    orc("create-nan-guidance", "CreateSession", {"query": "a", "options": {"guidance_scale": "NaN"}},
        "options.guidance_scale: must be a finite"),
    orc("create-unknown-delivery", "CreateSession", {"query": "a", "options": {"image_delivery": 9}},
        "options.image_delivery: unknown value 9"),
    orc("create-negative-seed", "CreateSession", {"query": "a", "options": {"seed": -1}}, "options.seed: -1 is out"),
    orc("create-unknown-collection", "CreateSession", {"query": "a", "options": {"collection": "nope"}},
        "'nope' does not exist", code=NOT_FOUND),
    # passes the orchestrator's own checks, refused by the generator: the backend's message comes through
    orc("create-width-beyond-generator", "CreateSession", {"query": "a", "options": {"width": 8000}},
        "width: 8000 is not allowed"),
    orc("dialog-steps-beyond-generator", "RunDialog", {"target_id": "1", "options": {"num_inference_steps": 5000}},
        "num_inference_steps: 5000 is out of range"),
    orc("next-unknown-session", "NextRound", {"session_id": "f" * 32, "query": "a"}, "not found", code=NOT_FOUND),
    orc("next-bad-session-id", "NextRound", {"session_id": "../x", "query": "a"}, "session_id:", code=NOT_FOUND),
    orc("next-empty-session-id", "NextRound", {"session_id": "", "feedback": "a"}, "session_id: required"),
    orc("next-no-input", "NextRound", {"session_id": "f" * 32}, "input: set either query"),
    orc("next-unknown-delivery", "NextRound", {"session_id": "f" * 32, "query": "a", "image_delivery": 5},
        "image_delivery: unknown value 5"),
    orc("get-unknown-session", "GetSession", {"session_id": "0" * 32}, "not found", code=NOT_FOUND),
    orc("get-unknown-delivery", "GetSession", {"session_id": "0" * 32, "image_delivery": 7},
        "image_delivery: unknown value 7"),
    orc("image-path-traversal", "GetImage", {"ref": "../../etc/passwd"}, "is not an image reference"),
    orc("image-unknown-ref", "GetImage", {"ref": "a" * 64 + ".png"}, "not found", code=NOT_FOUND),
    orc("dialog-no-target", "RunDialog", {"rounds": 1}, "target_id: required", via="json"),
    orc("dialog-target-not-id", "RunDialog", {"target_id": "abc"}, "target_id: 'abc' is not a corpus id"),
    orc("dialog-target-unknown", "RunDialog", {"target_id": "99999"}, "target_id: '99999' is not in the corpus",
        code=NOT_FOUND),
    orc("dialog-negative-rounds", "RunDialog", {"target_id": "1", "rounds": -1}, "rounds: -1 is out of range"),
    orc("dialog-too-many-rounds", "RunDialog", {"target_id": "1", "rounds": 21}, "rounds: 21 is out of range"),
    orc("dialog-chatir-short", "RunDialog", {"target_id": "1", "mode": "chatir", "rounds": 2, "dialog": ["a"]},
        "dialog: chatir mode needs at least rounds + 1 = 3"),
    orc("dialog-chatir-nul", "RunDialog", {"target_id": "1", "mode": "chatir", "rounds": 0, "dialog": ["a\u0000"]},
        "dialog[0]: contains a NUL"),
    orc("dialog-unknown-delivery", "RunDialog", {"target_id": "1", "options": {"image_delivery": 9}},
        "options.image_delivery: unknown value 9"),
    orc("dialog-topk-negative", "RunDialog", {"target_id": "1", "options": {"top_k": -5}}, "options.top_k: -5"),
    orc("wrongtype-rounds-string", "RunDialog", '{"target_id": "1", "rounds": "many"}', "invalid syntax", code=CLIENT),
    orc("wrongtype-dialog-object", "RunDialog", '{"target_id": "1", "dialog": {"a": 1}}', "dialog", code=CLIENT),
    orc("raw-garbage", "RunDialog", b"\xff\x00\xff", "request: not a valid protobuf message", via="raw-stream-out"),
    # target_id (field 1, a string) sent as a varint: parsed as an unknown field, so target_id is empty
    orc("raw-target-as-varint", "RunDialog", b"\x08\x05", "target_id: required", via="raw-stream-out"),
    orc("oversized-message", "CreateSession", orchestrator_pb2.CreateSessionRequest(query=BIG), "larger than max",
        code=EXHAUSTED, via="raw"),
    # ---------------------------------------------------------------- Triton (HTTP, KServe v2)
    # Triton's own front end answers an unparseable body with 500 (its choice, not ours)
    tri("malformed-json", "{not json", "failed to parse the request JSON buffer", code="500"),
    tri("unknown-model", triton_body(), "unknown model: 'nope'", code="404", path="/v2/models/nope/infer"),
    tri("missing-input", triton_body(drop="sampling"), "expected 3 inputs but got 2"),
    tri("messages-not-json", triton_body(messages="{{nope"), "messages: not valid JSON"),
    tri("messages-empty-list", triton_body(messages="[]"), "messages: expected a non-empty JSON list"),
    tri("sampling-unknown-key", triton_body(sampling='{"warp": 9}'), "sampling: unknown keys"),
    tri("sampling-out-of-range", triton_body(sampling='{"temperature": 101, "max_new_tokens": 2}'),
        "sampling.temperature: 101.0 is out of range [0, 2]"),
    tri("sampling-tokens-zero", triton_body(sampling='{"max_new_tokens": 0}'), "sampling.max_new_tokens: 0 is out"),
    tri("sampling-not-object", triton_body(sampling='[1, 2]'), "sampling: expected a JSON object"),
    tri("image-not-decodable", triton_body(
        messages='[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]',
        images=("bm90IGFuIGltYWdl",)), "images[0]: cannot decode"),
    tri("image-count-mismatch", triton_body(
        messages='[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]'),
        "images: 0 given but the messages have 1 image placeholders"),
]


def _headers(hardened, server):
    return [f"authorization: Bearer {hardened.token}"]      # every genir service requires the token


def send(hardened, row: Row) -> Outcome:
    stack = hardened.stack
    if row.via == "http":
        return via_http(f"http://127.0.0.1:{stack.triton_http}{row.method}", row.payload)
    target = stack.target(row.server)
    if row.via == "json":
        return via_grpcurl(target, row.method, row.payload, headers=_headers(hardened, row.server))
    md = [("authorization", f"Bearer {hardened.token}")]
    streaming = {"raw": "", "raw-stream-out": "response", "raw-stream-in": "request"}[row.via]
    return via_bytes(target, row.method, row.payload, metadata=md, streaming=streaming)


def pids(stack) -> dict[str, int]:
    return {n: s.popen.pid for n, s in stack.services.items()}


@pytest.fixture(scope="module")
def corpus_run(hardened):
    """Pids before the corpus, so the closing checks can tell a restart from a survivor."""
    return {"pids": pids(hardened.stack), "outcomes": {}}


def test_corpus_is_large_and_covers_every_server():
    assert len(ROWS) >= 60
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert {r.server for r in ROWS} == {"orchestrator", "generator", "refiner", "retriever", "triton"}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(hardened, corpus_run, row):
    out = send(hardened, row)
    corpus_run["outcomes"][row.id] = out
    assert out.code == row.code, f"{row.id}: expected {row.code}, got {out.code}: {out.message}"
    assert row.needle.lower() in out.message.lower(), f"{row.id}: {out.message!r} lacks {row.needle!r}"
    leaked = [s for s in hardened.secrets() if s and s in out.message]
    assert not leaked, f"{row.id}: message leaks {leaked}: {out.message!r}"
    for marker in ("Traceback", 'File "', "/work/", "/tmp/", ".py\", line"):
        assert marker not in out.message, f"{row.id}: message leaks {marker!r}: {out.message!r}"


def test_after_corpus_everything_still_serves(hardened, corpus_run):
    stack = hardened.stack
    assert len(corpus_run["outcomes"]) == len(ROWS), "run the whole module: the corpus rows come first"
    for name in ("generator", "refiner", "retriever", "orchestrator"):
        assert health_status(stack.target(name)) == 1, f"{name} is not SERVING after the corpus"
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.triton_http}/v2/models/gemma3/ready", timeout=5) as r:
        assert r.status == 200
    # A normal dialog end to end: caption -> generate -> retrieve for 2 rounds.
    out = via_grpcurl(stack.target("orchestrator"), f"{ORC}/RunDialog",
                      {"target_id": "3", "rounds": 1, "options": {"top_k": 5, "seed": "1"}},
                      headers=[f"authorization: Bearer {hardened.token}"])
    assert out.code == "OK", out.message
    rounds = [json.loads(chunk) for chunk in _json_stream(out.message)]
    assert [r.get("index", 0) for r in rounds] == [0, 1]
    assert [(len(r["hits"]), "target_rank" in r) for r in rounds] == [(5, True), (5, True)], [
        sorted(r) for r in rounds]
    assert pids(stack) == corpus_run["pids"], "a service restarted during the corpus"
    assert all(stack.alive().values()), stack.alive()


def _json_stream(text: str):
    """grpcurl prints one JSON object per streamed message."""
    dec, i, text = json.JSONDecoder(), 0, text.strip()
    while i < len(text):
        obj, end = dec.raw_decode(text, i)
        yield json.dumps(obj)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1

