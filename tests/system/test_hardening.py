"""The hardened stack (tests/system/conftest.py) as an adversarial user meets it: backends that
accept only the orchestrator, no secret in argv or logs, corpus identity checked end to end,
per-item Upsert failures, payload paths that try to leave the image root, oversized requests and
pixel budgets. Each case asserts the status, that the services are SERVING afterwards, and where
memory is the point, a bound on the resident set."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time

import grpc
import psutil
import pytest
from PIL import Image

from genir.v1 import common_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from services.common.paths import corpus_fingerprint
from testkit.procs import ROOT, eval_cmd, health_status, proc_env
from tests.system.badinput import Outcome, png, via_bytes, via_grpcurl
from tests.system.conftest import tree_rss

pytestmark = pytest.mark.timeout(600)

GEN, REF, RET, ORC = "genir.v1.Generator", "genir.v1.Refiner", "genir.v1.Retriever", "genir.v1.Orchestrator"
SCRATCH = "scratch"     # a collection of its own: the shared "hard" one keeps its corpus fingerprint


def md(hardened):
    return [("authorization", f"Bearer {hardened.token}")]


def assert_all_serving(stack):
    for name in ("generator", "refiner", "retriever", "orchestrator"):
        assert health_status(stack.target(name)) == 1, f"{name} is not SERVING"
    assert all(stack.alive().values()), stack.alive()


def one_bit_png(width: int, height: int) -> bytes:
    """A huge 1-bit image that compresses to a few KB: its pixels, not its bytes, are the load."""
    return png(width, height, 0, mode="1", optimize=True)


BACKEND_CALLS = [
    ("generator", f"{GEN}/Info", b""),
    ("refiner", f"{REF}/Refine", b""),
    ("retriever", f"{RET}/CollectionInfo", retriever_pb2.CollectionInfoRequest(collection="hard")),
]


# ---------------------------------------------------------------------- backends accept only the orchestrator
@pytest.mark.parametrize("name,method,payload", BACKEND_CALLS, ids=[c[0] for c in BACKEND_CALLS])
def test_backends_refuse_calls_without_the_token(hardened, name, method, payload):
    target = hardened.stack.target(name)
    missing = via_bytes(target, method, payload)
    wrong = via_bytes(target, method, payload, metadata=[("authorization", "Bearer not-the-token")])
    assert (missing.code, wrong.code) == ("UNAUTHENTICATED", "UNAUTHENTICATED"), (missing, wrong)
    right = via_bytes(target, method, payload, metadata=md(hardened))
    assert right.code != "UNAUTHENTICATED", right
    assert hardened.token not in missing.message + wrong.message + right.message
    assert health_status(target) == 1


def test_no_secret_in_any_command_line_or_log(hardened):
    stack = hardened.stack
    for svc in stack.services.values():
        procs = [psutil.Process(svc.popen.pid)] + psutil.Process(svc.popen.pid).children(recursive=True)
        for p in procs:
            assert not any(hardened.token in a for a in p.cmdline()), f"{svc.name}: token in argv"
    for log in (stack.workdir / "logs").glob("*.log"):
        assert hardened.token not in log.read_text(errors="replace"), f"{log.name} holds the token"


# ---------------------------------------------------------------------- corpus identity, end to end
def test_run_dialog_from_another_corpus_list_is_refused(hardened):
    req = orchestrator_pb2.RunDialogRequest(target_id="1", rounds=0,
                                            corpus_fingerprint=corpus_fingerprint(["a.png", "b.png"]))
    out = via_bytes(hardened.stack.target("orchestrator"), f"{ORC}/RunDialog", req, metadata=md(hardened),
                    streaming="response")
    assert out.code == "FAILED_PRECONDITION" and out.message.startswith("corpus:"), out
    assert "2 paths" in out.message and "12 paths" in out.message


def _eval_with_corpus(hardened, tmp_path, paths: list[str], *extra) -> subprocess.CompletedProcess:
    world = hardened.world
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(paths))
    cmd = eval_cmd(hardened.stack, world, tmp_path / "out", "--rounds", 0, "--concurrency", 1, "--retries", 0,
                   "--retriever", hardened.stack.target("retriever"), "--collection", "hard", *extra)
    cmd[cmd.index("--corpus") + 1] = str(corpus)
    env = dict(proc_env(), GENIR_EVAL_TOKEN=hardened.token)      # the token by environment, not argv
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("change", ["reversed", "grown", "shrunk"])
def test_eval_with_another_corpus_list_exits_2_naming_the_difference(hardened, tmp_path, change):
    paths = json.loads(hardened.world.corpus.read_text())
    other = {"reversed": list(reversed(paths)), "grown": paths + [paths[0] + ".copy.jpg"],
             "shrunk": paths[:-1]}[change]
    if change == "grown":
        (hardened.world.image_root / other[-1]).write_bytes((hardened.world.image_root / paths[0]).read_bytes())
    out = _eval_with_corpus(hardened, tmp_path, other, "--limit", 11)   # the 11 targets both lists hold
    assert out.returncode == 2, out.stdout + out.stderr
    assert "corpus" in out.stderr and "rerun the same command" not in out.stderr
    want = {"reversed": f"id 0 is {other[0]!r} here", "grown": "id 12 exists only here",
            "shrunk": "id 11 exists only in the collection"}[change]
    assert want in out.stderr, out.stderr
    assert not (tmp_path / "out" / "dialogs.jsonl").exists() or not (tmp_path / "out" / "dialogs.jsonl").read_text()


def test_eval_with_the_indexed_corpus_still_runs(hardened, tmp_path):
    # 10 targets, round 0 only (test_security removes the last image of the shared world)
    out = _eval_with_corpus(hardened, tmp_path, json.loads(hardened.world.corpus.read_text()), "--limit", 10)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len((tmp_path / "out" / "dialogs.jsonl").read_text().splitlines()) == 10


# ---------------------------------------------------------------------- Upsert and payload paths
def _dim(hardened) -> int:
    from genir.v1 import retriever_pb2_grpc

    with grpc.insecure_channel(hardened.stack.target("retriever")) as ch:
        return retriever_pb2_grpc.RetrieverStub(ch).CollectionInfo(
            retriever_pb2.CollectionInfoRequest(collection="hard"), metadata=md(hardened), timeout=30).dim


def _upsert(hardened, items) -> retriever_pb2.UpsertResponse:
    from genir.v1 import retriever_pb2_grpc

    with grpc.insecure_channel(hardened.stack.target("retriever")) as ch:
        return retriever_pb2_grpc.RetrieverStub(ch).Upsert(
            iter([retriever_pb2.UpsertRequest(collection=SCRATCH, items=items)]), metadata=md(hardened), timeout=60)


def test_upsert_reports_bad_items_and_keeps_the_good_ones(hardened):
    dim = _dim(hardened)
    vec = retriever_pb2.Vector(values=[1.0] + [0.0] * (dim - 1))
    items = [retriever_pb2.UpsertItem(id="²", vector=vec),
             retriever_pb2.UpsertItem(id="١٢", vector=vec),
             retriever_pb2.UpsertItem(id="1", vector=vec, payload={"path": "p" * 5000}),
             retriever_pb2.UpsertItem(id="2", image=common_pb2.Image(data=b"\x89PNG\r\n\x1a\nnope")),
             retriever_pb2.UpsertItem(id="3", vector=vec, payload={"path": "ok.png"})]
    resp = _upsert(hardened, items)
    assert resp.upserted == 1 and len(resp.failed) == 4, resp
    assert "is not a corpus id" in resp.failed[0] and "is not a corpus id" in resp.failed[1]
    assert "payload: 5004 characters, over the limit" in resp.failed[2] and "items[3].image" in resp.failed[3]
    assert health_status(hardened.stack.target("retriever")) == 1


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd"])
def test_prediction_session_never_serves_a_file_outside_the_image_root(hardened, path):
    dim = _dim(hardened)
    vecs = [retriever_pb2.UpsertItem(id=str(i), vector=retriever_pb2.Vector(values=[1.0 + i] + [0.5] * (dim - 1)),
                                     payload={"path": path}) for i in range(3)]
    assert _upsert(hardened, vecs).upserted == 3
    out = via_grpcurl(hardened.stack.target("orchestrator"), f"{ORC}/CreateSession",
                      {"query": "a red square", "mode": "prediction", "options": {"collection": SCRATCH}},
                      headers=[f"authorization: Bearer {hardened.token}"])
    assert out.code == "FAILED_PRECONDITION", out
    assert "root:" not in out.message and str(hardened.world.image_root) not in out.message
    assert "relative to the image root" in out.message, out.message      # refused before any read
    assert health_status(hardened.stack.target("orchestrator")) == 1


# ---------------------------------------------------------------------- ids and echoed values
ID_CASES = [
    ("orchestrator", f"{ORC}/RunDialog", orchestrator_pb2.RunDialogRequest(target_id="²"), "response", "INVALID_ARGUMENT"),
    ("orchestrator", f"{ORC}/RunDialog", orchestrator_pb2.RunDialogRequest(target_id="١"), "response", "INVALID_ARGUMENT"),
    ("orchestrator", f"{ORC}/RunDialog", orchestrator_pb2.RunDialogRequest(target_id="7" * 20_000), "response",
     "INVALID_ARGUMENT"),
    ("orchestrator", f"{ORC}/GetSession", orchestrator_pb2.GetSessionRequest(session_id="s" * 20_000), "", "NOT_FOUND"),
    ("orchestrator", f"{ORC}/GetImage", orchestrator_pb2.GetImageRequest(ref="r" * 20_000), "", "INVALID_ARGUMENT"),
    ("retriever", f"{RET}/Search", retriever_pb2.SearchRequest(collection="hard", text="a", target_id="²"), "",
     "INVALID_ARGUMENT"),
    ("retriever", f"{RET}/Search", retriever_pb2.SearchRequest(collection="c" * 20_000, text="a"), "",
     "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize("server,method,req,streaming,code", ID_CASES,
                         ids=["superscript", "arabic-indic", "20k-target", "20k-session", "20k-ref", "retriever-²",
                              "20k-collection"])
def test_bad_identifiers_get_their_own_status_with_a_short_message(hardened, server, method, req, streaming, code):
    out = via_bytes(hardened.stack.target(server), method, req, metadata=md(hardened), streaming=streaming)
    assert out.code == code, out.code + ": " + out.message[:300]
    assert len(out.message) < 600 and "metadata" not in out.message


# ---------------------------------------------------------------------- bounded memory
@contextlib.contextmanager
def own_orchestrator(hardened, tmp_path, db):
    """An orchestrator with the default --max-message-mb (64) over the hardened backends."""
    from testkit.procs import Proc, free_port

    stack = hardened.stack
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "genir.cli", "serve", "orchestrator", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", mport, "--generator", stack.target("generator"), "--refiner", stack.target("refiner"),
           "--retriever", stack.target("retriever"), "--collection", "hard", "--db", db]
    env = dict(proc_env(), GENIR_AUTH_TOKEN=hardened.token, GENIR_BACKEND_TOKEN=hardened.token)
    proc = Proc(cmd, tmp_path / "orch.log", env=env).start()
    try:
        proc.wait_healthy(port, timeout=120)
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.terminate()


@pytest.fixture()
def default_orchestrator(hardened, tmp_path):
    with own_orchestrator(hardened, tmp_path, tmp_path / "s.sqlite") as running:
        yield running


def test_rejected_50mb_calls_leave_the_orchestrator_small(hardened, default_orchestrator):
    proc, target = default_orchestrator
    pid = proc.popen.pid
    before = tree_rss(pid)
    calls = [("CreateSession", orchestrator_pb2.CreateSessionRequest(query="q" * (50 << 20))),
             ("GetSession", orchestrator_pb2.GetSessionRequest(session_id="s" * (50 << 20)))]   # a 64 KiB RPC
    outs = []
    for i in range(20):          # half of them without the token
        method, big = calls[i // 2 % 2]
        outs.append(via_bytes(target, f"{ORC}/{method}", big, metadata=md(hardened) if i % 2 else None, timeout=60))
    grown = tree_rss(pid) - before
    print(f"orchestrator RSS {before >> 20} MiB -> {(before + grown) >> 20} MiB after 20 rejected 50 MB calls "
          f"(CreateSession, GetSession)")
    assert {o.code for o in outs} == {"RESOURCE_EXHAUSTED"}, outs[:2]
    # over the orchestrator's largest RPC limit (RunDialog, 1 MiB): gRPC core refuses before buffering
    assert all("vs. 1048576" in o.message for o in outs), outs[0]
    assert grown < 100 << 20, f"orchestrator RSS grew by {grown >> 20} MiB"
    assert health_status(target) == 1
    assert_all_serving(hardened.stack)


@pytest.fixture()
def default_refiner(hardened, tmp_path):
    """A refiner with the default --max-message-mb (64) over the hardened Triton: its image RPCs take
    64 MiB, so a big body to its 64 KiB Info passes gRPC core and meets the per-RPC check."""
    from testkit.procs import Proc, free_port

    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "genir.cli", "serve", "refiner", "--host", "127.0.0.1", "--port", port,
           "--metrics-port", mport, "--triton-url", hardened.stack.target("triton")]
    proc = Proc(cmd, tmp_path / "refiner.log", env=dict(proc_env(), GENIR_AUTH_TOKEN=hardened.token)).start()
    try:
        proc.wait_healthy(port, timeout=120)
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.terminate()


def test_rejected_50mb_calls_to_a_small_rpc_name_the_rpc_and_leave_the_refiner_bounded(hardened, default_refiner):
    proc, target = default_refiner
    pid = proc.popen.pid
    big = refiner_pb2.CaptionRequest(target=common_pb2.Image(data=b"\x89" * (50 << 20)))  # unknown to InfoRequest
    before = tree_rss(pid)
    outs, sizes = [], []
    for _ in range(2):
        outs += [via_bytes(target, f"{REF}/Info", big, metadata=md(hardened), timeout=60) for _ in range(10)]
        time.sleep(2)                 # the last call's buffers go back a moment after it ended
        sizes.append(tree_rss(pid))
    print(f"refiner (64 MiB ceiling) RSS {before >> 20} MiB -> {sizes[0] >> 20} MiB after 10 and "
          f"{sizes[1] >> 20} MiB after 20 rejected 50 MB Info calls")
    assert {o.code for o in outs} == {"RESOURCE_EXHAUSTED"}, outs[:2]
    assert "Info: the request is 52428" in outs[0].message and "limit of 64 KiB" in outs[0].message, outs[0]
    # never parsed, and the heap the body was buffered in is given back (20 calls = 1000 MB sent)
    assert sizes[1] - before < 40 << 20, f"refiner RSS grew by {(sizes[1] - before) >> 20} MiB"   # kept: +91
    assert via_bytes(target, f"{REF}/Info", b"", metadata=md(hardened)).code == "OK"
    assert health_status(target) == 1


def _distinct_40mp_png(i: int) -> bytes:
    """40 MP, 1 bit, a few KB; pixel i set so no two are the same image (Triton caches by content)."""
    img = Image.new("1", (6400, 6250), 0)
    img.putpixel((i, i), 1)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_40mp_captions_leave_the_refiner_and_triton_bounded(hardened):
    """Caption with a 40 MP image (the per-image cap) is a small request whose pixels are the load:
    the refiner only reads headers, Triton decodes once and keeps the preprocessed tensor."""
    stack = hardened.stack
    refiner, triton = stack.services["refiner"].popen.pid, stack.services["triton"].popen.pid
    before = tree_rss(refiner), tree_rss(triton)
    outs = []
    for i in range(4):
        req = refiner_pb2.CaptionRequest(target=common_pb2.Image(data=_distinct_40mp_png(i), mime_type="image/png"),
                                         sampling=common_pb2.Sampling(max_new_tokens=4))
        assert len(req.SerializeToString()) < 100_000
        outs.append(via_bytes(stack.target("refiner"), f"{REF}/Caption", req, metadata=md(hardened), timeout=240))
    over = via_bytes(stack.target("refiner"), f"{REF}/Caption", refiner_pb2.CaptionRequest(
        target=common_pb2.Image(data=one_bit_png(9000, 9000))), metadata=md(hardened))     # 81 MP
    after = tree_rss(refiner), tree_rss(triton)
    print(f"4 x 40 MP Caption: refiner RSS {before[0] >> 20} -> {after[0] >> 20} MiB, "
          f"triton {before[1] >> 20} -> {after[1] >> 20} MiB; codes {[o.code for o in outs]}")
    assert [o.code for o in outs] == ["OK"] * 4, outs
    assert over.code == "INVALID_ARGUMENT" and "over the limit of 40000000" in over.message, over
    assert after[0] - before[0] < 50 << 20, "the refiner decoded pixels"
    assert after[1] - before[1] < 600 << 20, f"triton grew by {(after[1] - before[1]) >> 20} MiB"
    assert_all_serving(stack)


def test_pixel_budget_over_many_small_huge_images_and_health_stays_prompt(hardened):
    stack = hardened.stack
    target = stack.target("retriever")
    pid = stack.services["retriever"].popen.pid
    huge = one_bit_png(6400, 6250)                  # 40 MP, a few KB
    assert len(huge) < 20_000
    before = tree_rss(pid)
    slow_health = []

    def probe():
        for _ in range(10):
            t = time.monotonic()
            assert health_status(target, timeout=5) == 1
            slow_health.append(time.monotonic() - t)
            time.sleep(0.05)

    th = threading.Thread(target=probe)
    th.start()
    req = retriever_pb2.EmbedImagesRequest(images=[common_pb2.Image(data=huge, mime_type="image/png")] * 16)
    out = via_bytes(target, f"{RET}/EmbedImages", req, metadata=md(hardened))
    th.join()
    print(f"retriever: 16 x 40 MP refused; RSS {before >> 20} -> {tree_rss(pid) >> 20} MiB; "
          f"slowest health answer {max(slow_health):.3f} s")
    assert out.code == "INVALID_ARGUMENT" and "per-request budget" in out.message, out
    assert max(slow_health) < 2.0, slow_health
    assert tree_rss(pid) - before < 300 << 20
    refiner = via_bytes(stack.target("refiner"), f"{REF}/Compare", __import__("genir.v1.refiner_pb2", fromlist=["x"])
                        .CompareRequest(target=common_pb2.Image(data=huge), generated=common_pb2.Image(data=huge),
                                        caption="x"), metadata=md(hardened))
    assert refiner.code == "INVALID_ARGUMENT" and "per-request budget" in refiner.message, refiner
    assert_all_serving(stack)


def _triton(hardened, pngs: list[bytes]) -> Outcome:
    """One inference straight to Triton's gRPC port, inputs built as the refiner builds them."""
    import tritonclient.grpc as tg

    from services.refiner.triton_client import build_inputs

    content = [{"type": "image"} for _ in pngs] + [{"type": "text", "text": "hi"}]
    client = tg.InferenceServerClient(hardened.stack.target("triton"))
    try:
        client.infer("gemma3", build_inputs([{"role": "user", "content": content}], pngs, {"max_new_tokens": 2}))
        return Outcome("OK", "")
    except tg.InferenceServerException as e:
        return Outcome(str(e.status()), e.message() or "")
    finally:
        client.close()


