"""The orchestrator over the real services: Triton + refiner, generator, retriever (embedded Qdrant),
all started once for the module as real processes by stack.up.Stack, on tiny models.
Calls per mode are checked from the services' own grpc_server_handled_total counters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import grpc
import pytest

import testkit.images
from genir.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.clients import ServiceClients
from orchestrator.datasets import load_corpus
from orchestrator.engine import Engine
from stack.up import Stack
from testkit.procs import free_port, grpcurl, health_status, sample_sum, scrape

pytestmark = pytest.mark.timeout(600)

N_IMAGES = 16
ROUNDS = 2
RETRY_ATTEMPTS = 4
ORCH_FLAGS = ["--retry-attempts", RETRY_ATTEMPTS, "--retry-initial-backoff", "0.2", "--retry-max-backoff", "1",
              "--call-budget", "30", "--session-ttl", "3600"]


def make_corpus(root):
    """Small ChatIR-style corpus of coloured shapes; returns (corpus file, image root)."""
    testkit.images.make_corpus(root / "images", N_IMAGES, seed=0, size=(64, 48), corpus_file=root / "corpus.json")
    return root / "corpus.json", root / "images"


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("orch")
    corpus, images = make_corpus(root)
    s = Stack(tiny_models, root / "stack", corpus=corpus, image_root=images, collection="itest", ports="free",
              orchestrator_args=ORCH_FLAGS, startup_timeout=240)
    s.start()
    yield s
    codes = s.stop()
    assert all(c == 0 for c in codes.values()), (codes, {n: sv.log_tail() for n, sv in s.services.items()})


def orch(stack):
    return orchestrator_pb2_grpc.OrchestratorStub(grpc.insecure_channel(stack.target("orchestrator")))


def call(stack, method, data, extra=None, target=None):
    out = grpcurl(target or stack.target("orchestrator"), f"genir.v1.Orchestrator/{method}", data=data, extra=extra)
    body = json.loads(out.stdout or out.stderr or "{}") if (out.stdout or out.stderr).strip().startswith("{") else {}
    return out.returncode, body, out


def counters(stack) -> dict[str, float]:
    """Successful calls per backend method, read from each service's /metrics."""
    out = {}
    for svc, methods in (("generator", ["Generate"]), ("retriever", ["Search"]),
                         ("refiner", ["Caption", "Compare", "Refine", "Critique"])):
        text = scrape(stack.metrics_port(svc))
        for m in methods:
            out[m] = sample_sum(text, "grpc_server_handled_total", grpc_method=m, grpc_code="OK")
    return out


def exact_searches(stack) -> float:
    return sample_sum(scrape(stack.metrics_port("retriever")), "genir_retriever_search_seconds_count", exact="true")


def run_dialog(stack, mode, rounds=ROUNDS, target_id="5", **kw):
    req = orchestrator_pb2.RunDialogRequest(target_id=target_id, mode=mode, rounds=rounds, **kw)
    return list(orch(stack).RunDialog(req, timeout=120))


