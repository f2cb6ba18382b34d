"""The generator as a real `genir serve generator` process on the tiny SD3.5-shaped pipeline,
exercised with the real grpcurl binary and gRPC clients."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from PIL import Image

from genir.v1 import generator_pb2, generator_pb2_grpc
from testkit.procs import Proc, free_port, grpcurl, health_status, sample_sum, scrape

GENERATE = "genir.v1.Generator/Generate"


def start_server(model_dir, log_dir, *flags) -> tuple[Proc, str, int]:
    port, mport = free_port(), free_port()
    proc = Proc([sys.executable, "-m", "genir.cli", "serve", "generator", "--model", model_dir, "--port", port,
                 "--metrics-port", mport, *flags], log_dir / "generator.log").start()
    proc.wait_healthy(port, timeout=120)
    return proc, f"127.0.0.1:{port}", mport


@pytest.fixture(scope="module")
def gen(tiny_models, tmp_path_factory):
    """Batching server: up to 8 images per call, waiting up to 100 ms for a batch to fill."""
    proc, target, mport = start_server(tiny_models / "sd3", tmp_path_factory.mktemp("gen"),
                                       "--max-batch-size", "8", "--max-batch-delay-ms", "100")
    yield target, mport
    assert proc.terminate() == 0, proc.log()


@pytest.fixture(scope="module")
def narrow(tiny_models, tmp_path_factory):
    """One image per call and a queue of 2: easy to overload."""
    proc, target, mport = start_server(tiny_models / "sd3", tmp_path_factory.mktemp("narrow"),
                                       "--max-batch-size", "1", "--max-queue", "2", "--max-batch-delay-ms", "0")
    yield target, mport
    assert proc.terminate() == 0, proc.log()


def request(prompt: str, seed: int, size: int = 32, steps: int = 2, **kw) -> generator_pb2.GenerateRequest:
    return generator_pb2.GenerateRequest(prompt=prompt, seed=seed, width=size, height=size,
                                         num_inference_steps=steps, guidance_scale=5.0, **kw)


# Requests that keep the single worker busy for a second or more on the tiny model.
BLOCKER = dict(size=128, steps=100, num_images=1)
LONG_BLOCKER = dict(size=128, steps=100, num_images=4)


def call_all(target: str, reqs, timeout: float = 120.0) -> list:
    """Send `reqs` concurrently; each entry is a GenerateResponse or the grpc.RpcError it raised."""
    with grpc.insecure_channel(target) as ch:
        stub = generator_pb2_grpc.GeneratorStub(ch)
        futures = [stub.Generate.future(r, timeout=timeout) for r in reqs]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except grpc.RpcError as e:
                out.append(e)
        return out


def call_one(target: str, req, timeout: float = 120.0):
    return call_all(target, [req], timeout)[0]


def test_grpcurl_generate_returns_a_png_of_the_requested_size(gen):
    target, _ = gen
    data = {"prompt": "a red kite over a beach", "seed": 7, "width": 48, "height": 32, "num_inference_steps": 2}
    out = grpcurl(target, GENERATE, data=data)
    assert out.returncode == 0, out.stderr
    resp = json.loads(out.stdout)
    (img,) = resp["images"]
    pic = Image.open(io.BytesIO(base64.b64decode(img["data"])))
    pic.load()
    assert pic.format == "PNG" and pic.size == (48, 32) and img["mime_type"] == "image/png"
    assert (resp["width"], resp["height"], resp["seeds"], resp["model"]) == (48, 32, ["7"], "sd3")
    assert [t["stage"] for t in resp["timings"]] == ["queue", "inference", "encode"]
    assert resp["batch_size"] >= 1
    again = json.loads(grpcurl(target, GENERATE, data=data).stdout)
    assert again["images"][0]["data"] == img["data"]  # same request, same bytes

    jpeg = json.loads(grpcurl(target, GENERATE, data={**data, "output_format": "OUTPUT_FORMAT_JPEG",
                                                      "jpeg_quality": 80, "num_images": 2}).stdout)
    assert len(jpeg["images"]) == 2 and jpeg["seeds"] == ["7", "8"]
    for im in jpeg["images"]:
        pic = Image.open(io.BytesIO(base64.b64decode(im["data"])))
        assert pic.format == "JPEG" and pic.size == (48, 32) and im["mime_type"] == "image/jpeg"


def test_truncate_prompt_renders_the_head_of_an_overlong_prompt(gen):
    target, _ = gen
    long = " ".join(f"dog{i % 7}" for i in range(600))
    data = {"prompt": long, "seed": 3, "width": 32, "height": 32, "num_inference_steps": 2}
    refused = grpcurl(target, GENERATE, data=data)
    assert refused.returncode == 64 + 3 and "truncate_prompt" in refused.stdout + refused.stderr
    resp = json.loads(grpcurl(target, GENERATE, data={**data, "truncate_prompt": True}).stdout)
    assert resp["prompt_truncated"] and long.startswith(resp["rendered_prompt"])
    assert len(resp["rendered_prompt"]) < len(long) and len(resp["images"]) == 1
    head = json.loads(grpcurl(target, GENERATE, data={**data, "prompt": resp["rendered_prompt"]}).stdout)
    assert head["images"][0]["data"] == resp["images"][0]["data"]  # the cut prompt is what was rendered


def test_info_reports_model_limits(gen):
    target, _ = gen
    out = grpcurl(target, "genir.v1.Generator/Info", data={})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["model"] == "sd3" and info["pipeline_class"] == "StableDiffusion3Pipeline"
    assert info["size_multiple"] == 16 and info["max_prompt_tokens"] == 256
    assert info["default_width"] == 64 and info["max_width"] == 512 and info["max_batch_size"] == 8
    assert info["device"] == "cpu" and info["dtype"] == "float32"


def test_concurrent_requests_are_batched_and_equal_sequential_ones(gen):
    target, mport = gen
    before = scrape(mport)
    reqs = [request(f"a watercolor of a harbour, take {i}", seed=1000 + i) for i in range(8)]
    together = call_all(target, reqs)
    mid = scrape(mport)
    alone = [call_one(target, r) for r in reqs]
    for r in together + alone:
        assert isinstance(r, generator_pb2.GenerateResponse), r
    assert [t.images[0].data for t in together] == [a.images[0].data for a in alone]
    assert len({t.images[0].data for t in together}) == 8
    assert max(t.batch_size for t in together) > 1
    assert {a.batch_size for a in alone} == {1}
    # the histogram saw the batched calls: mean batch size of those calls above 1
    def delta(name):
        return sample_sum(mid, name) - sample_sum(before, name)

    calls, images = delta("genir_generator_batch_size_count"), delta("genir_generator_batch_size_sum")
    assert images == 8 and 1 <= calls < 8
    assert delta("genir_generator_images_total") == 8
    assert delta("genir_generator_queue_seconds_count") == 8
    assert delta("genir_generator_inference_seconds_count") == calls


LONG = "dog " * 300  # > 256 T5 tokens
BAD = [
    ({"prompt": ""}, "prompt", None),
    ({"prompt": "   "}, "prompt", None),
    ({"prompt": "x" * 5000}, "prompt", "4096"),
    ({"prompt": LONG}, "prompt", "limit of 256 tokens"),
    ({"prompt": "ok", "negative_prompt": LONG}, "negative_prompt", "limit of 256 tokens"),
    ({"prompt": "ok", "width": 50}, "width", "multiple of 16 in [16, 512]"),
    ({"prompt": "ok", "height": 1024}, "height", "[16, 512]"),
    ({"prompt": "ok", "num_inference_steps": 101}, "num_inference_steps", "[1, 100]"),
    ({"prompt": "ok", "guidance_scale": 21}, "guidance_scale", "[0, 20]"),
    ({"prompt": "ok", "num_images": 5}, "num_images", "[1, 4]"),
    ({"prompt": "ok", "output_format": 7}, "output_format", "OUTPUT_FORMAT_PNG"),
    ({"prompt": "ok", "seed": -3}, "seed", "[0, "),
    ({"prompt": "ok", "jpeg_quality": 500}, "jpeg_quality", "[1, 100]"),
]


def test_every_bad_input_is_invalid_argument_naming_the_field(gen):
    target, _ = gen
    for data, field, detail in BAD:
        out = grpcurl(target, GENERATE, data=data)
        assert out.returncode == 64 + 3, (data, out.returncode, out.stdout, out.stderr)
        err = json.loads(out.stdout or out.stderr)
        assert err["code"] == 3 and err["message"].startswith(f"{field}:"), (data, err)
        assert detail is None or detail in err["message"], (data, err)
    assert health_status(target) == 1  # SERVING
    ok = grpcurl(target, GENERATE, data={"prompt": "still fine", "seed": 1, "width": 32, "height": 32,
                                         "num_inference_steps": 2})
    assert ok.returncode == 0, ok.stderr


def test_overload_beyond_max_queue_is_refused_clearly_and_the_rest_succeed(narrow):
    target, mport = narrow
    before = scrape(mport)
    results: list = []
    blocker = threading.Thread(target=lambda: results.append(call_one(target, request("busy", 1, **BLOCKER))))
    blocker.start()
    time.sleep(0.5)  # the blocker is in the pipeline now; the queue is empty
    burst = call_all(target, [request(f"burst {i}", 10 + i, steps=2) for i in range(10)])
    blocker.join(120)
    everything = results + burst
    ok = [r for r in everything if isinstance(r, generator_pb2.GenerateResponse)]
    refused = [r for r in everything if isinstance(r, grpc.RpcError)]
    assert len(ok) + len(refused) == 11
    codes = [(r.code(), r.details()) for r in refused]
    assert {c for c, _ in codes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert all("queue is full" in r.details() and "--max-queue 2" in r.details() for r in refused)
    assert len(refused) >= 1 and len(ok) >= 3  # blocker + the two queued ones at least
    assert all(len(r.images) == len(r.seeds) >= 1 and r.images[0].data for r in ok)
    after = scrape(mport)
    assert sample_sum(after, "genir_generator_dropped_total", reason="queue_full") - \
        sample_sum(before, "genir_generator_dropped_total", reason="queue_full") == len(refused)
    assert health_status(target) == 1


def test_queued_request_past_its_deadline_is_dropped_not_computed(narrow):
    target, mport = narrow
    before = scrape(mport)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(call_one, target, request("busy", 2, **LONG_BLOCKER))
        time.sleep(0.5)
        late = call_one(target, request("too late", 3, steps=2), timeout=0.5)
        assert isinstance(late, grpc.RpcError) and late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        done = busy.result(120)
    assert isinstance(done, generator_pb2.GenerateResponse) and len(done.images) == 4
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(mport)
        dropped = sample_sum(after, "genir_generator_dropped_total", reason="deadline") - \
            sample_sum(before, "genir_generator_dropped_total", reason="deadline")
        if dropped:
            break
        time.sleep(0.1)
    assert dropped == 1
    # only the blocker's 4 images were computed; the late request never reached the pipeline
    assert sample_sum(after, "genir_generator_images_total") - sample_sum(before, "genir_generator_images_total") == 4


def test_a_folder_without_a_pipeline_fails_start_up_clearly(tmp_path):
    port = free_port()
    proc = Proc([sys.executable, "-m", "genir.cli", "serve", "generator", "--model", tmp_path, "--port", port,
                 "--metrics-port", "-1"], tmp_path / "generator.log").start()
    try:
        code = proc.popen.wait(120)
    finally:
        proc.kill()
    assert code == 1
    assert "model_index.json" in proc.log()
