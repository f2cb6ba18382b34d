"""bench_refiner: the refiner service on Triton against direct per-request generate() calls.

Ours: 8 concurrent `Caption` calls (distinct seeds, paper sampling, the same image) to a real
`genir serve refiner` process talking to a real Triton server (`genir serve triton` code path,
tiny Gemma-3, 1 thread), so Triton's dynamic batcher runs them in one generate(). Reference: the
straightforward in-process implementation, the same 8 prompts run one after another with
transformers' own sampling (`torch.manual_seed(seed)` + `generate(do_sample=True)`), same
model, same thread count. Rows stop at end-of-turn at different lengths, so the work differs a
little: ratio = ours completion tokens/s ÷ reference completion tokens/s, median over repeats,
measured interleaved in the same run; target 1.0. Also recorded: one request alone through
the service against one direct call (the service's fixed cost: gRPC twice, queue delay 20 ms).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import record

NAME = "refiner"
TARGET = 1.0
ROOT = Path(__file__).resolve().parents[1]
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


def _png() -> bytes:
    from PIL import Image

    img = Image.new("RGB", (96, 64), (30, 120, 200))
    for x in range(0, 96, 7):
        img.putpixel((x, x % 64), (250, 250, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _direct(model_dir: Path):
    """The reference: per-request generate() with HF sampling, in this process."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from services.refiner import prompts

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()

    def generate(png: bytes, seed: int, tokens: int) -> int:
        p = prompts.caption(png)
        text = processor.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        enc = processor(text=[text], images=[[Image.open(io.BytesIO(png)).convert("RGB")]], return_tensors="pt")
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, max_new_tokens=tokens, **SAMPLING)
        return int(out.shape[1] - enc["input_ids"].shape[1])

    return generate


def run(quick: bool = False) -> dict:
    import grpc

    from genir.tiny_models import build_one
    from genir.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
    from services.refiner.triton_launcher import DEFAULT_REPOSITORY, TritonProcess
    from tests.support.procs import Proc, free_port, proc_env

    tokens, reps, n = (16, 2, 8) if quick else (48, 5, 8)
    model_dir = build_one(ROOT / ".cache" / "tiny-models", "gemma3")
    png = _png()
    work = Path(tempfile.mkdtemp(prefix="bench-refiner-"))  # backend + generated repository
    triton = TritonProcess(DEFAULT_REPOSITORY, work, model=model_dir, http_port=free_port(), grpc_port=free_port(),
                           metrics_port=free_port(), parameters={"num_threads": "1"},
                           log_path=work / "triton.log", env=proc_env())
    port, mport = free_port(), free_port()
    refiner = None
    try:
        triton.start().wait_ready(timeout=300)
        refiner = Proc([sys.executable, "-m", "genir.cli", "serve", "refiner", "--port", port, "--metrics-port",
                        mport, "--triton-url", triton.grpc_url], work / "refiner.log").start()
        refiner.wait_healthy(port, timeout=120)
        stub = refiner_pb2_grpc.RefinerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        direct = _direct(model_dir)

        def call(seed: int) -> int:
            req = refiner_pb2.CaptionRequest(target=common_pb2.Image(data=png), sampling=common_pb2.Sampling(
                seed=seed, max_new_tokens=tokens, **SAMPLING))
            return stub.Caption(req, timeout=120).completion_tokens

        call(1), direct(png, 1, tokens)  # warm-up both paths
        ours, ref, alone_ours, alone_ref = [], [], [], []
        for rep in range(reps):
            seeds = [100 * rep + i for i in range(n)]
            t = time.perf_counter()
            with cf.ThreadPoolExecutor(n) as pool:
                done = sum(pool.map(call, seeds))
            ours.append(done / (time.perf_counter() - t))
            t = time.perf_counter()
            done = sum(direct(png, s, tokens) for s in seeds)
            ref.append(done / (time.perf_counter() - t))
            t = time.perf_counter()
            call(seeds[0])
            alone_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct(png, seeds[0], tokens)
            alone_ref.append(time.perf_counter() - t)
        ratio = statistics.median(ours) / statistics.median(ref)
        details = {"requests": n, "max_new_tokens": tokens, "repeats": reps,
                   "service_tokens_per_s": [round(x, 1) for x in ours],
                   "direct_tokens_per_s": [round(x, 1) for x in ref],
                   "single_request_service_s": round(statistics.median(alone_ours), 4),
                   "single_request_direct_s": round(statistics.median(alone_ref), 4),
                   "model": "tiny gemma3 (random weights), CPU, 1 thread each side"}
        return record(NAME, ratio, TARGET, details)
    finally:
        if refiner is not None:
            refiner.terminate()
        triton.stop()
        shutil.rmtree(work, ignore_errors=True)
