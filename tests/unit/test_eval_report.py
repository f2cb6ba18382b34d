"""report.html and hits_at_k.png as people read them: 1-based ranks, every hit by path, the models
in the title, no banner when all is well, and plot lines that stay visible when curves coincide."""

from __future__ import annotations

from PIL import Image

from evaluation import outputs
from evaluation.report import write_report

MODELS = {"generator": "sd3-medium", "refiner": "gemma-3-4b-it", "retriever": "blip-itm-base-coco"}


def record(tid: int, ranks: list[int]) -> dict:
    rounds = []
    for i, rank in enumerate(ranks):
        hits = [{"id": str(20 + j), "score": 0.9 - j / 100, "rank": j, "path": f"photos/p{20 + j}.jpg"}
                for j in range(10)]
        rounds.append({"index": i, "query": f"q{i}", "rank": rank, "hits": hits, "feedback": ""})
    return {"target_id": tid, "img": f"photos/t{tid}.jpg", "rounds": rounds}


def summary_of(label: str, records: dict) -> dict:
    return outputs.label_summary(records, [1, 5, 10], {"mode": label, "label": label, "rounds": 1, "seed": 0},
                                 MODELS)


def test_report_shows_one_based_ranks_all_hits_by_path_and_the_models(tmp_path):
    recs = {3: record(3, [4, 0])}
    summary = summary_of("genir", recs)
    html = write_report(tmp_path, summary, {"genir": {3: (recs[3], tmp_path)}}).read_text()
    assert "<title>genir evaluation: genir · generator sd3-medium, refiner gemma-3-4b-it, retriever " \
           "blip-itm-base-coco</title>" in html
    assert "found (best rank 1)" in html and "best rank 0" not in html
    assert ">5<br><small>best 5</small>" in html and ">1<br><small>best 1</small>" in html
    for j in range(10):                                      # all K hits, by path, ranked from 1
        assert f"#{j + 1} photos/p{20 + j}.jpg" in html
    assert "#0 " not in html
    assert "images loaded" not in html and "loading images" not in html   # only failures are announced
    assert "failed to load" in html


def test_equal_curves_in_a_merged_plot_are_all_visible(tmp_path):
    from matplotlib.figure import Figure

    recs = {1: record(1, [30, 3]), 2: record(2, [0, 0])}
    runs = {name: summary_of(name, recs) for name in ("genir", "verbal", "hybrid", "chatir", "prediction")}
    merged = outputs.comparison_summary(runs, {n: 2 for n in runs}, [1, 2], [1, 5, 10])
    ax = Figure().subplots()
    outputs.draw_hits(ax, merged)
    lines = ax.get_lines()
    assert [ln.get_label().split(" ")[0] for ln in lines] == list(runs)
    assert all(list(ln.get_ydata()) == list(lines[0].get_ydata()) for ln in lines)   # the same curve 5 times
    # ... yet no two lines share their x positions or their (marker, dash) style
    assert len({tuple(ln.get_xdata()) for ln in lines}) == len(lines)
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == len(lines)
    assert "sd3-medium" in ax.get_title()
    outputs.plot_hits(tmp_path / "plot.png", merged)
    assert Image.open(tmp_path / "plot.png").size == (640, 420)
