"""bench_refiner: the refiner service on Triton against the best in-process batched generate().

Ours: 8 concurrent `Caption` calls (distinct seeds, paper sampling, the same image) to a real
`genir serve refiner` process talking to a real Triton server (`genir serve triton` code path,
tiny Gemma-3, 1 thread), so Triton's dynamic batcher runs them in one generate(). Reference: the
same 8 rows in ONE left-padded in-process `generate(do_sample=True)` with transformers' own
sampling (one `torch.manual_seed`), same model, same thread count, the same stop tokens: the
most this machine does with these rows, with no service around it. Rows stop at end-of-turn at
different lengths, so the work differs a little: ratio = ours completion tokens/s / reference
completion tokens/s, median over repeats, measured interleaved in the same run; target 0.9.
Details: the same 8 rows run one after another (the straightforward per-request loop, the
former reference), and one request alone through the service against one direct call (the
service's fixed cost: gRPC twice, Triton's queue delay).
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
TARGET = 0.9
ROOT = Path(__file__).resolve().parents[1]
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}


def _png() -> bytes:
    from testkit.images import png

    return png(96, 64, (30, 120, 200), marks=[((x, x % 64), (250, 250, 0)) for x in range(0, 96, 7)])


def _stop_ids(model, tokenizer) -> list[int]:
    """The stop tokens the Triton model uses: the checkpoint's eos ids and <end_of_turn>."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return sorted(i for i in ids if i is not None)


def _completion_tokens(row: list[int], stop: set[int]) -> int:
    """Tokens produced up to and including the first stop token (as the Triton model counts)."""
    for j, tok in enumerate(row):
        if tok in stop:
            return j + 1
    return len(row)


def _executions(triton) -> int:
    """Triton's execute() calls of the model so far (1 per burst = all 8 rows in one generate())."""
    import urllib.request

    from testkit.procs import sample_sum

    with urllib.request.urlopen(triton.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return int(sample_sum(text, "nv_inference_exec_count_total", model="gemma3"))


def _direct(model_dir: Path):
    """The references, in this process: (sequential(png, seeds, tokens), batched(png, seeds, tokens))."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from services.refiner import prompts

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    stop = _stop_ids(model, processor.tokenizer)
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else stop[0]

    def generate(png: bytes, seeds: list[int], tokens: int) -> int:
        p = prompts.caption(png)
        text = processor.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        image = Image.open(io.BytesIO(png)).convert("RGB")
        enc = processor(text=[text] * len(seeds), images=[[image]] * len(seeds), padding=True, return_tensors="pt")
        torch.manual_seed(seeds[0])
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, max_new_tokens=tokens, eos_token_id=stop,
                                 pad_token_id=pad, **SAMPLING)
        width = enc["input_ids"].shape[1]
        return sum(_completion_tokens(row[width:].tolist(), set(stop)) for row in out)

    def sequential(png: bytes, seeds: list[int], tokens: int) -> int:
        return sum(generate(png, [s], tokens) for s in seeds)

    return sequential, generate


def run(quick: bool = False) -> dict:
    import grpc

    from genir.tiny_models import build_one
    from genir.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
    from services.refiner.triton_repository import DEFAULT_REPOSITORY
    from stack.triton import TritonProcess
    from testkit.procs import Proc, free_port, proc_env

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
        sequential, batched = _direct(model_dir)

        def call(seed: int) -> int:
            req = refiner_pb2.CaptionRequest(target=common_pb2.Image(data=png), sampling=common_pb2.Sampling(
                seed=seed, max_new_tokens=tokens, **SAMPLING))
            return stub.Caption(req, timeout=120).completion_tokens

        call(1), batched(png, list(range(n)), tokens)  # warm-up both paths
        ours, ref, seq, alone_ours, alone_ref, executions = [], [], [], [], [], []
        for rep in range(reps):
            seeds = [100 * rep + i for i in range(n)]
            before = _executions(triton)
            t = time.perf_counter()
            with cf.ThreadPoolExecutor(n) as pool:
                done = sum(pool.map(call, seeds))
            ours.append(done / (time.perf_counter() - t))
            executions.append(_executions(triton) - before)
            t = time.perf_counter()
            done = batched(png, seeds, tokens)
            ref.append(done / (time.perf_counter() - t))
            t = time.perf_counter()
            done = sequential(png, seeds, tokens)
            seq.append(done / (time.perf_counter() - t))
            t = time.perf_counter()
            call(seeds[0])
            alone_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            batched(png, seeds[:1], tokens)
            alone_ref.append(time.perf_counter() - t)
        ratio = statistics.median(ours) / statistics.median(ref)
        details = {"requests": n, "max_new_tokens": tokens, "repeats": reps,
                   "service_tokens_per_s": [round(x, 1) for x in ours],
                   "batched_generate_tokens_per_s": [round(x, 1) for x in ref],
                   "sequential_generate_tokens_per_s": [round(x, 1) for x in seq],
                   "triton_executions_per_burst": executions,
                   "service_vs_sequential": round(statistics.median(ours) / statistics.median(seq), 3),
                   "single_request_service_s": round(statistics.median(alone_ours), 4),
                   "single_request_direct_s": round(statistics.median(alone_ref), 4),
                   "sampling": SAMPLING, "reference": "one left-padded generate(do_sample=True) of the 8 rows",
                   "model": "tiny gemma3 (random weights), CPU, 1 thread each side"}
        return record(NAME, ratio, TARGET, details)
    finally:
        if refiner is not None:
            refiner.terminate()
        triton.stop()
        shutil.rmtree(work, ignore_errors=True)
