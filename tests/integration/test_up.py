"""`genir up` as a person runs it: a folder of photos as the corpus, the console, crashed services
restarted, SIGHUP and Ctrl-C leaving nothing behind, taken ports and bad inputs refused up front.
Real processes on tiny models; each `genir up` is one subprocess whose console the test reads."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from PIL import Image

from genir import cli
from testkit.images import make_corpus

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


class Console:
    """A `genir up` subprocess and the lines it prints (stdout and stderr together)."""

    def __init__(self, args: list[str], cwd: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "genir.cli", "up", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, pattern: str, timeout: float = 300) -> re.Match:
        rx = re.compile(pattern)
        for line in self.lines:
            if m := rx.search(line):
                return m
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if m := rx.search(line):
                return m
        raise AssertionError(f"no line matching {pattern!r}; console:\n" + "\n".join(self.lines[-60:]))

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def close(self):
        if self.proc.poll() is None:
            for p in self.descendants():
                p.kill()
            self.proc.kill()
        self.proc.wait(30)


def photo_folder(root: Path) -> Path:
    """Nested folders of photos, one HEIC, and files that are not photos."""
    from genir.corpus_folder import register_heif

    assert register_heif(), "pillow-heif is in requirements.txt"
    make_corpus(root / "trip", 8, seed=5, size=(80, 60))
    make_corpus(root / "home", 4, seed=6, size=(60, 80))
    Image.new("RGB", (64, 48), (20, 160, 40)).save(root / "phone.heic")
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(b"")
    (root / ".thumbnails").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".thumbnails" / "t.jpg")
    return root


def gone(procs: list[psutil.Process], timeout: float = 30) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def test_up_on_a_folder_serves_restarts_and_leaves_nothing_on_sighup(tiny_models, tmp_path):
    from genir.client import Client

    photos = photo_folder(tmp_path / "photos")
    work = tmp_path / "up"
    con = Console(["--models", str(tiny_models), "--workdir", str(work), "--corpus", str(photos), "--free-ports",
                   "--collection", "mine", "--max-restarts", "3"], ROOT)
    try:
        con.expect(r"corpus: 13 images")
        con.expect(r"index summary: .*\"embedded\": 13")                      # the summary on the console
        url = con.expect(r"web page on (http://\S+)").group(1)
        orch = con.expect(r"all services ready \(orchestrator (\S+)\)").group(1)
        listed = json.loads((work / "mine.corpus.json").read_text())
        assert listed == sorted(listed) and len(listed) == 13 and "phone.heic" in listed
        assert not any(p.startswith(".") or p.endswith(".txt") for p in listed)
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"Describe the photo" in r.read()

        async def session(feedback=None, sid=None):
            async with Client(orch) as c:
                if sid is None:
                    s = await c.create_session("a green photo", top_k=13)
                    heic = listed.index("phone.heic")
                    th = await c.corpus_image(str(heic), max_side=32)
                    return s, th
                return await c.next_round(sid, feedback=feedback), None

        s, thumb = asyncio.run(session())
        assert len(s.rounds[0].hits) == 13 and {h.payload["path"] for h in s.rounds[0].hits} == set(listed)
        assert thumb.mime_type == "image/jpeg" and (thumb.width, thumb.height) == (32, 24)

        # a crashed service is named with the reason, restarted with backoff, and the rest keep serving
        gen = next(p for p in con.descendants() if p.cmdline()[3:5] == ["serve", "generator"])
        gen.kill()
        con.expect(r"generator died: killed by SIGKILL.*restarting it in 1s")
        con.expect(r"generator restarted and ready", timeout=240)
        rnd, _ = asyncio.run(session("make it greener", s.session_id))
        assert rnd.index == 1 and len(rnd.hits) == 13

        # SIGHUP (the terminal closed): every child stops, none is left
        children = con.descendants()
        assert len(children) >= 6
        con.proc.send_signal(signal.SIGHUP)
        assert con.proc.wait(90) == 0
        assert gone(children) == []
    finally:
        con.close()


def test_ctrl_c_during_start_up_stops_at_once_and_leaves_nothing(tiny_models, tmp_path):
    con = Console(["--models", str(tiny_models), "--workdir", str(tmp_path / "up"), "--free-ports"], ROOT)
    try:
        con.expect(r"started generator", timeout=120)
        children = con.descendants()
        start = time.monotonic()
        con.proc.send_signal(signal.SIGINT)
        assert con.proc.wait(60) == 130
        assert time.monotonic() - start < 45
        assert gone(children) == []
        con.expect(r"Ctrl-C: stopping every service")
        con.expect(r"stopped: ")
        assert not any("Traceback" in line for line in con.lines), "\n".join(con.lines)
    finally:
        con.close()


def test_kill_9_of_genir_up_takes_every_child_with_it(tiny_models, tmp_path):
    con = Console(["--models", str(tiny_models), "--workdir", str(tmp_path / "up"), "--free-ports"], ROOT)
    try:
        con.expect(r"started retriever", timeout=120)
        children = con.descendants()
        assert len(children) >= 3
        con.proc.kill()                       # no handler runs: only the parent-death signal can help
        con.proc.wait(10)
        assert gone(children, timeout=60) == []
    finally:
        con.close()


def test_a_taken_port_is_named_before_anything_starts(tiny_models, tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "genir.cli", "up", "--models", str(tiny_models), "--workdir",
                              str(tmp_path), "--free-ports", "--ports", f"refiner={port}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"port {port} (refiner gRPC) already in use" in out.stderr
    assert "INFO genir.up: started" not in out.stderr and "services ready" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--corpus", "nope.json"], "--corpus nope.json: no such file or folder"),
    (["--corpus", "{corpus}"], "needs --image-root"),
    (["--corpus", "{corpus}", "--image-root", "no/such/dir"], "--image-root no/such/dir: no such folder"),
    (["--corpus", "{empty}"], "no images found"),
    (["--image-root", "{empty}"], "--image-root without --corpus"),
    (["--ports", "web=abc"], "expected NAME=PORT"),
])
def test_bad_inputs_are_one_line_before_anything_starts(tiny_models, tmp_path, capsys, args, message):
    (tmp_path / "c.json").write_text('["a.jpg"]')
    (tmp_path / "empty").mkdir()
    args = [a.format(corpus=tmp_path / "c.json", empty=tmp_path / "empty") for a in args]
    code = cli.main(["up", "--models", str(tiny_models), "--workdir", str(tmp_path / "w"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_missing_model_folders_are_named(tmp_path, capsys):
    (tmp_path / "m" / "sd3").mkdir(parents=True)
    assert cli.main(["up", "--models", str(tmp_path / "m"), "--workdir", str(tmp_path / "w")]) == 2
    assert "missing gemma3/, blip/" in capsys.readouterr().err


def test_genir_index_takes_a_folder_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from genir.corpus_folder import resolve_corpus

    assert cli.main(["index", "--corpus", str(tmp_path / "none"), "--collection", "c"]) == 2
    assert capsys.readouterr().err.strip() == f"genir index: --corpus {tmp_path / 'none'}: no such file or folder"
    photos = photo_folder(tmp_path / "photos")
    listed, root, n = resolve_corpus(photos, None, tmp_path / "list.json")
    assert n == 13 and root == photos.resolve() and json.loads(listed.read_text())[0] == "home/unlabeled2017/000000000008.jpg"


def test_genir_index_embeds_a_folder(tiny_models, tmp_path):
    photos = photo_folder(tmp_path / "photos")
    out = subprocess.run([sys.executable, "-m", "genir.cli", "index", "--corpus", str(photos), "--model",
                          str(tiny_models / "clip"), "--collection", "pics", "--store-path", str(tmp_path / "q"),
                          "--corpus-out", str(tmp_path / "pics.json"), "--no-progress"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"13 images, list {tmp_path / 'pics.json'}, image root {photos.resolve()}" in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["corpus"] == 13 and summary["embedded"] == 13 and summary["failed"] == 0
    assert json.loads((tmp_path / "pics.json").read_text()) == sorted(json.loads((tmp_path / "pics.json").read_text()))


def test_indexing_is_not_cut_by_the_start_up_deadline(tiny_models, tmp_path):
    from genir.corpus_folder import resolve_corpus
    from stack.up import Stack

    photos = photo_folder(tmp_path / "photos")
    listed, root, _ = resolve_corpus(photos, None, tmp_path / "list.json")
    # a deadline far shorter than loading the model and embedding 13 photos takes
    stack = Stack(tiny_models, tmp_path / "w", corpus=listed, image_root=root, ports="free", startup_timeout=0.01)
    stack.index()
    log = (tmp_path / "w" / "logs" / "index.log").read_text()
    assert json.loads(log.strip().splitlines()[-1])["embedded"] == 13