# ---------------------------------------------------------------------------- sessions
def test_session_over_grpcurl_survives_restart(stack):
    ref = {"image_delivery": "IMAGE_DELIVERY_REFERENCE", "top_k": 5}
    rc, sess, out = call(stack, "CreateSession", {"query": "a red kite over a green field", "options": ref})
    assert rc == 0, out.stderr
    sid = sess["session_id"]
    assert sess["mode"] == "genir" and len(sess["rounds"]) == 1
    r0 = sess["rounds"][0]
    assert r0["generated"]["ref"] and len(r0["hits"]) == 5 and "target_rank" not in r0
    assert {"generate.inference", "retrieve.embed"} <= {t["stage"] for t in r0["backend_timings"]}

    rc, r1, out = call(stack, "NextRound", {"session_id": sid, "feedback": "the kite should be blue"})
    assert rc == 0, out.stderr
    assert r1["index"] == 1 and r1["feedback"] == "the kite should be blue"
    assert r1["query"].strip() and r1["prompt_id"]          # the refiner merged the feedback into a query
    assert r1["generated"]["ref"] and len(r1["hits"]) == 5
    assert {t["stage"] for t in r1["timings"]} >= {"refine", "generate", "retrieve"}

    rc, img, out = call(stack, "GetImage", {"ref": r1["generated"]["ref"]})
    assert rc == 0 and img["mime_type"] == "image/png" and img["data"]

    rc, got, _ = call(stack, "GetSession", {"session_id": sid})
    assert rc == 0 and [r.get("index", 0) for r in got["rounds"]] == [0, 1]
    assert got["rounds"][1]["query"] == r1["query"]

    # inline delivery on request
    rc, inline, _ = call(stack, "GetSession", {"session_id": sid, "image_delivery": "IMAGE_DELIVERY_INLINE"})
    assert rc == 0 and all(r["generated"]["data"] for r in inline["rounds"])

    assert stack.stop(["orchestrator"]) == {"orchestrator": 0}
    stack.start(["orchestrator"])
    rc, again, out = call(stack, "GetSession", {"session_id": sid})
    assert rc == 0, out.stdout + out.stderr
    assert [r["query"] for r in again["rounds"]] == [r["query"] for r in got["rounds"]]
    rc, r2, out = call(stack, "NextRound", {"session_id": sid, "query": "a blue kite over a beach"})
    assert rc == 0 and r2["index"] == 2 and r2["query"] == "a blue kite over a beach", out.stderr

    rc, deleted, _ = call(stack, "DeleteSession", {"session_id": sid})
    assert rc == 0 and deleted["deleted"] is True
    rc, err, _ = call(stack, "GetSession", {"session_id": sid})
    assert rc == 64 + 5 and "session_id" in err["message"]
    rc, err, _ = call(stack, "NextRound", {"session_id": sid, "query": "x"})
    assert rc == 64 + 5


# ---------------------------------------------------------------------------- modes
# calls per dialog of ROUNDS+1 rounds (the simulated user's caption, compare/critique, refine)
N = ROUNDS
EXPECTED = {
    "genir": dict(Generate=N + 1, Search=N + 1, Caption=1, Compare=N, Refine=N, Critique=0),
    "verbal": dict(Generate=0, Search=N + 1, Caption=1, Compare=0, Refine=N, Critique=N),
    "prediction": dict(Generate=0, Search=N + 1, Caption=1, Compare=N, Refine=N, Critique=0),
    "chatir": dict(Generate=0, Search=N + 1, Caption=0, Compare=0, Refine=0, Critique=0),
    "fusion": dict(Generate=N + 1, Search=N + 1, Caption=1, Compare=N, Refine=N, Critique=0),
    "hybrid": dict(Generate=N + 1, Search=N + 1, Caption=1, Compare=N, Refine=N, Critique=0),  # old name of fusion
}


# the paper prompt set's stages each mode asks for: round 0's caption, later rounds' refine, the compare
PROMPTS = {
    "genir": ("paper.caption@1", "paper.refine@1", "paper.compare"),
    "verbal": ("paper.caption@1", "paper.refine_critique@1", "paper.critique"),
    "prediction": ("paper.caption_retrieval@1", "paper.refine_prediction@1", "paper.compare_retrieval"),
}
PROMPTS["fusion"] = PROMPTS["hybrid"] = PROMPTS["genir"]


