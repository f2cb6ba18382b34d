"""--export-dataset: the GenIR reference pipeline's dataset layout, plus a manifest.

Per target stem: captions/{stem}_caption_{r}.txt (round r's query), generated_images/{stem}_{r}.jpg
(what round r showed), comparisons/{stem}_comparison_{r}.txt (the feedback on round r's image that
wrote round r+1's query), dialogues/{stem}_dialogue.json (all rounds). Stems are the target file
names without extension; two targets with the same stem get their corpus id appended.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

MANIFEST = "manifest.json"
SUBDIRS = ("captions", "generated_images", "comparisons", "dialogues")


def stems(records: Mapping[int, dict]) -> dict[int, str]:
    base = {tid: Path(rec.get("img") or str(tid)).stem for tid, rec in records.items()}
    dup = Counter(base.values())
    return {tid: (s if dup[s] == 1 else f"{s}_{tid}") for tid, s in base.items()}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def export_dataset(dest: Path, records: Mapping[int, dict], run_dir: Path, summary: dict) -> Path:
    dest = Path(dest)
    for d in SUBDIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    names = stems(records)
    counts = Counter()
    targets = []
    for tid in sorted(records):
        rec, stem = records[tid], names[tid]
        rounds = rec["rounds"]
        dialogue = []
        for i, r in enumerate(rounds):
            idx = r["index"]
            _write(dest / "captions" / f"{stem}_caption_{idx}.txt", r["query"])
            counts["captions"] += 1
            image_rel = None
            if r.get("image"):
                image_rel = f"generated_images/{stem}_{idx}.jpg"
                with Image.open(run_dir / r["image"]) as im:
                    tmp = dest / (image_rel + ".tmp")
                    im.convert("RGB").save(tmp, format="JPEG", quality=95)
                    tmp.replace(dest / image_rel)
                counts["generated_images"] += 1
            comparison = rounds[i + 1].get("feedback", "") if i + 1 < len(rounds) else ""
            comp_rel = None
            if comparison:
                comp_rel = f"comparisons/{stem}_comparison_{idx}.txt"
                _write(dest / comp_rel, comparison)
                counts["comparisons"] += 1
            dialogue.append({"round": idx, "caption": r["query"], "image": image_rel, "comparison": comparison,
                             "comparison_file": comp_rel, "rank": r["rank"], "seed": r.get("seed"),
                             "top_hits": [h["id"] for h in r.get("hits", [])[:10]]})
        _write(dest / "dialogues" / f"{stem}_dialogue.json",
               json.dumps({"target": rec.get("img"), "target_id": tid, "mode": rec.get("mode"),
                           "rounds": dialogue}, indent=2, ensure_ascii=False) + "\n")
        counts["dialogues"] += 1
        targets.append({"stem": stem, "img": rec.get("img"), "target_id": tid, "n_rounds": len(rounds),
                        "best_rank": min(r["rank"] for r in rounds)})
    manifest = {"format": "genir-dataset", "version": 1, "mode": summary.get("mode"),
                "label": summary.get("label"), "rounds": summary.get("rounds"), "n_targets": len(targets),
                "models": summary.get("models", {}), "seeds": summary.get("seeds", {}),
                "files": {d: counts[d] for d in SUBDIRS}, "targets": targets,
                "layout": {"captions": "captions/{stem}_caption_{r}.txt",
                           "generated_images": "generated_images/{stem}_{r}.jpg",
                           "comparisons": "comparisons/{stem}_comparison_{r}.txt",
                           "dialogues": "dialogues/{stem}_dialogue.json"}}
    _write(dest / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dest
