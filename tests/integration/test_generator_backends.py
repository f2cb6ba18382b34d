"""Generator backends: `--backend` resolution, and a second, non-diffusers backend (the project's
tiny scale-wise autoregressive model, services/generator/scalewise.py) served for real by the
unchanged generator service: micro-batching, per-seed determinism and limits."""

from __future__ import annotations

import concurrent.futures as cf

import grpc
import pytest

from genir.v1 import generator_pb2, generator_pb2_grpc
from services.generator.backends import BackendError, resolve
from services.generator.pipeline import Pipeline
from services.generator.scalewise import ScaleWiseBackend, build_tiny
from testkit.procs import Proc, free_port, proc_env


def test_backend_names_resolve_and_bad_ones_are_named():
    assert resolve("") is Pipeline and resolve("diffusers") is Pipeline
    assert resolve("scalewise") is ScaleWiseBackend
    assert resolve("services.generator.scalewise:ScaleWiseBackend") is ScaleWiseBackend
    with pytest.raises(BackendError, match="no such backend; known: diffusers, scalewise"):
        resolve("infinity")
    with pytest.raises(BackendError, match="cannot import"):
        resolve("no.such.module:Thing")
    with pytest.raises(BackendError, match="lacks load, generate_batch"):
        resolve("services.generator.pipeline:Item")


@pytest.fixture(scope="module")
def scalewise(tmp_path_factory):
    root = tmp_path_factory.mktemp("scalewise")
    model = build_tiny(root / "model")
    port = free_port()
    cmd = ["python", "-m", "genir.cli", "serve", "generator", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", free_port(), "--backend", "scalewise", "--model", model, "--max-batch-delay-ms", 200]
    proc = Proc(cmd, root / "generator.log", env=proc_env()).start()
    try:
        proc.wait_healthy(port, timeout=120)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield generator_pb2_grpc.GeneratorStub(channel)
        channel.close()
    finally:
        proc.terminate()


def gen(stub, prompt="a red kite over a field", seed=1, **kw):
    return stub.Generate(generator_pb2.GenerateRequest(prompt=prompt, seed=seed, **kw), timeout=60)


def test_info_reports_the_backend_and_its_limits(scalewise):
    info = scalewise.Info(generator_pb2.InfoRequest(), timeout=10)
    assert info.backend == "scalewise" and info.pipeline_class == "ScaleWiseAR" and info.model == "model"
    assert (info.default_width, info.size_multiple, info.max_width, info.default_steps) == (256, 16, 1024, 5)
    assert info.max_prompt_tokens == 128 and round(info.default_guidance, 3) == 3.0


def test_same_seed_same_png_alone_or_batched_and_seeds_differ(scalewise):
    alone = gen(scalewise, seed=7, width=64, height=64)
    assert alone.images[0].width == 64 and alone.batch_size == 1
    with cf.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: gen(scalewise, seed=s, width=64, height=64), [7, 8, 9, 10]))
    assert max(r.batch_size for r in together) > 1  # the service batched them into one backend call
    assert together[0].images[0].data == alone.images[0].data
    assert len({r.images[0].data for r in together}) == 4
    assert gen(scalewise, seed=7, width=64, height=64, num_images=2).seeds == [7, 8]


def test_steps_and_guidance_reach_the_model(scalewise):
    base = gen(scalewise, seed=3, width=64, height=64)
    assert gen(scalewise, seed=3, width=64, height=64, num_inference_steps=2).images[0].data != base.images[0].data
    assert gen(scalewise, seed=3, width=64, height=64, guidance_scale=0.0).images[0].data != base.images[0].data


def test_the_service_limits_apply_to_this_backend(scalewise):
    long = " ".join(["kite"] * 400)
    with pytest.raises(grpc.RpcError) as e:
        gen(scalewise, prompt=long)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "128 tokens" in e.value.details()
    cut = gen(scalewise, prompt=long, truncate_prompt=True, width=64, height=64)
    assert cut.prompt_truncated and 0 < len(cut.rendered_prompt) < len(long)
    with pytest.raises(grpc.RpcError) as e:
        gen(scalewise, width=100)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("width")