def refiner_calls(stack, prompt: str) -> float:
    return sample_sum(scrape(stack.metrics_port("refiner")), "genir_refiner_triton_seconds_count", prompt=prompt)


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_run_dialog_calls_per_mode(stack, mode):
    before = counters(stack)
    middle = PROMPTS[mode][2] if mode in PROMPTS else None
    middle_before = refiner_calls(stack, middle) if middle else 0
    kw = {"dialog": ["a dog on a beach", "is it sunny? yes", "any people? no"]} if mode == "chatir" else {}
    exact_before = exact_searches(stack)
    rounds = run_dialog(stack, mode, **kw)
    after = counters(stack)
    assert exact_searches(stack) - exact_before == after["Search"] - before["Search"] > 0  # all exact
    if mode in PROMPTS:  # the orchestrator asks the refiner for the stages the paper's scripts run
        first, refine, _ = PROMPTS[mode]
        assert [r.prompt_id for r in rounds] == [first] + [refine] * N
        assert refiner_calls(stack, middle) - middle_before == N
    assert [r.index for r in rounds] == list(range(N + 1))
    delta = {k: after[k] - before[k] for k in after}
    assert delta == EXPECTED[mode], delta
    for r in rounds:
        assert r.query.strip() and len(r.hits) == 10 and r.HasField("target_rank")
        assert 0 <= r.target_rank < N_IMAGES
        assert r.seed > 0
    backend = [{t.stage for t in r.backend_timings} for r in rounds]
    assert all({"retrieve.queue", "retrieve.search", "retrieve.rank"} <= b for b in backend), backend
    if mode != "chatir":
        assert any(s.endswith(".triton") for s in backend[0] | backend[1]), backend
    if mode in ("genir", "fusion", "hybrid"):
        assert all(r.generated.mime_type == "image/png" and r.generated.data for r in rounds)
        assert all({"generate.queue", "generate.inference", "generate.encode"} <= b for b in backend), backend
    elif mode == "prediction":  # the top-1 retrieved corpus image is what was shown
        for r in rounds:
            path = stack.image_root / r.hits[0].payload["path"]
            assert r.generated.data == path.read_bytes()
    else:
        assert not any(r.generated.data for r in rounds)
    if mode == "chatir":
        assert rounds[2].query == "a dog on a beach, is it sunny? yes, any people? no"
    else:
        assert rounds[0].prompt_id and all(r.feedback for r in rounds[1:])


def test_a_query_too_long_for_the_generator_is_cut_and_recorded_never_refused(stack):
    words = " ".join(f"red{i % 10} kite" for i in range(600))[:4000].strip()  # far over the tiny T5's 256 tokens
    sess = orch(stack).CreateSession(orchestrator_pb2.CreateSessionRequest(query=words), timeout=120)
    r0 = sess.rounds[0]
    assert r0.query == words and r0.query_cut and r0.generated.data
    assert words.startswith(r0.rendered_query) and 0 < len(r0.rendered_query) < len(words)
    short = orch(stack).CreateSession(orchestrator_pb2.CreateSessionRequest(query="a red kite"), timeout=120)
    assert not short.rounds[0].query_cut and short.rounds[0].rendered_query == ""


def test_next_round_never_reads_the_previous_rendering_back(stack):
    """A person's next round needs the last query, not the last image: with the stored image
    gone, NextRound still works (it used to read the file back and fail NOT_FOUND)."""
    ref = orchestrator_pb2.SessionOptions(image_delivery=common_pb2.IMAGE_DELIVERY_REFERENCE, top_k=3)
    sess = orch(stack).CreateSession(orchestrator_pb2.CreateSessionRequest(query="a green boat", options=ref),
                                     timeout=120)
    first = sess.rounds[0].generated.ref
    (stack.db_path.with_name(stack.db_path.name + ".images") / first).unlink()
    r1 = orch(stack).NextRound(orchestrator_pb2.NextRoundRequest(session_id=sess.session_id,
                                                                 feedback="make it red"), timeout=120)
    assert r1.index == 1 and r1.generated.ref and not r1.generated.data
    got = orch(stack).GetSession(orchestrator_pb2.GetSessionRequest(session_id=sess.session_id), timeout=30)
    assert got.rounds[1].generated.ref == r1.generated.ref      # the reference returned is the stored one


def test_sessions_default_to_the_paper_preset_and_accept_explicit_settings(stack):
    sess = orch(stack).CreateSession(orchestrator_pb2.CreateSessionRequest(query="a red kite"), timeout=120)
    assert sess.options.preset == "paper" and sess.options.prompt_set == "paper"
    opts = orchestrator_pb2.SessionOptions(preset="service", prompt_set="v1", num_inference_steps=2,
                                           guidance_scale=1.0, width=64, height=48, max_new_tokens=16)
    sess = orch(stack).CreateSession(orchestrator_pb2.CreateSessionRequest(query="a red kite", options=opts),
                                     timeout=120)
    assert sess.rounds[0].generated.width == 64 and sess.rounds[0].generated.height == 48
    r1 = orch(stack).NextRound(orchestrator_pb2.NextRoundRequest(session_id=sess.session_id,
                                                                 feedback="make it blue"), timeout=120)
    assert r1.prompt_id == "merge@v1" and sess.options.prompt_set == "v1"


