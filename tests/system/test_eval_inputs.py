"""`genir eval` and `genir eval merge` on inputs that used to give a wrong or empty result with
exit 0, or a traceback: every one now exits 2 before any dialog with a message naming the problem.
Run folders come from the real EvalRunner (the scripted dialog source of tests/unit stands in for
the orchestrator, which is not what is tested here)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation import cli as eval_cli
from evaluation import merge as merge_cli
from evaluation.runner import EvalConfig, EvalRunner
from orchestrator.datasets import Query
from services.common.paths import corpus_fingerprint
from tests.unit.test_eval_runner import ScriptedDialogSource

PATHS = [f"imgs/{i}.png" for i in range(30)]
FP = corpus_fingerprint(PATHS)


def _eval_args(tmp_path: Path, queries, *extra) -> argparse.Namespace:
    (tmp_path / "corpus.json").write_text(json.dumps(PATHS))
    (tmp_path / "queries.json").write_text(json.dumps(queries))
    p = argparse.ArgumentParser()
    eval_cli.add_arguments(p)
    return p.parse_args(["--queries", str(tmp_path / "queries.json"), "--corpus", str(tmp_path / "corpus.json"),
                         "--out", str(tmp_path / "out"), "--no-progress", "--metrics-port", "-1", *map(str, extra)])


def test_empty_queries_file_is_refused(tmp_path, capsys):
    assert eval_cli.main(_eval_args(tmp_path, [])) == 2
    assert "no targets" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_shard_without_targets_is_refused(tmp_path, capsys):
    q = [{"img": PATHS[0], "dialog": []}]
    assert eval_cli.main(_eval_args(tmp_path, q, "--shard", "1/2")) == 2
    assert "no targets" in capsys.readouterr().err


def test_limit_checks_only_the_chosen_targets(tmp_path):
    q = [{"img": p, "dialog": []} for p in PATHS[:3]] + [{"img": "not/in/corpus.png", "dialog": []}]
    cfg, targets, _ = eval_cli.prepare(_eval_args(tmp_path, q, "--limit", 3))
    assert [t.target_id for t in targets] == [0, 1, 2] and cfg.corpus == FP


def test_shard_checks_only_its_targets(tmp_path):
    q = [{"img": PATHS[0], "dialog": []}, {"img": "gone.png", "dialog": []}]
    _, targets, _ = eval_cli.prepare(_eval_args(tmp_path, q, "--shard", "0/2"))
    assert [t.img for t in targets] == [PATHS[0]]


def test_limit_still_names_a_missing_chosen_target(tmp_path, capsys):
    q = [{"img": "gone.png", "dialog": []}] + [{"img": p, "dialog": []} for p in PATHS[:3]]
    assert eval_cli.main(_eval_args(tmp_path, q, "--limit", 2)) == 2
    assert "'gone.png'" in capsys.readouterr().err


def test_every_dialog_request_carries_the_corpus_fingerprint(tmp_path):
    src = ScriptedDialogSource()
    cfg = EvalConfig(rounds=1, progress=False, corpus=FP)
    asyncio.run(EvalRunner(src, [Query(3, PATHS[3], ())], cfg, tmp_path / "o").run())
    assert [r.corpus_fingerprint for r in src.requests] == [FP]


class _MismatchSource(ScriptedDialogSource):
    """The orchestrator's answer to a client whose corpus list is not the indexed one."""

    async def run_dialog(self, req, timeout):
        from services.common.errors import FailedPrecondition

        self.requests.append(req)
        raise FailedPrecondition("corpus: collection 'c' was indexed from another corpus list than the "
                                 "orchestrator's --corpus: id 0 is 'a' here but 'b' in the collection")
        yield  # pragma: no cover


def test_a_corpus_mismatch_stops_the_run_instead_of_failing_every_dialog(tmp_path):
    from evaluation.runner import EvalError

    src = _MismatchSource()
    targets = [Query(t, PATHS[t], ()) for t in range(6)]
    with pytest.raises(EvalError, match="id 0 is 'a' here but 'b'"):
        asyncio.run(EvalRunner(src, targets, EvalConfig(rounds=1, progress=False, concurrency=1, retries=0), tmp_path).run())
    assert len(src.requests) == 1          # the first answer stops it: no retries, no other targets


# ---------------------------------------------------------------------- merge
def _run_folder(tmp_path: Path, name: str, **cfg_kw) -> Path:
    cfg = replace(EvalConfig(rounds=2, progress=False, corpus=FP), **cfg_kw)
    out = tmp_path / name
    targets = [Query(t, PATHS[t], ()) for t in range(8)]
    result = asyncio.run(EvalRunner(ScriptedDialogSource(), targets, cfg, out).run())
    assert result.ok
    return out


def _merge(*dirs, out: Path, extra=()) -> int:
    p = argparse.ArgumentParser()
    merge_cli.add_arguments(p)
    return merge_cli.main(p.parse_args([*map(str, dirs), "--out", str(out), *extra]))


@pytest.mark.parametrize("other,needle", [
    ({"corpus": corpus_fingerprint(list(reversed(PATHS)))}, "corpus:"),
    ({"rounds": 3}, "rounds:"),
    ({"ks": (1, 3)}, "k:"),
], ids=["other-corpus", "other-rounds", "other-k"])
def test_merge_refuses_incomparable_runs_unless_forced(tmp_path, capsys, other, needle):
    a = _run_folder(tmp_path, "a", mode="genir")
    b = _run_folder(tmp_path, "b", mode="verbal", **other)
    assert _merge(a, b, out=tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert needle in err and "--force" in err and "Traceback" not in err and not (tmp_path / "m").exists()
    assert _merge(a, b, out=tmp_path / "m", extra=["--force"]) == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert any(f.startswith(needle) for f in summary["merge_forced"])


def _tamper(folder: Path, change) -> None:
    lines = (folder / "dialogs.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    change(rec)
    lines[0] = json.dumps(rec)
    (folder / "dialogs.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("change,needle", [
    (lambda r: r.update(rounds=r["rounds"][:1]), "has 1 rounds, its run has 3"),
    (lambda r: r["rounds"][1].update(rank=-4), "round 1 has no valid rank"),
    (lambda r: r["rounds"][2].update(rank="7"), "round 2 has no valid rank"),
    (lambda r: r.pop("rounds"), "has no rounds"),
], ids=["missing-rounds", "negative-rank", "string-rank", "no-rounds"])
def test_merge_rejects_broken_records_cleanly(tmp_path, capsys, change, needle):
    a = _run_folder(tmp_path, "a")
    _tamper(a, change)
    assert _merge(a, out=tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_merge_rejects_a_broken_run_file(tmp_path, capsys):
    a = _run_folder(tmp_path, "a")
    (a / "run.json").write_text('{"identity": {"mode": "genir"}}')
    assert _merge(a, out=tmp_path / "m") == 2
    assert "not a valid run file" in capsys.readouterr().err
