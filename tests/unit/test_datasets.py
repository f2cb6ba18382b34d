import json

import pytest

from orchestrator.datasets import DatasetError, chatir_query, load_corpus, load_queries
from testkit.procs import CHATIR_DIR as CHATIR


def test_real_chatir_files_load():
    corpus = load_corpus(CHATIR / "Search_Space_val_50k.json")
    assert len(corpus) == 50_000 and corpus.path_of(0) == "unlabeled2017/000000000008.jpg"
    queries = load_queries(CHATIR / "VisDial_v1.0_queries_val.json", corpus)
    assert len(queries) == 2064
    assert all(len(q.dialog) == 11 for q in queries)
    assert len({q.target_id for q in queries}) == len(queries)
    q = queries[0]
    assert corpus.path_of(q.target_id) == q.img
    # round t = caption plus t question/answer turns, comma-joined
    assert chatir_query(q.dialog, 0) == q.dialog[0]
    assert chatir_query(q.dialog, 2) == f"{q.dialog[0]}, {q.dialog[1]}, {q.dialog[2]}"
    assert chatir_query(q.dialog, 10).count(", ") >= 10
    # PlugIR's per-round variant: round t's string alone, never joined
    assert [chatir_query(q.dialog, t, per_round=True) for t in range(3)] == list(q.dialog[:3])


def test_genir_style_queries_and_other_path_shapes(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(["61000/61801.png", "3618932839.jpg", "a/b.jpg"]))
    (tmp_path / "q.json").write_text(json.dumps([{"img": "3618932839.jpg", "dialog": []},
                                                 {"img": "61000/61801.png", "dialog": []}]))
    corpus = load_corpus(tmp_path / "c.json")
    qs = load_queries(tmp_path / "q.json", corpus)
    assert [q.target_id for q in qs] == [1, 0] and qs[0].dialog == ()


def test_missing_target_is_named_before_any_work(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(["x/1.jpg"]))
    (tmp_path / "q.json").write_text(json.dumps([{"img": "x/1.jpg", "dialog": []}, {"img": "x/404.jpg", "dialog": []}]))
    with pytest.raises(DatasetError, match="x/404.jpg"):
        load_queries(tmp_path / "q.json", load_corpus(tmp_path / "c.json"))


def test_bad_files(tmp_path):
    (tmp_path / "dup.json").write_text(json.dumps(["a.jpg", "a.jpg"]))
    with pytest.raises(DatasetError, match="twice"):
        load_corpus(tmp_path / "dup.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_corpus(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="not found"):
        load_corpus(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="round 3"):
        chatir_query(["a", "b"], 3)


def test_genir_index_reads_the_corpus_as_the_orchestrator_does(tmp_path, capsys):
    import argparse

    from services.retriever import indexer

    (tmp_path / "dup.json").write_text(json.dumps(["./a.jpg", "a.jpg"]))  # one photo, spelled twice
    parser = argparse.ArgumentParser()
    indexer.add_arguments(parser)
    args = parser.parse_args(["--corpus", str(tmp_path / "dup.json"), "--image-root", str(tmp_path),
                              "--model", str(tmp_path / "no-model"), "--collection", "c"])
    assert indexer.main(args) == 2  # refused before any model loads or any point is written
    assert "'a.jpg' appears twice (ids 0 and 1)" in capsys.readouterr().err