def test_describe_reports_models_and_effective_settings_from_the_backends(stack):
    resp = orch(stack).Describe(orchestrator_pb2.DescribeRequest(mode="genir"), timeout=60)
    assert set(resp.models) == {"generator", "refiner", "retriever"} and all(resp.models.values())
    settings = json.loads(resp.settings_json)
    assert settings["preset"] == "paper" and settings["refiner"]["top_k"] == 64
    assert settings["render"]["num_inference_steps"] > 0 and settings["render"]["width"] > 0
    opts = orchestrator_pb2.SessionOptions(preset="service", num_inference_steps=3, guidance_scale=1.5)
    text = json.loads(orch(stack).Describe(orchestrator_pb2.DescribeRequest(mode="verbal", options=opts),
                                           timeout=60).settings_json)
    assert "render" not in text and text["preset"] == "service"        # verbal renders nothing
    own = json.loads(orch(stack).Describe(orchestrator_pb2.DescribeRequest(mode="genir", options=opts),
                                          timeout=60).settings_json)
    assert (own["render"]["num_inference_steps"], own["render"]["guidance_scale"]) == (3, 1.5)


def test_chatir_per_round_queries_are_not_concatenated(stack):
    dialog = ["a dog on a beach", "is it sunny? yes", "any people? no"]
    opts = orchestrator_pb2.SessionOptions(chatir_per_round=True)
    rounds = run_dialog(stack, "chatir", dialog=dialog, options=opts)
    assert [r.query for r in rounds] == dialog


def test_dialog_replays_identically(stack):
    a = run_dialog(stack, "genir", target_id="3")
    b = run_dialog(stack, "genir", target_id="3")
    assert [(r.query, r.seed, r.target_rank, r.generated.data) for r in a] == \
           [(r.query, r.seed, r.target_rank, r.generated.data) for r in b]
    other = run_dialog(stack, "genir", target_id="4", rounds=0)
    assert other[0].seed != a[0].seed


def test_dialog_by_reference(stack):
    opts = orchestrator_pb2.SessionOptions(image_delivery=common_pb2.IMAGE_DELIVERY_REFERENCE, top_k=3)
    rounds = run_dialog(stack, "genir", rounds=1, options=opts)
    assert all(r.generated.ref and not r.generated.data and len(r.hits) == 3 for r in rounds)
    img = orch(stack).GetImage(orchestrator_pb2.GetImageRequest(ref=rounds[1].generated.ref), timeout=10)
    assert img.data[:8] == b"\x89PNG\r\n\x1a\n"
    text = scrape(stack.metrics_port("orchestrator"))
    for stage in ("caption", "generate", "retrieve", "compare", "refine"):
        assert sample_sum(text, "genir_stage_seconds_count", stage=stage) >= 1, stage
    assert sample_sum(text, "grpc_client_handled_total", grpc_service="genir.v1.Retriever", grpc_code="OK") >= 2


# ---------------------------------------------------------------------------- images cross once
def refiner_received(stack) -> dict[str, float]:
    text = scrape(stack.metrics_port("refiner"))
    return {k: sample_sum(text, "genir_refiner_images_received_total", form=k)
            for k in ("bytes", "reference", "unknown_reference")}


def shown_images(rounds) -> int:
    """Distinct renderings the simulated user compared (every round's but the last)."""
    return len({hashlib.sha256(r.generated.data).digest() for r in rounds[:-1]})


def outcome(rounds) -> list:
    return [(r.query, r.seed, r.target_rank, [h.id for h in r.hits]) for r in rounds]


def test_a_dialogs_target_crosses_to_the_refiner_once(stack):
    """Caption, then Compare + Refine per round: the target goes to the refiner 1 + 2 x ROUNDS
    times, as bytes once and by its sha256 after that; each rendering as bytes once (Compare)."""
    before = refiner_received(stack)
    rounds = run_dialog(stack, "genir", target_id="11")
    after = refiner_received(stack)
    shown = shown_images(rounds)
    assert {k: after[k] - before[k] for k in after} == {
        "bytes": 1 + shown, "reference": 2 * ROUNDS + (ROUNDS - shown), "unknown_reference": 0}


