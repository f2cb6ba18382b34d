"""The refiner against a real Triton server (the tritonserver binary from nvidia-pytriton) serving
the project's tiny random Gemma-3 from services/refiner/triton, and the real refiner process.

Triton starts once for the module; the last test kills it and restarts it through the CLI, so keep
it last. Tiny weights give random words: tests check plumbing, determinism and batching, not prose.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from genir.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
from services.refiner.triton_repository import DEFAULT_REPOSITORY
from stack.triton import SHM_DIR, TritonProcess
from testkit.images import marked_png as png
from testkit.procs import Proc, free_port, grpcurl, health_status, sample_sum, scrape
from testkit.procs import proc_env as proc_env

TOKENS = 12  # small max_new_tokens keeps every call fast


RED, BLUE = png((200, 30, 30)), png((20, 40, 220), size=(64, 64))


def image(data: bytes) -> common_pb2.Image:
    return common_pb2.Image(data=data, mime_type="image/png")


def sampling(seed=7, **kw) -> common_pb2.Sampling:
    return common_pb2.Sampling(seed=seed, max_new_tokens=kw.pop("max_new_tokens", TOKENS), **kw)


@pytest.fixture(scope="module")
def triton(tiny_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("triton")
    proc = TritonProcess(DEFAULT_REPOSITORY, work, model=tiny_models / "gemma3", http_port=free_port(),
                         grpc_port=free_port(), metrics_port=free_port(), parameters={"num_threads": "1"},
                         log_path=work / "triton.log", env=proc_env())
    proc.start().wait_ready(timeout=240)
    yield proc
    proc.stop()
    assert not list(SHM_DIR.glob(proc.shm_prefix + "*")), "shared-memory regions left behind"


@pytest.fixture(scope="module")
def refiner(triton, tmp_path_factory):
    port, mport = free_port(), free_port()
    proc = Proc([sys.executable, "-m", "genir.cli", "serve", "refiner", "--port", port, "--metrics-port", mport,
                 "--triton-url", triton.grpc_url, "--triton-timeout", "60", "--triton-retry-seconds", "3",
                 "--model-id", "tiny-gemma3"],
                tmp_path_factory.mktemp("refiner") / "refiner.log").start()
    proc.wait_healthy(port, timeout=90)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield refiner_pb2_grpc.RefinerStub(channel), f"127.0.0.1:{port}", mport, proc
    channel.close()
    assert proc.terminate() == 0, proc.log()


def _read_counts(triton) -> tuple[float, float]:
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as r:
        text = r.read().decode()
    # Triton's counters lack the _total suffix; prometheus_client's parser adds it to sample names
    return (sample_sum(text, "nv_inference_count_total", model="gemma3"),
            sample_sum(text, "nv_inference_exec_count_total", model="gemma3"))


def triton_counts(triton) -> tuple[float, float]:
    """(inference count, execution count) once settled: Triton records a request's statistics just
    after its response has gone out, so a read right after a call can miss that call."""
    last = _read_counts(triton)
    for _ in range(50):
        time.sleep(0.2)
        now = _read_counts(triton)
        if now == last:
            return now
        last = now
    return last


def _bytes(name, arr):
    t = tgrpc.InferInput(name, list(arr.shape), "BYTES")
    t.set_data_from_numpy(arr)
    return t


def direct_infer(triton, messages, images, params):
    row = np.empty((1, len(images)), dtype=object)
    for i, data in enumerate(images):
        row[0, i] = data
    client = tgrpc.InferenceServerClient(triton.grpc_url)
    try:
        return client.infer("gemma3", [_bytes("messages", np.array([[json.dumps(messages).encode()]], dtype=object)),
                                       _bytes("images", row),
                                       _bytes("sampling", np.array([[json.dumps(params).encode()]], dtype=object))],
                            client_timeout=60)
    finally:
        client.close()


TWO_IMAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                           {"type": "text", "text": "Compare these two pictures."}]}]


# ---------------------------------------------------------------------- Triton itself
def test_triton_serves_the_repository_with_ragged_dynamic_batching(triton):
    client = tgrpc.InferenceServerClient(triton.grpc_url)
    try:
        assert client.is_server_ready() and client.is_model_ready("gemma3")
        cfg = client.get_model_config("gemma3", as_json=True)["config"]
    finally:
        client.close()
    assert cfg["backend"] == "python" and "dynamic_batching" in cfg
    assert {i["name"]: i.get("allow_ragged_batch", False) for i in cfg["input"]}["images"] is True
    assert cfg["parameters"]["model_path"]["string_value"] == str(triton.model)  # launcher's substitution
    assert {o["name"] for o in cfg["output"]} == {"text", "prompt_tokens", "completion_tokens"}


def test_direct_call_with_two_images_returns_text_and_token_counts(triton):
    result = direct_infer(triton, TWO_IMAGES, [RED, BLUE], {"max_new_tokens": TOKENS, "seed": 3})
    text = result.as_numpy("text")[0, 0].decode()
    prompt_tokens = int(result.as_numpy("prompt_tokens")[0, 0])
    completion = int(result.as_numpy("completion_tokens")[0, 0])
    assert text.strip()
    assert 1 <= completion <= TOKENS
    # the same text without images is shorter by the two images' soft-token blocks
    plain = direct_infer(triton, [{"role": "user", "content": "Compare these two pictures."}], [],
                         {"max_new_tokens": 1, "temperature": 0})
    assert prompt_tokens > int(plain.as_numpy("prompt_tokens")[0, 0]) + 2


def reference(data: bytes) -> bytes:
    return b"sha256:" + hashlib.sha256(data).hexdigest().encode()


def test_a_held_image_can_be_named_by_its_hash_and_an_unknown_one_is_refused(triton):
    params = {"max_new_tokens": TOKENS, "seed": 9}
    fresh = png((1, 2, 3), size=(50, 30))
    with pytest.raises(InferenceServerException) as e:
        direct_infer(triton, TWO_IMAGES, [reference(fresh), BLUE], params)   # never sent
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"images[0]: unknown image sha256:{hashlib.sha256(fresh).hexdigest()}" in e.value.message()
    sent = direct_infer(triton, TWO_IMAGES, [fresh, BLUE], params).as_numpy("text")[0, 0]
    named = direct_infer(triton, TWO_IMAGES, [reference(fresh), reference(BLUE)], params).as_numpy("text")[0, 0]
    assert named == sent


@pytest.mark.parametrize("messages,images,params,needle", [
    (TWO_IMAGES, [RED, b"\x89PNG not really"], {}, "images[1]"),
    (TWO_IMAGES, [RED], {}, "placeholders"),
    ("[{not json", [], {}, "messages"),
    (TWO_IMAGES, [RED, BLUE], {"top_p": 0}, "sampling.top_p"),
    (TWO_IMAGES, [RED, BLUE], {"beam": 2}, "sampling"),
    ([{"role": "user", "content": "zebra " * 5000}], [], {"max_new_tokens": 16}, "positions"),  # too long
])
def test_direct_bad_requests_are_invalid_argument(triton, messages, images, params, needle):
    raw = messages if isinstance(messages, str) else json.dumps(messages)
    row = np.empty((1, len(images)), dtype=object)
    for i, data in enumerate(images):
        row[0, i] = data
    client = tgrpc.InferenceServerClient(triton.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as e:
            client.infer("gemma3", [_bytes("messages", np.array([[raw.encode()]], dtype=object)),
                                    _bytes("images", row),
                                    _bytes("sampling", np.array([[json.dumps(params).encode()]], dtype=object))])
        assert client.is_model_ready("gemma3")  # the bad request did not take the model down
    finally:
        client.close()
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert needle in e.value.message()


# ---------------------------------------------------------------------- the refiner service
def _calls(stub, pset: str) -> dict:
    """One request per prompt of a set, keyed by the prompt id it must report."""
    paper = pset != "v1"
    retrieval = refiner_pb2.CAPTION_STYLE_RETRIEVAL
    calls = {
        ("paper.caption@1" if paper else "caption@v1"): lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(
            target=image(RED), sampling=sampling(), prompt_set=pset), **kw),
        ("paper.caption_retrieval@1" if paper else "caption_retrieval@v1"): lambda **kw: stub.Caption(
            refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(), style=retrieval, prompt_set=pset), **kw),
        ("paper.compare@1" if paper else "compare@v1"): lambda **kw: stub.Compare(refiner_pb2.CompareRequest(
            target=image(RED), generated=image(BLUE), caption="a red square", sampling=sampling(),
            prompt_set=pset), **kw),
        ("paper.refine@1" if paper else "refine@v1"): lambda **kw: stub.Refine(refiner_pb2.RefineRequest(
            caption="a red square", feedback="the square is too small", target=image(RED), sampling=sampling(),
            prompt_set=pset), **kw),
        ("paper.refine_prediction@1" if paper else "refine_prediction@v1"): lambda **kw: stub.Refine(
            refiner_pb2.RefineRequest(caption="a red square", feedback="wrong colour", target=image(RED),
                                      generated=image(BLUE), shown_rank=41, sampling=sampling(), prompt_set=pset), **kw),
        "merge@v1": lambda **kw: stub.Refine(refiner_pb2.RefineRequest(
            caption="a red square", feedback="make it blue", sampling=sampling(), prompt_set=pset), **kw),
        ("paper.critique@1" if paper else "critique@v1"): lambda **kw: stub.Critique(refiner_pb2.CritiqueRequest(
            target=image(RED), caption="a red square", sampling=sampling(), prompt_set=pset), **kw),
    }
    if paper:
        calls["paper.compare_retrieval@1"] = lambda **kw: stub.Compare(refiner_pb2.CompareRequest(
            target=image(RED), generated=image(BLUE), caption="a red square", sampling=sampling(), style=retrieval,
            prompt_set=pset), **kw)
        calls["paper.refine_critique@1"] = lambda **kw: stub.Refine(refiner_pb2.RefineRequest(
            caption="a red square", feedback="say it is small", target=image(RED), sampling=sampling(),
            feedback_source=refiner_pb2.FEEDBACK_SOURCE_CRITIQUE, prompt_set=pset), **kw)
    return calls


@pytest.mark.parametrize("pset", ["", "v1"])
def test_every_rpc_returns_clean_text_with_its_prompt_id(refiner, pset):
    stub = refiner[0]
    calls = _calls(stub, pset)
    for prompt_id, call in calls.items():
        resp = call(timeout=60)
        assert resp.prompt_id == prompt_id
        assert resp.text.strip(), prompt_id
        assert resp.model == "tiny-gemma3" and resp.seed == 7
        assert resp.prompt_tokens > 0 and 1 <= resp.completion_tokens <= TOKENS
        assert {t.stage for t in resp.timings} == {"triton", "total"}
        assert "<end_of_turn>" not in resp.text and "\ufffd" not in resp.text


def test_info_reports_the_model_prompt_sets_and_sampling_defaults(refiner):
    info = refiner[0].Info(refiner_pb2.RefinerInfoRequest(), timeout=10)
    assert info.model == "tiny-gemma3" and info.triton_model == "gemma3"
    assert list(info.prompt_sets) == ["paper", "v1"] and info.default_prompt_set == "paper"
    assert (round(info.temperature, 3), round(info.top_p, 3), info.top_k, round(info.repetition_penalty, 3)) == \
        (0.7, 0.9, 64, 1.1)


def test_same_seed_gives_same_text_and_the_used_seed_is_reported(refiner):
    stub = refiner[0]

    def caption(**kw):
        return stub.Caption(refiner_pb2.CaptionRequest(target=image(BLUE), sampling=common_pb2.Sampling(
            max_new_tokens=TOKENS, temperature=1.0, **kw)), timeout=60)

    first, again, other = caption(seed=1234), caption(seed=1234), caption(seed=99)
    assert first.text == again.text and first.seed == 1234
    assert other.text != first.text  # the seed is honoured, not ignored
    unseeded = caption()
    assert caption(seed=unseeded.seed).text == unseeded.text  # the reported seed reproduces the answer


def test_concurrent_calls_are_batched_by_triton_and_keep_their_seeds(refiner, triton):
    stub = refiner[0]

    def caption(seed):
        return stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(seed=seed)),
                            timeout=60).text

    alone = {seed: caption(seed) for seed in range(11, 19)}
    # 8 calls released together; on a loaded machine a burst can miss Triton's 20 ms window, so
    # up to 3 bursts are tried: batching must show in at least one of them.
    for _burst in range(3):
        start = threading.Barrier(8)

        def together_call(seed, start=start):
            start.wait()
            return caption(seed)

        count0, exec0 = triton_counts(triton)
        with cf.ThreadPoolExecutor(8) as pool:
            together = dict(zip(range(11, 19), pool.map(together_call, range(11, 19)), strict=True))
        count1, exec1 = triton_counts(triton)
        assert count1 - count0 == 8
        assert together == alone  # a seeded request gives the same text whatever it was batched with
        if exec1 - exec0 < count1 - count0:
            break
    else:
        pytest.fail(f"no two of 8 concurrent requests shared a Triton execution in 3 bursts "
                    f"(last: {exec1 - exec0} executions)")


def _code_and_message(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def test_bad_input_is_invalid_argument_naming_the_field(refiner):
    stub = refiner[0]
    cases = [
        (lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(sampling=sampling()), timeout=30), "target"),
        (lambda **kw: stub.Compare(refiner_pb2.CompareRequest(target=image(RED), generated=image(b"GIF89a broken"),
                                                         caption="x"), timeout=30), "generated"),
        (lambda **kw: stub.Compare(refiner_pb2.CompareRequest(target=image(RED), generated=image(BLUE),
                                                         caption="   "), timeout=30), "caption"),
        (lambda **kw: stub.Refine(refiner_pb2.RefineRequest(caption="a dog", feedback=""), timeout=30), "feedback"),
        (lambda **kw: stub.Critique(refiner_pb2.CritiqueRequest(target=image(RED), caption="x",
                                                           sampling=sampling(temperature=2.5)), timeout=30),
         "sampling.temperature"),
        (lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(top_p=0.0)),
                              timeout=30), "sampling.top_p"),
        (lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(max_new_tokens=5000)),
                              timeout=30), "sampling.max_new_tokens"),
        (lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), prompt_set="v9"), timeout=30),
         "prompt_set"),
        (lambda **kw: stub.Refine(refiner_pb2.RefineRequest(caption="a dog", feedback="f", feedback_source=9),
                                  timeout=30), "feedback_source"),
        (lambda **kw: stub.Refine(refiner_pb2.RefineRequest(
            caption="a dog", feedback="f", feedback_source=refiner_pb2.FEEDBACK_SOURCE_CRITIQUE), timeout=30),
         "feedback_source"),
        (lambda **kw: stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(
            repetition_penalty=0.5)), timeout=30), "sampling.repetition_penalty"),
        (lambda **kw: stub.Refine(refiner_pb2.RefineRequest(caption="a", feedback="b", shown_rank=3), timeout=30),
         "shown_rank"),
    ]
    for call, field in cases:
        code, message = _code_and_message(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, code, message)
        assert message.startswith(field), (field, message)
    # Triton's own INVALID_ARGUMENT passes through: a query too long for the model's context
    long_query = "".join("qxzjvkw"[(i * 5) % 7] for i in range(8000))  # ~1 token per character
    code, message = _code_and_message(lambda: stub.Refine(refiner_pb2.RefineRequest(
        caption=long_query, feedback="shorter", sampling=sampling(max_new_tokens=1024)), timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("gemma3:") and "positions" in message
    # the service keeps serving
    assert stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling()), timeout=60).text


def test_grpcurl_sees_the_service_and_its_errors(refiner):
    _, target, _, _ = refiner
    assert "genir.v1.Refiner" in grpcurl(target, "list").stdout
    out = grpcurl(target, "genir.v1.Refiner/Caption", data={"target": {"data": "bm90IGFuIGltYWdl"}})
    assert out.returncode == 64 + 3, (out.stdout, out.stderr)
    assert json.loads(out.stdout or out.stderr)["message"].startswith("target")


def test_metrics_count_tokens_and_calls(refiner):
    stub, _, mport, _ = refiner
    resp = stub.Caption(refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(seed=5)), timeout=60)
    text = scrape(mport)
    assert sample_sum(text, "genir_refiner_tokens_total", kind="prompt") >= resp.prompt_tokens
    assert sample_sum(text, "genir_refiner_tokens_total", kind="completion") >= resp.completion_tokens
    assert sample_sum(text, "grpc_server_handled_total", grpc_method="Caption", grpc_code="OK") >= 1
    assert sample_sum(text, "genir_refiner_triton_seconds_count", prompt="caption") >= 1


def refiner_received(mport) -> dict[str, float]:
    text = scrape(mport)
    return {k: sample_sum(text, "genir_refiner_images_received_total", form=k)
            for k in ("bytes", "reference", "unknown_reference")}


def test_an_image_sent_once_can_be_named_by_its_sha256_and_an_unknown_one_is_refused(refiner):
    stub, _, mport, _ = refiner
    data = png((3, 150, 77), size=(52, 36))
    by_hash = common_pb2.Image(sha256=hashlib.sha256(data).hexdigest())
    before = refiner_received(mport)
    code, message = _code_and_message(lambda **kw: stub.Caption(
        refiner_pb2.CaptionRequest(target=by_hash, sampling=sampling()), timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, message
    assert f"target: unknown image sha256:{by_hash.sha256}" in message and "send the bytes" in message
    sent = stub.Caption(refiner_pb2.CaptionRequest(target=image(data), sampling=sampling(seed=9)), timeout=60)
    named = stub.Caption(refiner_pb2.CaptionRequest(target=by_hash, sampling=sampling(seed=9)), timeout=60)
    assert named.text == sent.text                     # the same image, the same seed: the same answer
    after = refiner_received(mport)
    assert {k: after[k] - before[k] for k in after} == {"bytes": 1, "reference": 1, "unknown_reference": 1}


# ---------------------------------------------------------------------- keep last: kills Triton
def model_counts(triton) -> dict[str, float]:
    """The model's image counters on Triton's metrics port, once they stop moving."""
    def read():
        with urllib.request.urlopen(triton.metrics_url, timeout=5) as r:
            text = r.read().decode()
        counts = {k: sample_sum(text, "genir_gemma3_image_cache_total", result=k) for k in ("hit", "miss")}
        counts.update({k: sample_sum(text, "genir_gemma3_images_received_total", form=k)
                       for k in ("bytes", "reference", "unknown_reference")})
        counts.update({f"tower_{k}": sample_sum(text, "genir_gemma3_vision_features_total", result=k)
                       for k in ("hit", "miss")})
        return counts

    last = read()
    for _ in range(20):
        time.sleep(0.1)
        now = read()
        if now == last:
            return now
        last = now
    return last


def refiner_sent(mport) -> dict[str, float]:
    text = scrape(mport)
    return {k: sample_sum(text, "genir_refiner_triton_images_total", form=k) for k in ("bytes", "reference")}


def test_a_dialogs_target_is_decoded_once_and_sent_once(refiner, triton):
    """Caption, then two compare + refine rounds: the target goes to Triton five times, as bytes
    once and by its hash after that, and is decoded and run through the vision tower once; each
    rendering once. Counted by the model itself on Triton's metrics port and by the refiner's client."""
    stub, _, mport, _ = refiner
    target, shown = image(png((11, 222, 33), size=(60, 44))), [image(png((90, 90, 250 - i))) for i in range(2)]
    before, sent_before = model_counts(triton), refiner_sent(mport)
    caption = stub.Caption(refiner_pb2.CaptionRequest(target=target, sampling=sampling())).text or "x"
    for gen in shown:
        fb = stub.Compare(refiner_pb2.CompareRequest(target=target, generated=gen, caption=caption,
                                                     sampling=sampling())).text or "y"
        caption = stub.Refine(refiner_pb2.RefineRequest(caption=caption, feedback=fb, target=target,
                                                        sampling=sampling())).text or "x"
    after, sent_after = model_counts(triton), refiner_sent(mport)
    delta = {k: after[k] - before[k] for k in after}
    assert delta["miss"] == 3          # the target and two renderings, decoded once each
    assert delta["hit"] == 4           # the target's four later trips
    assert (delta["bytes"], delta["reference"], delta["unknown_reference"]) == (3, 4, 0)
    assert (delta["tower_miss"], delta["tower_hit"]) == (3, 4)   # the vision tower, too, once per image
    assert {k: sent_after[k] - sent_before[k] for k in sent_after} == {"bytes": 3, "reference": 4}


def test_triton_killed_gives_unavailable_then_recovers_after_restart(refiner, triton, tmp_path):
    stub, target, _, _ = refiner
    request = refiner_pb2.CaptionRequest(target=image(RED), sampling=sampling(seed=21))
    before = stub.Caption(request, timeout=60).text

    triton.kill()  # SIGKILL: no drain, no goodbye
    assert not list(SHM_DIR.glob(triton.shm_prefix + "*"))  # the launcher removed the dead run's regions
    code, message = _code_and_message(lambda **kw: stub.Caption(request, timeout=30))
    assert code == grpc.StatusCode.UNAVAILABLE and "Triton" in message and triton.grpc_url in message
    # health follows Triton: NOT_SERVING within a few health checks (every 2 s), calls fail clearly
    deadline = time.monotonic() + 15
    while health_status(target) != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health_status(target) == 2

    # restart on the same ports through the CLI (`genir serve triton`), as an operator would
    cli = Proc([sys.executable, "-m", "genir.cli", "serve", "triton", "--model", triton.model,
                "--workdir", tmp_path / "work", "--http-port", triton.http_port, "--grpc-port", triton.grpc_port,
                "--metrics-port", triton.metrics_port, "--num-threads", "1", "--ready-timeout", "240",
                "--parameter", "batch_invariant=true"],
               tmp_path / "cli.log").start()
    try:
        _wait_http_ready(cli, triton)
        client = tgrpc.InferenceServerClient(triton.grpc_url)
        params = client.get_model_config("gemma3", as_json=True)["config"]["parameters"]
        client.close()
        assert params["batch_invariant"]["string_value"] == "true" and params["num_threads"]["string_value"] == "1"
        assert stub.Caption(request, timeout=60).text == before  # same seed, same text, new server
        # the refiner named the image by its hash; the new server did not hold it; the bytes followed
        counts = model_counts(triton)
        assert (counts["unknown_reference"], counts["bytes"], counts["reference"]) == (1, 1, 0)
        # and the dialog goes on by reference again
        stub.Compare(refiner_pb2.CompareRequest(target=image(RED), generated=image(RED), caption="a red square",
                                                sampling=sampling()), timeout=60)
        assert model_counts(triton)["reference"] == 2
        deadline = time.monotonic() + 15
        while health_status(target) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_status(target) == 1                         # and SERVING again
    finally:
        assert cli.terminate(timeout=60) == 0, cli.log()  # SIGTERM is forwarded; clean exit
    prefix = re.search(r"shm-region-prefix-name=(\S+)", cli.log(tail=100_000)).group(1)
    assert not list(Path(SHM_DIR).glob(prefix + "*"))


def _wait_http_ready(cli: Proc, triton: TritonProcess, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert cli.alive(), cli.log()
        if triton.is_ready():
            return
        time.sleep(0.25)
    cli.kill()
    raise TimeoutError(cli.log())