def test_triton_model_enforces_the_pixel_caps(hardened):
    one = _triton(hardened, [one_bit_png(9000, 9000)])                         # 81 MP in one image
    assert "over the limit of 40000000" in one.message, one
    two = _triton(hardened, [one_bit_png(6000, 6000), one_bit_png(6000, 6000)])  # 72 MP together
    assert "per-request budget" in two.message, two
    assert _triton(hardened, [png()]).code == "OK"
    assert_all_serving(hardened.stack)


def test_60_collections_keep_the_retriever_threads_and_fds_bounded_also_after_a_restart(hardened):
    """qdrant-edge gives every open shard its own search pool (no shared one), so the store keeps at
    most MAX_OPEN_SHARDS open: threads and fds stop growing once that many are open, and a restart
    over 60 collections on disk opens none until they are used."""
    from genir.v1 import retriever_pb2_grpc
    from services.retriever.store import MAX_OPEN_SHARDS

    stack = hardened.stack
    vec = retriever_pb2.Vector(values=[1.0] * _dim(hardened))

    def counts() -> tuple[int, int]:
        proc = psutil.Process(stack.services["retriever"].popen.pid)
        return proc.num_threads(), proc.num_fds()

    def touch(stub, names, upsert: bool):
        for name in names:
            if upsert:
                stub.Upsert(iter([retriever_pb2.UpsertRequest(collection=name, items=[
                    retriever_pb2.UpsertItem(id="0", vector=vec)])]), metadata=md(hardened), timeout=60)
            else:
                info = stub.CollectionInfo(retriever_pb2.CollectionInfoRequest(collection=name), metadata=md(hardened),
                                           timeout=30)
                assert info.points == 1, name                   # a closed shard reopens on demand

    names = [f"many{i}" for i in range(60)]
    with grpc.insecure_channel(stack.target("retriever")) as ch:
        stub = retriever_pb2_grpc.RetrieverStub(ch)
        touch(stub, names[:12], upsert=True)
        at12 = counts()
        touch(stub, names[12:], upsert=True)
        at60 = counts()
    stack.restart("retriever")
    fresh = counts()
    with grpc.insecure_channel(stack.target("retriever")) as ch:
        touch(retriever_pb2_grpc.RetrieverStub(ch), names, upsert=False)
    reopened = counts()
    print(f"retriever threads/fds: {at12} after 12 collections, {at60} after 60; after a restart {fresh}, "
          f"{reopened} once all 60 were read (at most {MAX_OPEN_SHARDS} shards open)")
    # about 8 threads per open shard here: 48 more collections would have added ~380 threads and 48 fds
    assert at60[0] <= at12[0] + 4 and at60[1] <= at12[1] + 8, (at12, at60)
    assert reopened[0] <= at12[0] + 4 and reopened[1] <= at12[1] + 8, (at12, reopened)
    assert health_status(stack.target("retriever")) == 1