def test_a_restarted_refiner_costs_one_resend_per_image_and_no_cache_changes_nothing(stack):
    first = run_dialog(stack, "genir", target_id="12")
    shown = shown_images(first)
    stack.extra_args["refiner"] = ["--image-cache-mb", "0"]    # keeps nothing: every hash is a miss
    try:
        stack.restart("refiner")
        uncached = run_dialog(stack, "genir", target_id="12")
        assert refiner_received(stack)["reference"] == 0 < refiner_received(stack)["unknown_reference"]
    finally:
        del stack.extra_args["refiner"]
        stack.restart("refiner")
    # The orchestrator still names every image by its hash; the new refiner holds none of them:
    # one miss per image (the target at Caption, each rendering at its Compare), one resend each.
    restarted = run_dialog(stack, "genir", target_id="12")
    assert refiner_received(stack)["unknown_reference"] == 1 + shown
    before = refiner_received(stack)
    warm = run_dialog(stack, "genir", target_id="12")
    after = refiner_received(stack)
    assert {k: after[k] - before[k] for k in after} == {"bytes": 0, "reference": 1 + 3 * ROUNDS,
                                                        "unknown_reference": 0}
    assert outcome(first) == outcome(uncached) == outcome(restarted) == outcome(warm)


def test_a_refiner_restarted_mid_dialog_costs_one_resend_and_changes_no_result(stack):
    """The round engine runs in this process over the stack's services, so its dialog waits between
    rounds and the refiner restarts exactly there; the orchestrator process runs the same dialog
    uninterrupted for comparison."""
    async def interrupted():
        clients = ServiceClients.local(stack.target("generator"), stack.target("refiner"), stack.target("retriever"))
        engine = Engine(clients, corpus=load_corpus(stack.corpus), image_root=stack.image_root,
                        collection=stack.collection)
        rounds = []
        try:
            async for r in engine.run_dialog(orchestrator_pb2.RunDialogRequest(target_id="13", mode="genir",
                                                                               rounds=ROUNDS)):
                rounds.append(r)
                if r.index == 0:
                    await asyncio.to_thread(stack.restart, "refiner")
        finally:
            await engine.close()
        return rounds

    rounds = asyncio.run(interrupted())
    received = refiner_received(stack)            # the new process's: the target was named, unknown there
    assert received["unknown_reference"] == 1 and received["bytes"] == 1 + shown_images(rounds)
    assert outcome(rounds) == outcome(run_dialog(stack, "genir", target_id="13"))


# ---------------------------------------------------------------------------- faults
def client_unavailable(stack) -> float:
    return sample_sum(scrape(stack.metrics_port("orchestrator")), "grpc_client_handled_total",
                      grpc_method="Generate", grpc_code="UNAVAILABLE")


