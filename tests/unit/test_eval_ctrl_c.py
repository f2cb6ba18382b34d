"""Ctrl-C in `genir eval` ends with one line that says how to resume, not a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from testkit.images import make_corpus

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_prints_one_line_and_the_resume_hint(tmp_path):
    paths = make_corpus(tmp_path / "img", 4, corpus_file=tmp_path / "c.json")
    (tmp_path / "q.json").write_text(json.dumps([{"img": p, "dialog": []} for p in paths]))
    # nothing listens on port 1: every dialog keeps retrying, so the run is still going at Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "genir.cli", "eval", "--queries", "q.json", "--corpus", "c.json",
                             "--image-root", "img", "--out", "out", "--orchestrator", "127.0.0.1:1", "--rounds", "1",
                             "--metrics-port", "-1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    seen = []
    while not any("attempt 1/" in line for line in seen):   # the dialogs are running
        line = proc.stderr.readline()
        assert line, "genir eval ended before Ctrl-C:\n" + "".join(seen)
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    err = "".join(seen) + err
    assert proc.returncode == 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (f"genir eval: interrupted; 0 finished dialog(s) are kept in {Path('out') / 'dialogs.jsonl'}; "
                    "rerun the same command to resume")
