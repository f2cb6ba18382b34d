"""`genir eval` end to end against the real services (tiny models, generated corpus).

- a single run writes every output; its metrics are exposed while it runs;
- --shard 0/2 + --shard 1/2 merged == the single run (byte-identical summary.json);
- kill -9 mid-run, rerun: identical summary, no dialog lost or written twice;
- --embedded (engine in-process) == through the orchestrator;
- the chatir mode's round-t query is the joined prefix of the real ChatIR dialog;
- report.html opens in headless Chromium with every round's image loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from evaluation.records import load_dialogs
from orchestrator.datasets import chatir_query, load_corpus, load_queries
from testkit.procs import ROOT, free_port, sample_sum, samples, scrape
from testkit.procs import proc_env as _env

LIMIT, ROUNDS = 6, 2
COMMON = ("--limit", LIMIT, "--rounds", ROUNDS, "--seed", 3, "--k", "1,5,10")


@pytest.fixture(scope="module")
def full_run(eval_world, tmp_path_factory):
    """The reference: one uninterrupted run, metrics scraped while it runs."""
    out = tmp_path_factory.mktemp("full")
    mport = free_port()
    cmd = eval_world.eval_cmd(out, *COMMON, "--concurrency", 3, "--export-dataset")
    cmd[cmd.index("--metrics-port") + 1] = str(mport)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:
        try:
            seen.append(scrape(mport))
        except OSError:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-4000:]
    return out, seen, stdout


def _content(out: Path, tids=None) -> dict:
    """What each dialog said and showed: per round (query, feedback, rank, seed, rendering digest)."""
    recs = load_dialogs(out / "dialogs.jsonl")
    return {t: [(r["query"], r["feedback"], r["rank"], r["seed"],
                 hashlib.sha256((out / r["image"]).read_bytes()).hexdigest() if r["image"] else None)
                for r in rec["rounds"]] for t, rec in recs.items() if tids is None or t in tids}


def test_single_run_writes_every_output(full_run):
    out, seen, stdout = full_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_targets"] == LIMIT and summary["mode"] == "genir" and summary["n_rounds"] == ROUNDS + 1
    assert set(summary["hits_at_k"]) == {"1", "5", "10"} and len(summary["hits_at_k"]["10"]) == ROUNDS + 1
    assert summary["seeds"]["base"] == 3
    recs = load_dialogs(out / "dialogs.jsonl")
    assert len(recs) == LIMIT == len((out / "dialogs.jsonl").read_text().splitlines())
    for rec in recs.values():
        assert [r["index"] for r in rec["rounds"]] == list(range(ROUNDS + 1))
        for r in rec["rounds"]:
            assert (out / r["image"]).stat().st_size > 0 and r["query"] and 0 <= r["rank"] < 24
            assert {"generate", "retrieve"} <= set(r["timings"])
        assert all(r["feedback"] for r in rec["rounds"][1:])  # the simulated user's comparison
    for name in ("summary.csv", "hits_at_k.png", "report.html", "run.json"):
        assert (out / name).stat().st_size > 0
    # dataset export
    ds = out / "dataset"
    man = json.loads((ds / "manifest.json").read_text())
    assert man["n_targets"] == LIMIT and man["files"]["generated_images"] == LIMIT * (ROUNDS + 1)
    stem = man["targets"][0]["stem"]
    assert (ds / "captions" / f"{stem}_caption_{ROUNDS}.txt").read_text()
    assert (ds / "generated_images" / f"{stem}_0.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert (ds / "comparisons" / f"{stem}_comparison_0.txt").read_text()
    assert len(json.loads((ds / "dialogues" / f"{stem}_dialogue.json").read_text())["rounds"]) == ROUNDS + 1
    # metrics exposed while running
    assert seen, "the eval job's /metrics endpoint never answered"
    last = seen[-1]
    assert sample_sum(last, "genir_eval_dialogs_total", status="ok") >= 1
    assert sample_sum(last, "genir_eval_dialogs_total", status="failed") == 0
    gauges = samples(last, "genir_eval_hits_at_k")
    assert {(g["k"], g["round"]) for g, _ in gauges} >= {("10", "0"), ("1", str(ROUNDS))}
    assert "Hits@10 round 0" in stdout


def test_shards_merged_equal_the_single_run(eval_world, full_run, tmp_path):
    full, _, _ = full_run
    for i in range(2):
        r = eval_world.run_eval(tmp_path / f"s{i}", *COMMON, "--shard", f"{i}/2", "--concurrency", 2)
        assert r.returncode == 0, r.stderr[-4000:]
    n0 = json.loads((tmp_path / "s0" / "summary.json").read_text())["n_targets"]
    assert n0 == LIMIT // 2
    r = subprocess.run([os.sys.executable, "-m", "genir.cli", "eval", "merge", str(tmp_path / "s0"),
                        str(tmp_path / "s1"), "--out", str(tmp_path / "merged")], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "merged" / "summary.json").read_text() == (full / "summary.json").read_text()
    assert (tmp_path / "merged" / "summary.csv").read_text() == (full / "summary.csv").read_text()
    # not only the numbers: every dialog said and showed the same as in the single run
    assert _content(tmp_path / "s0") | _content(tmp_path / "s1") == _content(full)


def test_kill_9_mid_run_then_rerun_gives_the_same_summary(eval_world, full_run, tmp_path):
    full, _, _ = full_run
    out = tmp_path / "killed"
    proc = subprocess.Popen(eval_world.eval_cmd(out, *COMMON, "--concurrency", 1), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = out / "dialogs.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    before = load_dialogs(log)
    assert 2 <= len(before) < LIMIT
    r = eval_world.run_eval(out, *COMMON, "--concurrency", 2)
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"resuming: {len(before)} of {LIMIT}" in r.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == LIMIT and len({json.loads(x)["target_id"] for x in lines}) == LIMIT
    assert (out / "summary.json").read_text() == (full / "summary.json").read_text()
    # finished dialogs were kept, not redone
    after = load_dialogs(log)
    assert all(after[t] == before[t] for t in before)
    assert _content(out) == _content(full)


def test_embedded_engine_gives_the_same_results(eval_world, full_run, tmp_path):
    full, _, _ = full_run
    st = eval_world.stack
    r = eval_world.run_eval(tmp_path / "emb", *COMMON, "--concurrency", 3, "--embedded",
                            "--generator", st.target("generator"), "--refiner", st.target("refiner"),
                            "--retriever", st.target("retriever"), "--collection", eval_world.collection)
    assert r.returncode == 0, r.stderr[-4000:]
    emb = json.loads((tmp_path / "emb" / "summary.json").read_text())
    ref = json.loads((full / "summary.json").read_text())
    # the backends' model ids were asked for and recorded
    assert emb["models"]["generator"] == "sd3" and emb["models"]["retriever"]
    # otherwise identical (the orchestrator run left the collection to the orchestrator's default)
    emb["settings"].pop("collection"), ref["settings"].pop("collection")
    emb.pop("models"), ref.pop("models")
    assert emb == ref
    assert _content(tmp_path / "emb") == _content(full)


def test_chatir_queries_are_the_real_dialog_prefixes(eval_world, tmp_path):
    out = tmp_path / "chatir"
    r = eval_world.run_eval(out, "--mode", "chatir", "--rounds", 10, "--concurrency", 4,
                            queries=eval_world.chatir_queries)
    assert r.returncode == 0, r.stderr[-4000:]
    queries = load_queries(eval_world.chatir_queries, load_corpus(eval_world.corpus))
    recs = load_dialogs(out / "dialogs.jsonl")
    assert sorted(recs) == sorted(q.target_id for q in queries)
    for q in queries:
        got = [r["query"] for r in recs[q.target_id]["rounds"]]
        assert got == [chatir_query(q.dialog, t) for t in range(11)]
        assert got[3] == ", ".join(q.dialog[:4])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "chatir" and summary["n_targets"] == len(queries) and summary["n_rounds"] == 11


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian chromium is required (apt-get install chromium)"
    return path


def _chromium_cmd(tmp_path: Path, *extra) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=10000", *extra]


def _dom(tmp_path: Path, page: Path) -> str:
    r = subprocess.run(_chromium_cmd(tmp_path, "--dump-dom", page.resolve().as_uri()), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_report_opens_in_chromium_with_every_round_image(full_run, tmp_path):
    full, _, _ = full_run
    dom = _dom(tmp_path, full / "report.html")
    renders = re.findall(r'<img class="render"[^>]*>', dom)
    assert len(renders) == LIMIT * (ROUNDS + 1)
    assert all('data-loaded="1"' in tag for tag in renders), [t for t in renders if 'data-loaded="1"' not in t]
    assert 'data-images-broken="0"' in dom
    # the same check fails when an image is missing (copy the report, drop one rendering)
    broken = tmp_path / "broken"
    shutil.copytree(full, broken)
    victim = sorted((broken / "images").glob("*_1.png"))[0]
    victim.unlink()
    dom2 = _dom(tmp_path, broken / "report.html")
    assert 'data-images-broken="1"' in dom2 and 'data-loaded="0"' in dom2
    # screenshot: what is on screen differs from the same page with no image files at all
    bare = tmp_path / "bare"
    shutil.copytree(full, bare)
    shutil.rmtree(bare / "images")
    (bare / "hits_at_k.png").unlink()
    assert _colours(tmp_path, full / "report.html") > 10 * _colours(tmp_path, bare / "report.html")


def _colours(tmp_path: Path, page: Path) -> int:
    from PIL import Image

    shot = tmp_path / f"shot-{page.parent.name}.png"
    r = subprocess.run(_chromium_cmd(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
                                     page.resolve().as_uri()), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    with Image.open(shot) as im:
        return len(set(im.convert("RGB").getdata()))


def test_backend_down_dialogs_fail_named_then_a_rerun_completes_them(eval_world, tmp_path):
    """Runs last: it stops the refiner and starts it again."""
    st = eval_world.stack
    out = tmp_path / "down"
    args = ("--limit", 2, "--rounds", 1, "--concurrency", 2, "--retries", 1, "--retry-backoff", 0.2)
    st.kill("refiner")
    try:
        r = eval_world.run_eval(out, *args)
    finally:
        st.start(["refiner"])
    assert r.returncode == 1, r.stderr[-3000:]
    queries = json.loads(eval_world.queries.read_text())[:2]
    corpus = json.loads(eval_world.corpus.read_text())
    for q in queries:
        assert f"target {corpus.index(q['img'])}: {q['img']}: UNAVAILABLE" in r.stderr
    assert "rerun the same command" in r.stderr
    assert load_dialogs(out / "dialogs.jsonl") == {}
    assert len(json.loads((out / "run.json").read_text())["failed"]) == 2
    r = eval_world.run_eval(out, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["n_targets"] == 2