def test_refiner_health_follows_triton(tmp_path):
    """A refiner whose Triton does not answer is NOT_SERVING (it used to report SERVING)."""
    from testkit.procs import Proc, free_port

    port, mport, dead = free_port(), free_port(), free_port()
    proc = Proc([sys.executable, "-m", "genir.cli", "serve", "refiner", "--port", port, "--metrics-port", mport,
                 "--triton-url", f"127.0.0.1:{dead}", "--triton-health-seconds", "0.5"], tmp_path / "refiner.log",
                env=proc_env()).start()
    try:
        deadline = time.monotonic() + 60
        while health_status(f"127.0.0.1:{port}") is None and time.monotonic() < deadline:
            assert proc.alive(), proc.log()
            time.sleep(0.2)
        time.sleep(1.5)
        assert health_status(f"127.0.0.1:{port}") == 2
        assert health_status(f"127.0.0.1:{port}", "genir.v1.Refiner") == 2
    finally:
        proc.terminate()


# ---------------------------------------------------------------------- storage and health
def _wait_health(target: str, want: int, within: float = 20.0) -> float:
    start = time.monotonic()
    while health_status(target) != want:
        assert time.monotonic() - start < within, f"health is not {want} after {within} s"
        time.sleep(0.2)
    return time.monotonic() - start


