"""The eval runner's bookkeeping (resume, dedupe, retries, failures, sharding, outputs, merge).

The dialogs here come from `ScriptedDialogSource`, a pure-Python test double of the runner's
*dialog source* interface (the thing that turns a RunDialogRequest into Rounds) — no service is
imitated. The same runner against the real services is tested in tests/eval/.
"""

import asyncio
import json

import grpc
import pytest
from PIL import Image

from evaluation import metrics, outputs
from evaluation.cli import add_arguments, finish
from evaluation.cli import main as cli_main
from evaluation.compare import table
from evaluation.merge import merge
from evaluation.records import DIALOGS, load_dialogs
from evaluation.runner import (
    DIALOGS_TOTAL,
    HITS_AT_K,
    EvalConfig,
    EvalError,
    EvalRunner,
    parse_shard,
    select_targets,
)
from genir.v1 import common_pb2, orchestrator_pb2
from orchestrator.datasets import Query
from services.common.errors import NotFound, Unavailable
from testkit.images import png


def _png(seed: int) -> bytes:
    return png(8, 8, ((seed * 37) % 256, (seed * 91) % 256, 120))


class ScriptedDialogSource:
    """Test double of the dialog source: rank of target t at round r = (t * 7 + r * 3) % 23.

    `fail` maps a target id to a list of exceptions raised by its successive attempts.
    """

    def __init__(self, fail=None, stop_after_round=None):
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.requests = []

    @staticmethod
    def rank(t: int, r: int) -> int:
        return (t * 7 + r * 3) % 23

    async def run_dialog(self, req, timeout):
        self.requests.append(req)
        t = int(req.target_id)
        for r in range(req.rounds + 1):
            await asyncio.sleep(0)
            if self.fail.get(t) and r == 1:
                raise self.fail[t].pop(0)
            query = ", ".join(req.dialog[: r + 1]) if req.mode == "chatir" else f"q{t}-{r}"
            img = common_pb2.Image(data=_png(t + r), mime_type="image/png", width=8, height=8)
            yield orchestrator_pb2.Round(
                index=r, query=query, generated=img, feedback=f"fb{r}" if r else "",
                target_rank=self.rank(t, r), seed=req.options.seed * 1000 + t * 100 + r,
                hits=[common_pb2.Hit(id=str(i), score=1 - i / 10, rank=i) for i in range(3)],
                timings=[common_pb2.Timing(stage="generate", seconds=0.01)])

    async def fetch_image(self, ref):
        raise AssertionError("inline images were asked for")

    async def close(self):
        pass


QUERIES = [Query(target_id=t, img=f"imgs/{t}.png", dialog=tuple(f"d{t}.{i}" for i in range(11)))
           for t in range(10, 22)]


def _cfg(**kw):
    base = dict(mode="genir", rounds=3, ks=(1, 5, 10), seed=7, concurrency=3, progress=False, retry_backoff_s=0.0)
    base.update(kw)
    return EvalConfig(**base)


def _run(source, targets, cfg, out):
    return asyncio.run(EvalRunner(source, targets, cfg, out).run())


def _expected_ranks(targets, rounds):
    return [[ScriptedDialogSource.rank(q.target_id, r) for r in range(rounds + 1)]
            for q in sorted(targets, key=lambda q: q.target_id)]


def test_run_writes_one_line_per_dialog_and_the_requests_are_right(tmp_path):
    src = ScriptedDialogSource()
    res = _run(src, QUERIES[:6], _cfg(), tmp_path)
    assert res.ok and res.new == 6
    recs = load_dialogs(tmp_path / DIALOGS)
    assert sorted(recs) == [q.target_id for q in QUERIES[:6]]
    assert len((tmp_path / DIALOGS).read_text().splitlines()) == 6
    r = recs[12]["rounds"]
    assert [x["rank"] for x in r] == [ScriptedDialogSource.rank(12, i) for i in range(4)]
    assert r[2]["query"] == "q12-2" and r[2]["feedback"] == "fb2" and r[0]["timings"] == {"generate": 0.01}
    assert (tmp_path / r[3]["image"]).read_bytes() == _png(15)
    req = src.requests[0]
    assert req.options.image_delivery == common_pb2.IMAGE_DELIVERY_INLINE and req.options.seed == 7
    assert req.rounds == 3 and req.mode == "genir" and list(req.dialog) == []
    summary = outputs.label_summary(res.finished, (1, 5, 10), _cfg().identity(), {})
    assert summary["hits_at_k"]["10"] == [round(x, 4) for x in metrics.hits_at_k(_expected_ranks(QUERIES[:6], 3), 10)]
    assert summary["n_targets"] == 6
    # the live gauges agree with the summary
    for t in range(4):
        assert HITS_AT_K.labels(k="5", round=str(t))._value.get() == pytest.approx(summary["hits_at_k"]["5"][t], abs=1e-3)


