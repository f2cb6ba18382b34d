"""`genir index` as a real process: killed midway (SIGKILL) and rerun, it ends with exactly one
point per readable corpus entry and reports the missing/corrupt ones."""

from __future__ import annotations

import os
import shutil
import signal
import time

import numpy as np

from services.retriever.store import EdgeStore
from testkit.procs import Proc
from tests.retriever.conftest import index_cmd, run_index

BLOCK_AT = 150   # this entry is a FIFO: reading it blocks, so the run is killed at a known point


def test_kill_midway_then_resume(blip_model, corpus, tmp_path):
    # Same corpus, but entry BLOCK_AT is a named pipe nobody writes to: batches before it are
    # committed, the one containing it waits forever.
    root = tmp_path / "images"
    for rel in corpus["paths"]:
        src, dst = corpus["root"] / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            os.link(src, dst)     # not a symlink: links out of the image root are refused
    blocked = root / corpus["paths"][BLOCK_AT]
    blocked.unlink()
    os.mkfifo(blocked)
    run = dict(corpus, root=root)
    store = tmp_path / "store"

    proc = Proc(index_cmd(blip_model, run, "coco", store, "--log-level", "DEBUG"),
                tmp_path / "index1.log").start()
    committed = BLOCK_AT // 16 * 16           # batches of 16: ids 0..143 can be written
    deadline = time.monotonic() + 90
    try:
        while f"committed through id {committed - 1}\n" not in proc.log(100_000):
            assert proc.alive() and time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        time.sleep(0.5)                         # give a wrong implementation time to write more
    finally:
        os.killpg(proc.popen.pid, signal.SIGKILL)   # it would wait on the pipe forever
        proc.popen.wait(10)

    s = EdgeStore(store)
    assert s.count("coco") == committed         # nothing past the blocked batch, nothing lost
    s.close()

    blocked.unlink()
    shutil.copy(corpus["root"] / corpus["paths"][BLOCK_AT], blocked)
    summary, err = run_index(blip_model, run, "coco", store, rc=1)   # two skipped files: exit 1
    n = corpus["n_ok"]
    assert summary["kept"] == committed and summary["embedded"] == n - committed
    assert summary["failed"] == 2 and summary["points"] == n and summary["fingerprint"] == ""
    skipped = [line for line in err.splitlines() if "WARNING genir.index: skipped" in line]
    assert len(skipped) == 2 and "missing file" in skipped[0] and "image header" in skipped[1], skipped
    assert "--allow-missing" in err

    summary, _ = run_index(blip_model, run, "coco", store, "--allow-missing")   # idempotent
    assert summary["embedded"] == 0 and summary["points"] == n and summary["kept"] == n
    assert summary["fingerprint"].startswith(f"{n + 2}:")

    s = EdgeStore(store)
    ids, vecs = s.matrix("coco")
    assert len(ids) == len(set(ids.tolist())) == n and set(ids.tolist()) == set(range(n))
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert s.payloads("coco", [7])[7]["path"] == corpus["paths"][7]
    s.close()
