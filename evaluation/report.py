"""report.html: per dialog, per round — query, rendering, top hits, target, rank.

Images are files beside the report (relative links), never base64, so a 2,000-dialog report
stays small. Renderings come from the run's images/ folder; the target and the top hits are
thumbnailed from the corpus image root when it is available (else shown by path).
A few lines of script count the images that failed to load; only a failure is shown at the top,
and body[data-images-broken] keeps the count checkable headless.

Ranks are shown 1-based (1 = top hit), as people count; dialogs.jsonl and summary.json keep the
0-based ranks the services return.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from evaluation.outputs import PLOT, blocks, models_line

log = logging.getLogger("genir.eval")

REPORT = "report.html"
THUMBS = "images/corpus"
THUMB_PX = 160

_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:13px}
th{background:#f3f3f3}
.dialog{margin:18px 0;padding:8px;border:1px solid #999;border-radius:6px}
.render{width:160px;height:auto;display:block;background:#eee}
.thumb{width:72px;height:auto;display:block;background:#eee}
.target{width:160px;height:auto;background:#eee}
.hit{background:#d8f5d0}
.found{color:#176f0b;font-weight:bold}
.hits td{border:none;padding:1px 3px;font-size:11px;text-align:center;max-width:90px;overflow-wrap:anywhere}
.q{max-width:420px;white-space:pre-wrap}
#status{font-weight:bold;color:#a00}
"""

# Count images that did not load (naturalWidth 0 after the load event).
_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  imgs.forEach(function (i) { i.setAttribute('data-loaded', (i.complete && i.naturalWidth > 0) ? '1' : '0'); });
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-broken', String(broken.length));
  if (broken.length) {
    document.getElementById('status').textContent = broken.length + ' of ' + imgs.length + ' images failed to load';
  }
});
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _rel(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


class _Thumbs:
    """Small JPEG copies of corpus images beside the report (made once per corpus id)."""

    def __init__(self, out: Path, image_root: Path | None):
        self.out, self.root = out, image_root
        self.dir = out / THUMBS

    def get(self, corpus_id, path: str) -> str | None:
        if self.root is None or not path:
            return None
        dest = self.dir / f"{corpus_id}.jpg"
        if not dest.exists():
            src = self.root / path
            try:
                from PIL import Image

                with Image.open(src) as im:
                    im = im.convert("RGB")
                    im.thumbnail((THUMB_PX, THUMB_PX))
                    self.dir.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_name(dest.name + ".tmp")
                    im.save(tmp, format="JPEG", quality=85)
                    tmp.replace(dest)
            except (OSError, ValueError) as e:
                log.warning("no thumbnail for corpus id %s (%s): %s", corpus_id, src, e)
                return None
        return _rel(dest, self.out)


def _metrics_table(summary: dict) -> str:
    k = summary["headline_k"]
    bl = blocks(summary)
    n_rounds = max(b["n_rounds"] for b in bl.values()) if bl else 0
    head = "".join(f"<th>{_e(label)} (n={b['n_targets']})</th>" for label, b in bl.items())
    rows = []
    for r in range(n_rounds):
        cells = "".join(f"<td>{b['hits_at_k'][str(k)][r]:.2f}</td>" if r < b["n_rounds"] else "<td></td>"
                        for b in bl.values())
        rows.append(f"<tr><td>{r}</td>{cells}</tr>")
    bri = "".join(f"<td>{b['bri']:.4f}</td>" if b["bri"] is not None else "<td></td>" for b in bl.values())
    return (f"<table><tr><th>round</th>{head}</tr>{''.join(rows)}<tr><th>BRI</th>{bri}</tr></table>"
            f"<p>cumulative Hits@{k} in percent; BRI lower is better.</p>")


def _dialog_html(label: str, rec: dict, run_dir: Path, out: Path, thumbs: _Thumbs) -> str:
    tid, img = rec["target_id"], rec.get("img", "")
    tthumb = thumbs.get(tid, img)
    timg = f'<img class="target" src="{_e(tthumb)}" alt="target {tid}">' if tthumb else ""
    best = min(r["rank"] for r in rec["rounds"]) + 1
    rows = []
    best_so_far = None
    for r in rec["rounds"]:
        rank = r["rank"] + 1
        best_so_far = rank if best_so_far is None else min(best_so_far, rank)
        if r.get("image"):
            rsrc = _rel(run_dir / r["image"], out)
            render = f'<img class="render" src="{_e(rsrc)}" alt="round {r["index"]} rendering">'
        else:
            render = "<i>no image shown in this mode</i>"
        hits = []
        for h in r.get("hits", []):
            is_t = str(h["id"]) == str(tid)
            path = h.get("path", "")
            th = thumbs.get(h["id"], path)
            pic = f'<img class="thumb" src="{_e(th)}" alt="{_e(path)}" title="{_e(path)}">' if th else ""
            hits.append(f'<td class="{"hit" if is_t else ""}">{pic}#{h["rank"] + 1} {_e(path or "id " + str(h["id"]))}'
                        f'<br>{h["score"]:.3f}</td>')
        hit_cls = ' class="hit"' if rank <= 10 else ""
        rows.append(
            f"<tr><td>{r['index']}</td><td class=\"q\">{_e(r['query'])}"
            + (f"<br><small><b>feedback:</b> {_e(r['feedback'])}</small>" if r.get("feedback") else "")
            + f"</td><td>{render}</td><td{hit_cls}>{rank}<br><small>best {best_so_far}</small></td>"
            f"<td><table class=\"hits\"><tr>{''.join(hits)}</tr></table></td></tr>")
    found = f'<span class="found">found (best rank {best})</span>' if best <= 10 else f"best rank {best}"
    return (f'<div class="dialog" id="{_e(label)}-{tid}"><h3>{_e(label)} · target {tid}: {_e(img)} — {found}</h3>'
            f"{timg}<table><tr><th>round</th><th>query</th><th>rendering</th><th>rank</th>"
            f"<th>top hits</th></tr>{''.join(rows)}</table></div>")


def write_report(out: Path, summary: dict, dialogs: Mapping[str, Mapping[int, tuple[dict, Path]]],
                 image_root: Path | None = None, max_dialogs: int = 200) -> Path:
    """`dialogs`: label -> target id -> (record, folder the record's image paths are relative to)."""
    out = Path(out)
    thumbs = _Thumbs(out, Path(image_root) if image_root else None)
    models = models_line(summary)
    modes = ", ".join(blocks(summary))
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>genir evaluation: {_e(modes)} · {_e(models)}</title>"
             f"<style>{_CSS}</style><script>{_JS}</script></head><body>",
             f"<h1>genir evaluation: {_e(modes)}</h1><p>models: {_e(models)}</p><p id=\"status\" role=\"alert\"></p>",
             f"<p>n_targets = {summary['n_targets']} · modes: {_e(modes)} · ranks are 1-based (1 = the top hit; "
             "dialogs.jsonl and summary.json store them 0-based)</p>", _metrics_table(summary)]
    if (out / PLOT).exists():
        parts.append(f'<img src="{PLOT}" alt="Hits@K per round" style="max-width:640px">')
    for label, recs in dialogs.items():
        tids = sorted(recs)
        shown = tids[:max_dialogs]
        parts.append(f"<h2>{_e(label)}: {len(tids)} dialogs"
                     + (f" (first {len(shown)} by target id shown)" if len(shown) < len(tids) else "") + "</h2>")
        for tid in shown:
            rec, run_dir = recs[tid]
            parts.append(_dialog_html(label, rec, Path(run_dir), out, thumbs))
    parts.append("</body></html>")
    path = out / REPORT
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