def test_chatir_requests_carry_the_dialog(tmp_path):
    src = ScriptedDialogSource()
    res = _run(src, QUERIES[:2], _cfg(mode="chatir", rounds=4), tmp_path)
    assert res.ok
    assert list(src.requests[0].dialog) == list(QUERIES[0].dialog[:5])
    assert not src.requests[0].options.chatir_per_round
    src = ScriptedDialogSource()
    assert _run(src, QUERIES[:1], _cfg(mode="chatir", rounds=2, chatir_per_round=True), tmp_path / "per").ok
    assert src.requests[0].options.chatir_per_round
    assert json.loads((tmp_path / "per" / "run.json").read_text())["identity"]["chatir_per_round"] is True


def test_resume_skips_finished_ignores_a_torn_line_and_matches_a_clean_run(tmp_path):
    clean = _run(ScriptedDialogSource(), QUERIES, _cfg(), tmp_path / "clean")
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "clean" / DIALOGS).read_text().splitlines(keepends=True)
    # two finished dialogs, one of them twice (dedupe), then half a line from a killed writer
    (part / DIALOGS).write_text(lines[0] + lines[1] + lines[0] + lines[2][: len(lines[2]) // 2])
    src = ScriptedDialogSource()
    res = _run(src, QUERIES, _cfg(), part)
    assert res.new == len(QUERIES) - 2 and len(src.requests) == len(QUERIES) - 2
    text = (part / DIALOGS).read_text()
    assert text.endswith("\n") and len(text.splitlines()) == len(QUERIES) + 1  # the duplicate stays, counted once
    assert sorted(load_dialogs(part / DIALOGS)) == sorted(q.target_id for q in QUERIES)
    s1 = outputs.label_summary(clean.finished, (1, 5, 10), _cfg().identity(), {})
    s2 = outputs.label_summary(res.finished, (1, 5, 10), _cfg().identity(), {})
    assert json.dumps(s1, sort_keys=True) == json.dumps(s2, sort_keys=True)


def test_resume_with_other_settings_is_refused(tmp_path):
    _run(ScriptedDialogSource(), QUERIES[:2], _cfg(), tmp_path)
    with pytest.raises(EvalError, match="seed"):
        _run(ScriptedDialogSource(), QUERIES[:2], _cfg(seed=8), tmp_path)


def test_transient_failures_are_retried_and_permanent_ones_reported(tmp_path):
    down = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
    src = ScriptedDialogSource(fail={10: [down, Unavailable("refiner: restarting")],   # ok at the 3rd attempt
                                     11: [NotFound("target_id: 11 not in collection")],  # not retried
                                     12: [down] * 5})                                    # out of retries
    before = DIALOGS_TOTAL.labels(status="failed")._value.get()
    res = _run(src, QUERIES[:4], _cfg(retries=2), tmp_path)
    assert sorted(res.finished) == [10, 13]
    assert set(res.failed) == {11, 12}
    assert "NOT_FOUND" in res.failed[11] and "UNAVAILABLE" in res.failed[12] and "3 attempts" in res.failed[12]
    assert sorted(load_dialogs(tmp_path / DIALOGS)) == [10, 13]
    assert DIALOGS_TOTAL.labels(status="failed")._value.get() - before == 2
    assert sum(1 for r in src.requests if r.target_id == "11") == 1
    # a rerun completes exactly the failed ones
    src2 = ScriptedDialogSource()
    res2 = _run(src2, QUERIES[:4], _cfg(retries=2), tmp_path)
    assert res2.ok and sorted(r.target_id for r in src2.requests) == ["11", "12"]


def test_shards_partition_the_limited_targets():
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(EvalError, match="--shard"):
            parse_shard(bad)
    limited = select_targets(QUERIES, 9)
    parts = [select_targets(QUERIES, 9, (i, 3)) for i in range(3)]
    assert sorted(q.target_id for p in parts for q in p) == [q.target_id for q in limited]
    assert all(len(p) == 3 for p in parts)
    assert select_targets(QUERIES, 9, (1, 3)) == parts[1]  # deterministic


def test_outputs_report_export_merge_compare(tmp_path):
    cfg = _cfg()
    full = tmp_path / "full"
    res = _run(ScriptedDialogSource(), QUERIES, cfg, full)
    summary = finish(full, res, cfg, None, "", 50)
    for name in ("summary.json", "summary.csv", "hits_at_k.png", "report.html"):
        assert (full / name).stat().st_size > 0
    csv_lines = (full / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("label,mode,round,n_targets,hits@1,hits@5,hits@10") and len(csv_lines) == 5
    html = (full / "report.html").read_text()
    assert html.count('class="render"') == len(QUERIES) * 4
    # export layout
    ds = full / "dataset"
    assert (ds / "captions" / "15_caption_3.txt").read_text() == "q15-3"
    assert (ds / "comparisons" / "15_comparison_0.txt").read_text() == "fb1"
    assert not (ds / "comparisons" / "15_comparison_3.txt").exists()
    with Image.open(ds / "generated_images" / "15_2.jpg") as im:
        assert im.format == "JPEG"
    dlg = json.loads((ds / "dialogues" / "15_dialogue.json").read_text())
    assert [r["caption"] for r in dlg["rounds"]] == [f"q15-{r}" for r in range(4)]
    man = json.loads((ds / "manifest.json").read_text())
    assert man["n_targets"] == len(QUERIES) and man["files"]["captions"] == len(QUERIES) * 4

    # shards merged == the single run
    for i in range(2):
        _run(ScriptedDialogSource(), select_targets(QUERIES, None, (i, 2)), cfg, tmp_path / f"s{i}")
    merged = merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert json.dumps(merged, sort_keys=True) == json.dumps(summary, sort_keys=True)
    assert (tmp_path / "merged" / "summary.json").read_text() == (full / "summary.json").read_text()
    mhtml = (tmp_path / "merged" / "report.html").read_text()
    assert mhtml.count('src="../s0/images/') + mhtml.count('src="../s1/images/') == len(QUERIES) * 4

    # another mode on an overlapping target set: both scored on the intersection
    vcfg = _cfg(mode="verbal")
    _run(ScriptedDialogSource(), QUERIES[3:], vcfg, tmp_path / "verbal")
    both = merge([tmp_path / "merged", tmp_path / "verbal"], tmp_path / "both")
    assert both["n_targets"] == len(QUERIES) - 3
    assert both["n_targets_by_mode"] == {"genir": len(QUERIES), "verbal": len(QUERIES) - 3}
    assert set(both["modes"]) == {"genir", "verbal"}
    common = QUERIES[3:]
    assert both["modes"]["genir"]["hits_at_k"]["10"] == [round(x, 4) for x in
                                                          metrics.hits_at_k(_expected_ranks(common, 3), 10)]
    assert (tmp_path / "both" / "runs" / "verbal" / "run.json").exists()
    txt = table(both)
    assert "n_targets = 9 common to all modes (genir 12, verbal 9)" in txt
    assert txt.splitlines()[1].split() == ["round", "genir", "verbal"] and len(txt.splitlines()) == 2 + 4 + 1


def _cli_args(tmp_path, **kw):
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    argv = ["--out", str(tmp_path / "out"), "--metrics-port", "-1", "--no-progress",
            "--orchestrator", "127.0.0.1:1"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


def test_cli_validates_inputs_before_any_work(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps(["a/1.jpg", "a/2.jpg"]))
    (tmp_path / "q.json").write_text(json.dumps([{"img": "a/1.jpg", "dialog": ["x", "y"]},
                                                 {"img": "a/404.jpg", "dialog": []}]))
    args = _cli_args(tmp_path, queries=tmp_path / "q.json", corpus=tmp_path / "c.json")
    assert cli_main(args) == 2
    assert "a/404.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran

    (tmp_path / "q.json").write_text(json.dumps([{"img": "a/1.jpg", "dialog": ["x", "y"]}]))
    args = _cli_args(tmp_path, queries=tmp_path / "q.json", corpus=tmp_path / "c.json", mode="chatir", rounds=3)
    assert cli_main(args) == 2
    assert "chatir mode needs 4 dialog strings" in capsys.readouterr().err
    args = _cli_args(tmp_path, queries=tmp_path / "q.json", corpus=tmp_path / "c.json", shard="2/2")
    assert cli_main(args) == 2 and "--shard" in capsys.readouterr().err
    args = _cli_args(tmp_path, queries=tmp_path / "q.json", corpus=tmp_path / "c.json", image_root=tmp_path)
    assert cli_main(args) == 2 and "'a/1.jpg'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_names_failed_dialogs_and_exits_nonzero(tmp_path, capsys):
    # no orchestrator listens on port 1: every dialog fails UNAVAILABLE after its retries
    (tmp_path / "c.json").write_text(json.dumps(["a/1.jpg", "a/2.jpg"]))
    (tmp_path / "q.json").write_text(json.dumps([{"img": "a/2.jpg", "dialog": []}]))
    args = _cli_args(tmp_path, queries=tmp_path / "q.json", corpus=tmp_path / "c.json", retries=1,
                     retry_backoff=0.01, rounds=1)
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "target 1: a/2.jpg: UNAVAILABLE" in err and "rerun" in err
    assert load_dialogs(tmp_path / "out" / DIALOGS) == {}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert list(run["failed"]) == ["1"]


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path):
    first = EvalRunner(ScriptedDialogSource(), QUERIES[:2], _cfg(), tmp_path)
    tmp_path.mkdir(exist_ok=True)
    held = first._lock()
    try:
        with pytest.raises(EvalError, match="another genir eval is writing"):
            _run(ScriptedDialogSource(), QUERIES[:2], _cfg(), tmp_path)
    finally:
        held.close()
    assert _run(ScriptedDialogSource(), QUERIES[:2], _cfg(), tmp_path).ok


def test_merge_takes_only_the_runs_own_targets_and_warns_about_gaps(tmp_path, capsys):
    _run(ScriptedDialogSource(), QUERIES[:6], _cfg(), tmp_path / "a")
    _run(ScriptedDialogSource(), QUERIES[:3], _cfg(), tmp_path / "a")   # same folder, a smaller run
    s = merge([tmp_path / "a"], tmp_path / "m")
    assert s["n_targets"] == 3
    down = NotFound("target_id: gone")
    _run(ScriptedDialogSource(fail={20: [down]}), QUERIES[8:12], _cfg(), tmp_path / "b")
    import argparse

    from evaluation.merge import main as merge_main

    p = argparse.ArgumentParser()
    from evaluation.merge import add_arguments as merge_args

    merge_args(p)
    assert merge_main(p.parse_args([str(tmp_path / "b"), "--out", str(tmp_path / "m2")])) == 0
    err = capsys.readouterr().err
    assert "1 dialog(s) failed" in err and "3 of its 4 dialogs finished" in err


def test_compare_command_prints_modes_side_by_side_on_common_targets(tmp_path, capsys):
    import argparse

    from evaluation.compare import add_arguments as compare_args
    from evaluation.compare import main as compare_main

    _run(ScriptedDialogSource(), QUERIES[:8], _cfg(), tmp_path / "g")
    _run(ScriptedDialogSource(), QUERIES[2:], _cfg(mode="chatir"), tmp_path / "c")
    p = argparse.ArgumentParser()
    compare_args(p)
    assert compare_main(p.parse_args([str(tmp_path / "g"), str(tmp_path / "c"), "--k", "5"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cumulative Hits@5 (%) per round; n_targets = 6 common to all modes (genir 8, chatir 10)")
    common = QUERIES[2:8]
    want = [round(x, 4) for x in metrics.hits_at_k(_expected_ranks(common, 3), 5)]
    row1 = out[3].split()
    assert row1[0] == "1" and float(row1[1]) == pytest.approx(want[1]) and float(row1[2]) == pytest.approx(want[1])
    assert compare_main(p.parse_args([str(tmp_path / "g"), "--k", "7"])) == 2
    assert "--k 7 was not computed" in capsys.readouterr().err
