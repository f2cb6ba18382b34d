"""`genir eval` uses the paper's settings by default (issue "GenIR as published", Done when).

`genir eval --mode genir` with no settings flags, through an orchestrator over the real refiner
(Triton) and retriever of the shared stack and a generator service whose pipeline call is a GPU
stand-in with SD3.5-Large's limits (tests/support/gpu_standin.py): the generator must receive 28
steps, guidance 3.5 and 1024x1024 for every rendering, and run.json / summary.json must say so,
with every model id. Overrides are checked with the engine in-process (--embedded).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from testkit.procs import ROOT, Proc, free_port, proc_env, run_captured


@pytest.fixture(scope="module")
def sd35_standin(eval_world, tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    record = root / "received.jsonl"
    port = free_port()
    cmd = ["python", "-m", "genir.cli", "serve", "generator", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", free_port(), "--backend", "tests.support.gpu_standin:SD35LargeStandIn",
           "--model", tiny_models / "sd3", "--max-batch-delay-ms", 1]
    proc = Proc(cmd, root / "generator.log", env=proc_env(GENIR_STANDIN_RECORD=record)).start()
    try:
        proc.wait_healthy(port, timeout=120)
        yield f"127.0.0.1:{port}", record
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def orchestrator_on_standin(eval_world, sd35_standin, tmp_path_factory):
    """A second orchestrator: the stand-in generator, the stack's refiner and retriever."""
    root = tmp_path_factory.mktemp("orch-standin")
    stack, port = eval_world.stack, free_port()
    cmd = ["python", "-m", "genir.cli", "serve", "orchestrator", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", free_port(), "--generator", sd35_standin[0], "--refiner", stack.target("refiner"),
           "--retriever", stack.target("retriever"), "--collection", eval_world.collection, "--db", root / "s.sqlite",
           "--corpus", eval_world.corpus, "--image-root", eval_world.image_root]
    proc = Proc(cmd, root / "orchestrator.log").start()
    try:
        proc.wait_healthy(port, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()


def run_eval(world, out, generator, *extra):
    stack = world.stack
    cmd = world.eval_cmd(out, "--embedded", "--generator", generator, "--refiner", stack.target("refiner"),
                         "--retriever", stack.target("retriever"), "--collection", world.collection,
                         "--limit", 1, "--rounds", 1, "--seed", 5, *extra)
    done = run_captured(cmd)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def received(record, since=0):
    return [json.loads(line) for line in record.read_text().splitlines()[since:]]


def test_genir_eval_without_flags_renders_sd35_at_28_steps_guidance_3_5_1024(eval_world, sd35_standin,
                                                                             orchestrator_on_standin, tmp_path):
    generator, record = sd35_standin
    before = len(record.read_text().splitlines()) if record.exists() else 0
    # no settings flags and no backend addresses: the run learns its models and effective settings
    # from the orchestrator itself (Describe), through the same channel as its dialogs
    cmd = eval_world.eval_cmd(tmp_path / "paper", "--mode", "genir", "--limit", 1, "--rounds", 1,
                              "--collection", eval_world.collection)
    cmd[cmd.index("--orchestrator") + 1] = orchestrator_on_standin
    for flag in ("--generator", "--refiner", "--retriever"):
        if flag in cmd:
            del cmd[cmd.index(flag):cmd.index(flag) + 2]
    done = run_captured(cmd)
    assert done.returncode == 0, done.stderr[-4000:]
    items = received(record, before)
    assert len(items) == 2  # rounds 0 and 1, one rendering each
    for it in items:
        assert (it["steps"], it["guidance"], it["width"], it["height"]) == (28, 3.5, 1024, 1024), it

    run = json.loads((tmp_path / "paper" / "run.json").read_text())
    summary = json.loads((tmp_path / "paper" / "summary.json").read_text())
    for ident in (run["identity"], summary["settings"]):
        render = ident["effective"]["render"]
        assert ident["preset"] == "paper" and ident["effective"]["preset"] == "paper"
        assert (render["num_inference_steps"], render["guidance_scale"], render["width"], render["height"]) == \
            (28, 3.5, 1024, 1024)
        assert render["family"] == "sd3.5" and render["pipeline_class"] == "StableDiffusion3Pipeline"
        refiner = ident["effective"]["refiner"]
        assert refiner["prompt_set"] == "paper" and refiner["top_k"] == 64
        assert refiner["max_new_tokens"] == {"caption": 500, "compare": 400, "refine": 500}
    assert summary["models"]["generator"] == "stable-diffusion-3.5-large (GPU stand-in)"
    assert summary["models"]["refiner"] and summary["models"]["retriever"]
    dialog = json.loads((tmp_path / "paper" / "dialogs.jsonl").read_text().splitlines()[0])
    assert [r["prompt_id"] for r in dialog["rounds"]] == ["paper.caption@1", "paper.refine@1"]


def test_flags_override_the_preset_and_are_recorded(eval_world, sd35_standin, tmp_path):
    generator, record = sd35_standin
    before = len(record.read_text().splitlines()) if record.exists() else 0
    run_eval(eval_world, tmp_path / "flags", generator, "--mode", "genir", "--steps", 4, "--guidance", 1.5,
             "--size", "512x768", "--max-new-tokens", 48, "--prompt-set", "v1")
    items = received(record, before)
    assert items and all((it["steps"], it["guidance"], it["width"], it["height"]) == (4, 1.5, 512, 768)
                         for it in items)
    ident = json.loads((tmp_path / "flags" / "run.json").read_text())["identity"]
    assert ident["effective"]["render"]["num_inference_steps"] == 4 and ident["prompt_set"] == "v1"
    assert set(ident["effective"]["refiner"]["max_new_tokens"].values()) == {48}
    dialog = json.loads((tmp_path / "flags" / "dialogs.jsonl").read_text().splitlines()[0])
    assert [r["prompt_id"] for r in dialog["rounds"]] == ["caption@v1", "refine@v1"]


def test_rescore_scores_a_runs_queries_by_text_search(eval_world, tmp_path):
    """GenIR Text: the same queries, ranked by text->image search (checked against direct searches)."""
    import grpc

    from evaluation import metrics
    from genir.v1 import retriever_pb2, retriever_pb2_grpc
    from tests.unit.test_eval_hybrid import write_run

    queries = {4: ["a red circle", "a red circle on a blue ground"], 6: ["green lines", "two green lines"]}
    run = write_run(tmp_path / "genir", "genir", {t: [50, 40] for t in queries})
    lines = [json.loads(x) for x in (run / "dialogs.jsonl").read_text().splitlines()]
    for rec in lines:
        for rnd, q in zip(rec["rounds"], queries[rec["target_id"]], strict=True):
            rnd["query"] = q
    (run / "dialogs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))

    retriever = eval_world.stack.target("retriever")
    out = tmp_path / "text"
    done = subprocess.run(["python", "-m", "genir.cli", "eval", "rescore", str(run), "--retriever", retriever,
                           "--collection", eval_world.collection, "--out", str(out)], cwd=ROOT, env=proc_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    stub = retriever_pb2_grpc.RetrieverStub(grpc.insecure_channel(retriever))
    direct = {t: [stub.Search(retriever_pb2.SearchRequest(collection=eval_world.collection, text=q, top_k=10,
                                                          target_id=str(t)), timeout=60).target_rank for q in qs]
              for t, qs in queries.items()}
    got = {json.loads(x)["target_id"]: [r["rank"] for r in json.loads(x)["rounds"]]
           for x in (out / "dialogs.jsonl").read_text().splitlines()}
    assert got == direct
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "genir-text" and summary["settings"]["scoring"].startswith("text->image")
    assert summary["hits_at_k"]["10"] == metrics.hits_at_k([direct[4], direct[6]], 10)