def test_orchestrator_health_follows_its_storage(hardened, tmp_path):
    """A full disk, then a read-only one, under the session store: calls get their clear status and
    health is NOT_SERVING until a write succeeds again, then SERVING (a real 1 MiB tmpfs, as root)."""
    from tests.system.test_integrity import fill

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    create = orchestrator_pb2.CreateSessionRequest(query="a red square", options=orchestrator_pb2.SessionOptions(
        width=64, height=64))
    try:
        with own_orchestrator(hardened, tmp_path, disk / "s.sqlite") as (_, target):
            call = lambda: via_bytes(target, f"{ORC}/CreateSession", create, metadata=md(hardened))  # noqa: E731
            assert call().code == "OK"
            filler = fill(disk)
            down = _wait_health(target, 2)
            full = call()
            alive = health_status(target, "liveness")  # liveness probes must not restart the pod for this
            filler.unlink()
            up = _wait_health(target, 1)
            assert call().code == "OK"
            images = disk / "s.sqlite.images"      # read-only image folder: a read-only bind mount over it
            subprocess.run(["mount", "--bind", str(images), str(images)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(images)], check=True)
            ro_down = _wait_health(target, 2)
            read_only = call()
            subprocess.run(["umount", str(images)], check=True)
            ro_up = _wait_health(target, 1)
            print(f"health NOT_SERVING {down:.1f} s after the disk filled, SERVING {up:.1f} s after space was freed; "
                  f"read-only: {ro_down:.1f} s / {ro_up:.1f} s")
            assert full.code == "RESOURCE_EXHAUSTED" and "storage is full" in full.message, full
            assert read_only.code == "UNAVAILABLE" and "not writable" in read_only.message, read_only
            assert str(disk) not in full.message + read_only.message
            assert alive == 1, alive
            assert call().code == "OK"
            assert not [p.name for p in images.iterdir() if ".tmp" in p.name or ".probe" in p.name]
    finally:
        subprocess.run(["umount", "-R", "-l", str(disk)], check=False)