def test_backend_killed_mid_dialog_then_restarted(stack):
    before = client_unavailable(stack)
    stream = orch(stack).RunDialog(orchestrator_pb2.RunDialogRequest(target_id="2", mode="genir", rounds=20),
                                   timeout=60)
    seen = [next(stream)]
    stack.kill("generator")
    with pytest.raises(grpc.RpcError) as e:
        for r in stream:
            seen.append(r)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
    assert "generator" in e.value.details() and f"after {RETRY_ATTEMPTS} attempts" in e.value.details()
    assert len(seen) < 21
    # every attempt reached the (dead) generator and was counted by the orchestrator's client metrics
    assert client_unavailable(stack) - before >= RETRY_ATTEMPTS

    stack.start(["generator"])
    rounds = run_dialog(stack, "genir", rounds=1, target_id="2")
    assert [r.index for r in rounds] == [0, 1] and rounds[1].generated.data


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method,data,code,words", [
    ("CreateSession", {"query": "   "}, 3, ["query", "empty"]),
    ("CreateSession", {"query": "a cat", "mode": "telepathy"}, 3, ["mode", "genir", "verbal", "prediction", "fusion"]),
    ("CreateSession", {"query": "a cat", "mode": "chatir"}, 3, ["mode", "RunDialog"]),
    ("CreateSession", {"query": "a cat", "options": {"top_k": 1000}}, 3, ["options.top_k", "[1, 100]"]),
    ("CreateSession", {"query": "a cat", "options": {"preset": "fast"}}, 3, ["options.preset", "paper", "service"]),
    ("CreateSession", {"query": "a cat", "mode": "fusion", "options": {"image_weight": 0, "text_weight": 0}}, 3,
     ["options.image_weight", "both 0"]),
    ("RunDialog", {"target_id": "1", "rounds": 21}, 3, ["rounds", "[0, 20]"]),
    ("RunDialog", {"target_id": "1", "rounds": -1}, 3, ["rounds", "[0, 20]"]),
    ("RunDialog", {"target_id": "1", "mode": "nope"}, 3, ["mode", "chatir"]),
    ("RunDialog", {"target_id": "999"}, 5, ["target_id", "999", "0..15"]),
    ("RunDialog", {"target_id": "cat.jpg"}, 3, ["target_id"]),
    ("RunDialog", {"target_id": "1", "mode": "chatir", "rounds": 3, "dialog": ["a", "b"]}, 3, ["dialog", "4"]),
    ("NextRound", {"session_id": "0" * 32, "query": "x"}, 5, ["session_id"]),
    ("NextRound", {"session_id": "0" * 32}, 3, ["query", "feedback"]),
    ("GetImage", {"ref": "../../etc/passwd"}, 3, ["ref"]),
    ("Describe", {"mode": "telepathy"}, 3, ["mode", "genir"]),
    ("Describe", {"mode": "genir", "options": {"top_k": 1000}}, 3, ["options.top_k"]),
])
def test_bad_input(stack, method, data, code, words):
    rc, err, out = call(stack, method, data)
    assert rc == 64 + code, (rc, out.stdout, out.stderr)
    assert err["code"] == code and all(w in err["message"] for w in words), err
    assert health_status(stack.target("orchestrator")) == 1   # still serving


def test_auth_token_and_session_ttl(stack, tmp_path):
    ports = dict(stack.ports, orchestrator=(free_port(), free_port()))
    authed = Stack(stack.models, tmp_path / "auth", corpus=stack.corpus, image_root=stack.image_root,
                   collection="itest", ports=ports, services=("orchestrator",), auth_token="s3cret",
                   orchestrator_args=["--session-ttl", "6"])
    with authed:
        target = authed.target("orchestrator")
        rc, err, _ = call(stack, "CreateSession", {"query": "a cat"}, target=target)
        assert rc == 64 + 16 and "authorization" in err["message"]
        rc, err, _ = call(stack, "GetSession", {"session_id": "0" * 32}, target=target,
                          extra=["-H", "authorization: Bearer wrong"])
        assert rc == 64 + 16
        rc, sess, out = call(stack, "CreateSession", {"query": "a cat"}, target=target,
                             extra=["-H", "authorization: Bearer s3cret"])
        assert rc == 0 and sess["rounds"][0]["hits"], out.stderr
        stream = orchestrator_pb2_grpc.OrchestratorStub(grpc.insecure_channel(target)).RunDialog(
            orchestrator_pb2.RunDialogRequest(target_id="1", mode="chatir", dialog=["a"]), timeout=30)
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # health and reflection stay open
        assert health_status(target) == 1
        listed = grpcurl(target, "list")
        assert listed.returncode == 0 and "genir.v1.Orchestrator" in listed.stdout
        # this orchestrator's sessions live 6 s after their last round
        token = ["-H", "authorization: Bearer s3cret"]
        rc, sess, _ = call(stack, "CreateSession", {"query": "a dog"}, target=target, extra=token)
        rc, _, _ = call(stack, "GetSession", {"session_id": sess["session_id"]}, target=target, extra=token)
        assert rc == 0
        time.sleep(6.5)
        rc, err, _ = call(stack, "GetSession", {"session_id": sess["session_id"]}, target=target, extra=token)
        assert rc == 64 + 5 and "expired" in err["message"]
