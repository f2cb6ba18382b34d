"""Never silently wrong: corpus identity, confinement of corpus paths, re-indexing keyed by path
and content, eval inputs and merge validation, session storage. These run in this process on the
real components (tiny BLIP, the embedded Qdrant store, SQLite, real files); the stack-level
cases (auth, bounds, statuses over gRPC) are in test_hardening.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genir.v1 import common_pb2, orchestrator_pb2
from orchestrator.sessions import MAX_SESSION_ROUNDS, SessionStore
from services.common import errors, validation
from services.common.paths import corpus_fingerprint, first_difference, resolve_in_root
from services.retriever.indexer import index_corpus
from services.retriever.store import EdgeStore
from testkit.images import make_corpus
from testkit.procs import ROOT, proc_env

BLIP_SIZE = 32


# ---------------------------------------------------------------------- confinement of corpus paths
@pytest.fixture()
def image_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "sub" / "ok.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "escape.png")          # a link out of the root
    os.symlink(outside, root / "escape_dir")                          # a folder link out of the root
    os.symlink(root / "sub" / "ok.png", root / "inside.png")          # a link that stays inside
    return root


ESCAPES = [
    ("dotdot", "../outside/secret.png"), ("nested-dotdot", "sub/../../outside/secret.png"),
    ("absolute", "/etc/passwd"), ("drive", "C:/Windows/win.ini"), ("backslash-dotdot", "..\\outside\\secret.png"),
    ("symlink-file", "escape.png"), ("symlink-dir", "escape_dir/secret.png"), ("empty", ""), ("nul", "sub/ok\x00.png"),
]


@pytest.mark.parametrize("rel", [r for _, r in ESCAPES], ids=[i for i, _ in ESCAPES])
def test_paths_outside_the_root_are_refused_without_revealing_it(image_root, rel):
    with pytest.raises(errors.InvalidArgument) as e:
        resolve_in_root(image_root, rel, "corpus path")
    msg = e.value.message
    assert msg.startswith("corpus path:") and str(image_root.parent) not in msg and "secret" not in msg.replace(repr(rel), "")


def test_paths_inside_the_root_resolve(image_root):
    assert resolve_in_root(image_root, "sub/ok.png") == (image_root / "sub" / "ok.png").resolve()
    assert resolve_in_root(image_root, "inside.png") == (image_root / "sub" / "ok.png").resolve()


# ---------------------------------------------------------------------- corpus ids
@pytest.mark.parametrize("value", ["²", "١٢", "৩", "1²", "x" * 20_000],
                         ids=["superscript", "arabic-indic", "bengali", "digit-superscript", "huge"])
def test_corpus_ids_are_ascii_decimal_and_errors_stay_short(value):
    with pytest.raises(errors.InvalidArgument) as e:
        validation.corpus_id(value, "target_id")
    assert "is not a corpus id" in e.value.message and len(e.value.message) < 300


def test_first_difference_names_the_id():
    a = ["x.png", "y.png", "z.png"]
    assert first_difference(a, list(reversed(a))) == "id 0 is 'x.png' here but 'z.png' in the collection"
    assert "id 3 exists only here" in first_difference(a + ["w.png"], a)
    assert corpus_fingerprint(a) != corpus_fingerprint(list(reversed(a))) and corpus_fingerprint(a).startswith("3:")


# ---------------------------------------------------------------------- re-indexing keyed by path and content
@pytest.fixture(scope="module")
def blip(tiny_models):
    from services.retriever.embedders import load_embedder

    return load_embedder(tiny_models / "blip", image_size=BLIP_SIZE)


def _index(blip, store_dir: Path, paths: list[str], root: Path, **kw):
    store = EdgeStore(store_dir)
    try:
        rep = index_corpus(store, blip, "c", paths, root, batch_size=8, workers=2, progress=False, **kw)
        ids, vecs = store.matrix("c")
        ents = store.entries("c")
        meta = store.meta("c")
    finally:
        store.close()
    return rep, dict(zip(ids.tolist(), vecs, strict=True)), ents, meta


def _fresh(blip, tmp_path: Path, paths: list[str], root: Path):
    """What a from-scratch index of the same list holds: the reference for a re-index."""
    return _index(blip, tmp_path / f"fresh{time.monotonic_ns()}", paths, root)[1]


def _assert_same_index(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for i in want:
        assert np.allclose(got[i], want[i], atol=1e-5), f"point {i} holds another image's vector"


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "images"
    paths = make_corpus(root, 12, seed=3, size=(40, 32))
    return root, paths


def test_reversed_list_reindex_moves_vectors_without_embedding(blip, folder, tmp_path):
    root, paths = folder
    _index(blip, tmp_path / "s", paths, root)
    rev = list(reversed(paths))
    rep, got, ents, meta = _index(blip, tmp_path / "s", rev, root)
    assert (rep.moved, rep.added, rep.changed, rep.embedded, rep.removed, rep.failed) == (12, 0, 0, 0, 0, [])
    assert [ents[i]["path"] for i in range(12)] == rev
    assert meta.corpus_fingerprint == corpus_fingerprint(rev)
    _assert_same_index(got, _fresh(blip, tmp_path, rev, root))


def test_grown_folder_reindex_adds_the_new_file_and_shifts_nothing_wrongly(blip, folder, tmp_path):
    root, paths = folder
    _index(blip, tmp_path / "s", paths, root)
    Image.new("RGB", (40, 32), (250, 0, 0)).save(root / "000_first.jpg")   # sorts first
    grown = ["000_first.jpg"] + paths
    rep, got, ents, meta = _index(blip, tmp_path / "s", grown, root)
    assert (rep.added, rep.moved, rep.embedded, rep.removed, rep.points) == (1, 12, 1, 0, 13)
    assert ents[0]["path"] == "000_first.jpg" and ents[12]["path"] == paths[-1]
    _assert_same_index(got, _fresh(blip, tmp_path, grown, root))


def test_deleted_file_reindex_removes_its_point(blip, folder, tmp_path):
    root, paths = folder
    _index(blip, tmp_path / "s", paths, root)
    (root / paths[4]).unlink()
    shrunk = paths[:4] + paths[5:]
    rep, got, _, meta = _index(blip, tmp_path / "s", shrunk, root)
    assert (rep.kept, rep.moved, rep.removed, rep.points, rep.embedded) == (4, 7, 1, 11, 0)
    assert meta.corpus_size == 11
    _assert_same_index(got, _fresh(blip, tmp_path, shrunk, root))


def test_changed_file_is_embedded_again(blip, folder, tmp_path):
    root, paths = folder
    _, before, _, _ = _index(blip, tmp_path / "s", paths, root)
    Image.new("RGB", (40, 32), (0, 0, 255)).save(root / paths[2], format="JPEG")
    os.utime(root / paths[2], ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    rep, got, ents, _ = _index(blip, tmp_path / "s", paths, root)
    assert (rep.changed, rep.kept, rep.embedded) == (1, 11, 1)
    assert not np.allclose(got[2], before[2], atol=1e-4)
    _assert_same_index(got, _fresh(blip, tmp_path, paths, root))


def test_missing_file_on_reindex_deletes_the_stale_point_and_records_no_corpus(blip, folder, tmp_path):
    root, paths = folder
    _index(blip, tmp_path / "s", paths, root)
    (root / paths[7]).unlink()                                   # gone, but still listed
    rep, got, _, meta = _index(blip, tmp_path / "s", paths, root)
    assert len(rep.failed) == 1 and "missing file" in rep.failed[0] and 7 not in got
    assert meta.corpus_fingerprint == ""                         # readers refuse this collection
    rep, _, _, meta = _index(blip, tmp_path / "s", paths, root, allow_missing=True)
    assert meta.corpus_fingerprint == corpus_fingerprint(paths) and rep.points == 11


def test_symlink_out_of_the_root_is_skipped_not_embedded(blip, folder, tmp_path):
    root, paths = folder
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (40, 32), (7, 7, 7)).save(secret)
    os.symlink(secret, root / "link.jpg")
    rep, got, _, _ = _index(blip, tmp_path / "s", paths + ["link.jpg", "../secret.jpg"], root)
    assert len(got) == 12 and sorted(f.split(":", 1)[1].strip() for f in rep.failed) == [
        "corpus path: '../secret.jpg' must be a path relative to the image root, without '..'",
        "corpus path: 'link.jpg' leaves the image root"]


def _genir_index(args: list, tiny_models: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "genir.cli", "index", "--model", tiny_models / "blip", "--image-size", BLIP_SIZE,
           "--collection", "c", "--no-progress", "--batch-size", 8, "--workers", 2, *args]
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=proc_env(), cwd=ROOT, timeout=300)


def test_genir_index_exit_code_and_counts(tiny_models, folder, tmp_path):
    root, paths = folder
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(paths + ["missing.jpg"]))
    base = ["--corpus", corpus, "--image-root", root, "--store-path", tmp_path / "s"]
    out = _genir_index(base, tiny_models)
    assert out.returncode == 1 and "1 file(s) skipped" in out.stderr and "--allow-missing" in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["added"], summary["failed"], summary["fingerprint"]) == (12, 1, "")
    out = _genir_index(base + ["--allow-missing"], tiny_models)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and (summary["kept"], summary["embedded"], summary["points"]) == (12, 0, 12)


# ---------------------------------------------------------------------- orchestrator reads of corpus images
class _Hit:
    def __init__(self, id, path):
        self.id, self.payload = id, {"path": path}


def _engine(image_root):
    from orchestrator.engine import Engine

    return Engine(clients=None, image_root=image_root, own_clients=False)


@pytest.mark.parametrize("path", ["../outside/secret.png", "/etc/passwd", "escape.png", "escape_dir/secret.png"])
def test_prediction_image_from_a_payload_path_stays_in_the_root(image_root, path):
    with pytest.raises(errors.FailedPrecondition) as e:
        _engine(image_root).corpus_image(_Hit(3, path))
    msg = e.value.message
    assert str(image_root.parent) not in msg and "corpus id 3" in msg
    assert "relative to the image root" in msg or "leaves the image root" in msg    # refused before any read


def test_missing_and_outside_files_get_the_same_answer(image_root):
    eng = _engine(image_root)
    with pytest.raises(errors.FailedPrecondition) as outside:
        eng.corpus_image(_Hit(1, "../outside/nothing.png"))
    with pytest.raises(errors.FailedPrecondition) as outside_existing:
        eng.corpus_image(_Hit(1, "../outside/secret.png"))
    # whether a file exists outside the root cannot be told from the answer
    assert outside.value.message.replace("nothing", "X") == outside_existing.value.message.replace("secret", "X")


def test_a_corrupt_image_is_not_cached_once_fixed(image_root):
    eng = _engine(image_root)
    bad = image_root / "sub" / "later.png"
    whole = io.BytesIO()
    Image.new("RGB", (64, 48), (5, 9, 5)).save(whole, format="PNG")
    bad.write_bytes(whole.getvalue()[:80])               # a good header, truncated pixel data
    with pytest.raises(errors.FailedPrecondition):
        eng.corpus_image(_Hit(5, "sub/later.png"))
    time.sleep(0.01)
    Image.new("RGB", (8, 6), (5, 5, 5)).save(bad)
    img = eng.corpus_image(_Hit(5, "sub/later.png"))
    assert (img.width, img.height) == (8, 6) and img.data == bad.read_bytes()


# ---------------------------------------------------------------------- sessions
def _round(i: int, data: bytes = b"\x89PNG-bytes") -> orchestrator_pb2.Round:
    return orchestrator_pb2.Round(index=i, query=f"q{i}", generated=common_pb2.Image(data=data, mime_type="image/png",
                                                                                     width=2, height=2))


OPTS = orchestrator_pb2.SessionOptions(collection="c", top_k=5, seed=7)


def test_session_exists_only_with_its_first_round(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")
    rec = store.new("genir", OPTS)                       # CreateSession before its round finished
    with pytest.raises(errors.NotFound):
        store.get(rec.id)                                # a crash here leaves no 0-round session
    store.add_round(rec.id, _round(0), new=rec)
    assert len(store.rounds(rec.id, inline=False)) == 1


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_round_of_a_session_removed_meanwhile_is_not_found_and_leaves_no_file(tmp_path, how):
    store = SessionStore(tmp_path / "s.sqlite", ttl=1.0 if how == "expired" else 3600)
    rec = store.new("genir", OPTS)
    store.add_round(rec.id, _round(0), new=rec)
    if how == "deleted":
        store.delete(rec.id)
    else:
        time.sleep(1.1)
    with pytest.raises(errors.NotFound) as e:
        store.add_round(rec.id, _round(1))
    assert "while this round ran" in e.value.message
    assert len(list(store.images_dir.iterdir())) == (1 if how == "expired" else 0)   # round 1's image never stays
    store.purge()                                   # the stated bound for an expired session: the next purge
    assert list(store.images_dir.iterdir()) == []


def test_refs_are_unguessable_and_go_with_their_session(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")
    a, b = store.new("genir", OPTS), store.new("genir", OPTS)
    _, sa = store.add_round(a.id, _round(0), new=a)
    _, sb = store.add_round(b.id, _round(0), new=b)        # the same bytes
    ra, rb = sa.generated.ref, sb.generated.ref
    assert ra != rb and len(ra.split(".")[0]) == 64
    assert store.get_image(ra).data == b"\x89PNG-bytes"
    store.delete(a.id)
    with pytest.raises(errors.NotFound):
        store.get_image(ra)                                   # gone at once, not after the TTL
    assert store.get_image(rb).data == b"\x89PNG-bytes"


def test_expired_session_images_go_on_the_next_purge(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite", ttl=0.5)
    rec = store.new("genir", OPTS)
    _, stored = store.add_round(rec.id, _round(0), new=rec)
    time.sleep(0.6)
    assert store.purge() >= 1
    assert not (store.images_dir / stored.generated.ref).exists()


def test_round_cap_and_get_session_inline_budget(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")
    rec = store.new("genir", OPTS)
    store.add_round(rec.id, _round(0, b"a" * 1000), new=rec)
    for i in range(1, MAX_SESSION_ROUNDS):
        store.add_round(rec.id, _round(i, b"b" * 1000))
    rounds = store.rounds(rec.id, inline=False)
    with pytest.raises(errors.FailedPrecondition) as e:
        store.check_room(rounds)
    assert f"limit of {MAX_SESSION_ROUNDS} rounds" in e.value.message
    inline = store.rounds(rec.id, inline=True, inline_budget=20_000)
    n_inline = sum(1 for r in inline if r.generated.data)
    assert 0 < n_inline < MAX_SESSION_ROUNDS and all(r.generated.ref for r in inline[n_inline:])
    assert sum(r.ByteSize() for r in inline) <= 20_000 + 2000


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (root is needed to mount it)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_resource_exhausted_and_leaves_no_temp_file(tiny_disk):
    from services.common.errors import storage_error

    store = SessionStore(tiny_disk / "s.sqlite")
    rec = store.new("genir", OPTS)
    with pytest.raises(OSError) as e:
        store.add_round(rec.id, _round(0, os.urandom(400_000)), new=rec)
    mapped = storage_error(e.value)
    assert mapped is not None and mapped.code.name == "RESOURCE_EXHAUSTED" and str(tiny_disk) not in mapped.message
    assert list(store.images_dir.iterdir()) == []
    with pytest.raises(errors.NotFound):
        store.get(rec.id)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_writable_follows_a_full_disk_and_the_size_of_the_write_that_failed(tiny_disk):
    store = SessionStore(tiny_disk / "s.sqlite")
    assert store.writable()
    filler = fill(tiny_disk)
    assert not store.writable()
    filler.unlink()
    assert store.writable()
    rec = store.new("genir", OPTS)
    with pytest.raises(OSError):                       # 400 KB never fits on 256 KiB
        store.add_round(rec.id, _round(0, os.urandom(400_000)), new=rec)
    assert not store.writable(), "the check must ask for as much room as the write that failed"
    assert not [p for p in store.images_dir.iterdir()]   # probes and temp files leave nothing


def test_read_only_folder_is_unavailable(tmp_path):
    from services.common.errors import storage_error

    store = SessionStore(tmp_path / "s.sqlite")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], check=True)
    try:
        store.images_dir = ro
        rec = store.new("genir", OPTS)
        with pytest.raises(OSError) as e:
            store.add_round(rec.id, _round(0), new=rec)
        mapped = storage_error(e.value)
        assert mapped is not None and mapped.code.name == "UNAVAILABLE" and str(ro) not in mapped.message
        assert not store.writable()
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