# ---------------------------------------------------------------------- sessions under crashes and races
SLOW_ROUND = orchestrator_pb2.SessionOptions(num_inference_steps=40, width=128, height=128)


def _generate_calls(stack) -> float:
    from testkit.procs import sample_sum, scrape

    return sample_sum(scrape(stack.metrics_port("generator")), "grpc_server_started_total", grpc_method="Generate")


def _call_during_render(stack, target, method, req, md_):
    """Start `method` in the background and return once its round's Generate call has begun."""
    before, box = _generate_calls(stack), {}
    th = threading.Thread(target=lambda: box.setdefault("out", via_bytes(target, method, req, metadata=md_)))
    th.start()
    deadline = time.monotonic() + 60
    while _generate_calls(stack) == before:
        assert time.monotonic() < deadline and th.is_alive(), box
        time.sleep(0.02)
    return th, box


def test_kill_9_during_create_session_leaves_no_session_without_rounds(hardened, tmp_path):
    import sqlite3

    db = tmp_path / "s.sqlite"
    create = orchestrator_pb2.CreateSessionRequest(query="a red square", options=SLOW_ROUND)
    with own_orchestrator(hardened, tmp_path, db) as (proc, target):
        th, box = _call_during_render(hardened.stack, target, f"{ORC}/CreateSession", create, md(hardened))
        proc.popen.kill()
        th.join(60)
    assert box["out"].code == "UNAVAILABLE", box        # killed mid-call, not after it finished
    with own_orchestrator(hardened, tmp_path, db) as (_, target):
        assert via_bytes(target, f"{ORC}/CreateSession", orchestrator_pb2.CreateSessionRequest(query="a blue disc"),
                         metadata=md(hardened)).code == "OK"
    con = sqlite3.connect(db)
    try:
        sessions = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
        empty = con.execute("SELECT count(*) FROM sessions WHERE id NOT IN (SELECT session_id FROM rounds)").fetchone()
    finally:
        con.close()
    assert (sessions, empty[0]) == (1, 0)                # only the session that got its round
    assert not [p for p in (tmp_path / "s.sqlite.images").iterdir() if ".tmp" in p.name]


def test_delete_session_during_next_round_is_not_found_never_internal(hardened, tmp_path):
    with own_orchestrator(hardened, tmp_path, tmp_path / "s.sqlite") as (_, target):
        first = orchestrator_pb2.Session.FromString(_ok_bytes(target, f"{ORC}/CreateSession",
                                                              orchestrator_pb2.CreateSessionRequest(
                                                                  query="a red square", options=SLOW_ROUND), hardened))
        nxt = orchestrator_pb2.NextRoundRequest(session_id=first.session_id, query="a redder square")
        th, box = _call_during_render(hardened.stack, target, f"{ORC}/NextRound", nxt, md(hardened))
        deleted = _ok_bytes(target, f"{ORC}/DeleteSession",
                            orchestrator_pb2.DeleteSessionRequest(session_id=first.session_id), hardened)
        th.join(120)
        assert orchestrator_pb2.DeleteSessionResponse.FromString(deleted).deleted
        assert box["out"].code == "NOT_FOUND" and "while this round ran" in box["out"].message, box
        assert health_status(target) == 1


def _ok_bytes(target, method, req, hardened) -> bytes:
    ch = grpc.insecure_channel(target)
    try:
        return ch.unary_unary("/" + method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=bytes)(req, metadata=md(hardened), timeout=120)
    finally:
        ch.close()
