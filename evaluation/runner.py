"""Drive simulated dialogs for a set of targets and keep their results in dialogs.jsonl.

A *dialog source* turns one RunDialogRequest into a stream of Rounds: `GrpcDialogSource` calls
the orchestrator's RunDialog over gRPC (the default), `EngineDialogSource` runs the orchestrator's
Engine in this process (`--embedded`). The runner keeps `concurrency` dialogs in flight, retries
a dialog that failed for a transient reason (the orchestrator already retried each backend call;
this covers a restarting orchestrator), writes each finished dialog as one fsynced line, and on a
rerun skips every target already in the file. Seeds come from (base seed, target id, round) in
the orchestrator, so a resumed run produces the same ranks as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from prometheus_client import Counter, Gauge

from evaluation import metrics
from evaluation.records import DIALOGS, DialogLog, load_dialogs, ranks_of
from genir import contract
from genir.v1 import common_pb2, orchestrator_pb2
from orchestrator.datasets import Query

log = logging.getLogger("genir.eval")

MODES, MODE_ALIASES = contract.MODES, contract.MODE_ALIASES
HEADLINE_K = 10
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
IMAGES = "images"
# Codes worth running the dialog again for; anything else (bad input, unknown target) will fail again.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED}
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}

DIALOGS_TOTAL = Counter("genir_eval_dialogs_total", "Evaluation dialogs by outcome (ok, failed, skipped = "
                        "already finished by an earlier run).", ["status"])
HITS_AT_K = Gauge("genir_eval_hits_at_k", "Cumulative Hits@K (percent) over the dialogs finished so far.",
                  ["k", "round"])


class EvalError(Exception):
    """A setting or an input that makes the evaluation impossible; raised before any dialog runs."""


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class EvalConfig:
    mode: str = "genir"
    rounds: int = 10
    ks: tuple[int, ...] = (1, 5, 10)
    seed: int = 0
    concurrency: int = 4
    top_k: int = 10
    collection: str = ""
    width: int = 0
    height: int = 0
    num_inference_steps: int = 0
    image_weight: float | None = None   # fusion mode; None = 0.5
    text_weight: float | None = None
    preset: str = "paper"               # services/common/presets.py
    prompt_set: str = ""                # "" = the preset's
    max_new_tokens: int = 0             # 0 = the preset's per-stage budgets
    guidance: float | None = None       # None = the preset's (or the generator's)
    chatir_per_round: bool = False      # chatir: round t's string alone, not the joined prefix
    effective: dict = field(default_factory=dict)  # every value the services use (Orchestrator.Describe)
    label: str = ""               # name of this run in merged comparisons; "" = the mode
    retries: int = 3              # extra attempts per dialog on a transient failure
    retry_backoff_s: float = 1.0
    dialog_timeout_s: float = 3600.0
    progress: bool = True
    models: dict = field(default_factory=dict)
    corpus: str = ""              # fingerprint of the corpus list the target ids index (paths.corpus_fingerprint)

    @property
    def name(self) -> str:
        return self.label or self.mode

    def identity(self) -> dict:
        """What must match for dialogs from two runs to be the same experiment (resume, merge)."""
        keep = ("mode", "rounds", "seed", "top_k", "collection", "width", "height", "num_inference_steps",
                "image_weight", "text_weight", "preset", "prompt_set", "max_new_tokens", "guidance", "effective",
                "chatir_per_round", "corpus")
        d = asdict(self)
        return {k: d[k] for k in keep} | {"label": self.name}


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise EvalError(f"--k: {text!r} must be comma-separated integers >= 1, e.g. 1,5,10") from None
    if not ks or ks[0] < 1:
        raise EvalError(f"--k: {text!r} must be comma-separated integers >= 1, e.g. 1,5,10")
    return tuple(ks)


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise EvalError(f"--shard: {text!r} must be I/N with 0 <= I < N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise EvalError(f"--shard: {text!r} must be I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def select_targets(queries: Sequence[Query], limit: int | None = None, shard: tuple[int, int] = (0, 1)) -> list[Query]:
    """The targets of this run: the first `limit` queries (file order), then every N-th from I.

    Limit before sharding, so the shards of `--limit L --shard I/N` partition exactly the targets of
    `--limit L`; round-robin keeps the shards within one dialog of each other in size.
    """
    chosen = list(queries[:limit] if limit else queries)
    seen: set[str] = set()
    for q in chosen:
        if q.img in seen:
            raise EvalError(f"queries: target {q.img!r} appears twice; each target is one dialog")
        seen.add(q.img)
    i, n = shard
    return chosen[i::n]


async def check_collection_corpus(retriever: str, collection: str, paths: Sequence[str], token: str | None = None,
                                  timeout: float = 30.0, *, ca: str | None = None, cert: str | None = None,
                                  key: str | None = None) -> None:
    """Refuse (EvalError) a corpus list other than the one the collection was indexed from, naming
    the first difference; the orchestrator checks the same on every dialog, this says where.
    `ca`/`cert`/`key`: TLS to the retriever, as to the orchestrator."""
    from genir.v1 import retriever_pb2, retriever_pb2_grpc
    from services.common.channels import open_channel
    from services.common.paths import corpus_fingerprint, first_difference_paged

    meta = (("authorization", f"Bearer {token}"),) if token else None
    async with open_channel(retriever, ca=ca, cert=cert, key=key, metrics=False) as ch:
        stub = retriever_pb2_grpc.RetrieverStub(ch)

        async def info(offset: int = 0, limit: int = 0):
            return await stub.CollectionInfo(retriever_pb2.CollectionInfoRequest(
                collection=collection, paths_offset=offset, paths_limit=limit), timeout=timeout, metadata=meta)

        try:
            head = await info()
        except grpc.aio.AioRpcError as e:
            log.warning("retriever %s: corpus of collection %r not checked here (%s)", retriever, collection,
                        e.code().name)
            return
        if not head.corpus_fingerprint:
            raise EvalError(f"collection {collection!r} records no corpus list (written by Upsert or by an "
                            f"unfinished `genir index`); index it with `genir index`")
        if head.corpus_fingerprint != corpus_fingerprint(paths):
            diff = await first_difference_paged(paths, head.corpus_size, lambda o, n: _paths(info, o, n))
            raise EvalError(f"--corpus is not the list collection {collection!r} was indexed from: {diff}")


async def _paths(info, offset: int, limit: int):
    return (await info(offset, limit)).paths


def check_queries(queries: Sequence[Query], cfg: EvalConfig) -> None:
    if cfg.mode not in MODES:
        raise EvalError(f"--mode: {cfg.mode!r} is not one of {', '.join(MODES)}")
    if not 0 <= cfg.rounds <= contract.MAX_DIALOG_ROUNDS:
        raise EvalError(f"--rounds: {cfg.rounds} is out of range [0, {contract.MAX_DIALOG_ROUNDS}]")
    if cfg.mode == "chatir":
        need = contract.chatir_dialog_length(cfg.rounds)
        short = [q for q in queries if len(q.dialog) < need]
        if short:
            q = short[0]
            raise EvalError(f"chatir mode needs {need} dialog strings per target; {q.img!r} has "
                            f"{len(q.dialog)} ({len(short)} target(s) too short)")


def session_options(c: EvalConfig) -> orchestrator_pb2.SessionOptions:
    """The SessionOptions every dialog of the run sends (unset = the preset decides)."""
    opts = orchestrator_pb2.SessionOptions(
        collection=c.collection, top_k=c.top_k, image_delivery=common_pb2.IMAGE_DELIVERY_INLINE, seed=c.seed,
        width=c.width, height=c.height, num_inference_steps=c.num_inference_steps, preset=c.preset,
        prompt_set=c.prompt_set, max_new_tokens=c.max_new_tokens, chatir_per_round=c.chatir_per_round)
    for name, value in (("image_weight", c.image_weight), ("text_weight", c.text_weight),
                        ("guidance_scale", c.guidance)):
        if value is not None:
            setattr(opts, name, value)
    return opts


# --------------------------------------------------------------------------- dialog sources
class GrpcDialogSource:
    """Dialogs from a running orchestrator's RunDialog stream (through genir.client.Client)."""

    def __init__(self, target: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 token: str | None = None, max_message_mb: int = 64):
        from genir.client import Client

        self.target = target
        self.client = Client(target, token=token, ca=ca, cert=cert, key=key, max_message_mb=max_message_mb)

    async def run_dialog(self, request, timeout: float) -> AsyncIterator[orchestrator_pb2.Round]:
        async for rnd in self.client.run_dialog(request, timeout=timeout):
            yield rnd

    async def fetch_image(self, ref: str) -> common_pb2.Image:
        return await self.client.get_image(ref)

    async def describe(self, mode: str, options) -> tuple[dict[str, str], dict]:
        return await self.client.describe(mode, options)

    async def close(self) -> None:
        await self.client.close()


class EngineDialogSource:
    """Dialogs from the orchestrator's Engine in this process (no orchestrator server)."""

    def __init__(self, engine):
        self.engine = engine

    async def describe(self, mode: str, options) -> tuple[dict[str, str], dict]:
        return await self.engine.describe(mode, options)

    async def run_dialog(self, request, timeout: float) -> AsyncIterator[orchestrator_pb2.Round]:
        # The runner bounds the whole dialog with its own timeout.
        async for rnd in self.engine.run_dialog(request):
            yield rnd

    async def fetch_image(self, ref: str) -> common_pb2.Image:
        raise EvalError(f"image {ref!r} came by reference; the embedded engine should return inline images")

    async def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    code = getattr(exc, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, (ConnectionError, OSError)):
        return grpc.StatusCode.UNAVAILABLE
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    code = status_code(exc)
    return f"{code.name}: {exc}" if code else f"{type(exc).__name__}: {exc}"


class PermanentDialogError(Exception):
    """The orchestrator answered, but not with a usable dialog (e.g. no target_rank)."""


# --------------------------------------------------------------------------- runner
@dataclass
class RunResult:
    finished: dict[int, dict]       # target id -> record, for this run's targets only
    failed: dict[int, str]          # target id -> why
    targets: list[Query]
    new: int = 0                    # dialogs finished by this process
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and len(self.finished) == len(self.targets)


class EvalRunner:
    def __init__(self, source, targets: Sequence[Query], cfg: EvalConfig, out_dir: str | Path):
        self.source = source
        self.targets = list(targets)
        self.cfg = cfg
        self.out = Path(out_dir)
        self.images = self.out / IMAGES
        self.finished: dict[int, dict] = {}
        self.failed: dict[int, str] = {}
        self._rounds_done = 0
        self._hits: dict[int, list[int]] = {}
        self._n_counted = 0

    # ---- state on disk
    def _check_run_file(self) -> None:
        """A folder holds one experiment; resuming with other settings would mix two of them."""
        path = self.out / RUN_FILE
        ident = self.cfg.identity()
        if path.exists():
            old = json.loads(path.read_text()).get("identity", {})
            diff = {k: (old.get(k), v) for k, v in ident.items() if old.get(k) != v}
            if diff:
                shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
                raise EvalError(f"{self.out} holds a run with other settings ({shown}); use another --out")

    def _write_run_file(self, extra: dict) -> None:
        info = {"identity": self.cfg.identity(), "ks": list(self.cfg.ks), "models": self.cfg.models,
                "concurrency": self.cfg.concurrency, **extra}
        tmp = self.out / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.out / RUN_FILE)

    def load_finished(self) -> dict[int, dict]:
        wanted = {q.target_id for q in self.targets}
        done = load_dialogs(self.out / DIALOGS, repair=True)
        n_rounds = self.cfg.rounds + 1
        for tid, rec in done.items():
            if len(rec.get("rounds", [])) != n_rounds:
                raise EvalError(f"{self.out / DIALOGS}: target {tid} has {len(rec.get('rounds', []))} rounds, "
                                f"this run expects {n_rounds}; use another --out")
        return {tid: rec for tid, rec in done.items() if tid in wanted}

    # ---- one dialog
    def request_for(self, q: Query) -> orchestrator_pb2.RunDialogRequest:
        c = self.cfg
        opts = session_options(c)
        return orchestrator_pb2.RunDialogRequest(
            target_id=str(q.target_id), mode=c.mode, rounds=c.rounds,
            dialog=list(q.dialog[: c.rounds + 1]) if c.mode == "chatir" else [], options=opts,
            corpus_fingerprint=c.corpus)

    async def _image_bytes(self, img: common_pb2.Image) -> tuple[bytes, str]:
        if not img.data and img.ref:
            img = await self.source.fetch_image(img.ref)
        return img.data, img.mime_type

    async def _collect(self, q: Query) -> dict:
        async with asyncio.timeout(self.cfg.dialog_timeout_s):
            return await self._collect_rounds(q)

    async def _collect_rounds(self, q: Query) -> dict:
        rounds, started = [], time.monotonic()
        best = None
        async for rnd in self.source.run_dialog(self.request_for(q), timeout=self.cfg.dialog_timeout_s):
            if rnd.index != len(rounds):
                raise PermanentDialogError(f"round {rnd.index} arrived where round {len(rounds)} was expected")
            if not rnd.HasField("target_rank"):
                raise PermanentDialogError(f"round {rnd.index} carries no target_rank")
            rank = int(rnd.target_rank)
            best = rank if best is None else min(best, rank)
            image = None
            if rnd.HasField("generated"):
                data, mime = await self._image_bytes(rnd.generated)
                if data:
                    image = self._save_image(q.target_id, rnd.index, data, mime)
            timings: dict[str, float] = {}
            for t in rnd.timings:
                timings[t.stage] = round(timings.get(t.stage, 0.0) + t.seconds, 6)
            rounds.append({
                "index": rnd.index, "query": rnd.query, "feedback": rnd.feedback, "rank": rank,
                "hit": best < HEADLINE_K, "seed": int(rnd.seed), "prompt_id": rnd.prompt_id,
                "timings": timings, "image": image,
                "hits": [{"id": h.id, "score": round(float(h.score), 6), "rank": h.rank,
                          "path": h.payload.get("path", "")} for h in rnd.hits[:10]],
            })
        if len(rounds) != self.cfg.rounds + 1:
            raise PermanentDialogError(f"stream ended after {len(rounds)} of {self.cfg.rounds + 1} rounds")
        return {"target_id": q.target_id, "img": q.img, "mode": self.cfg.mode, "label": self.cfg.name,
                "seed": self.cfg.seed, "rounds": rounds, "seconds": round(time.monotonic() - started, 3)}

    def _save_image(self, target_id: int, index: int, data: bytes, mime: str) -> str:
        rel = f"{IMAGES}/{target_id}_{index}{_EXT.get(mime, '.png')}"
        path = self.out / rel
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return rel

    async def run_one(self, q: Query) -> dict | None:
        """The finished record, or None after recording why it failed."""
        attempts = 1 + max(0, self.cfg.retries)
        for attempt in range(1, attempts + 1):
            try:
                return await self._collect(q)
            except PermanentDialogError as e:
                self.failed[q.target_id] = f"{q.img}: {e}"
                return None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - classified below; never lose the reason
                code = status_code(e)
                why = describe(e)
                if code == grpc.StatusCode.FAILED_PRECONDITION and why.startswith("FAILED_PRECONDITION: corpus:"):
                    # every dialog would fail the same way, and a rerun cannot help: stop the run
                    raise EvalError(why.split(": ", 1)[1]) from None
                if code in RETRYABLE and attempt < attempts:
                    delay = self.cfg.retry_backoff_s * 2 ** (attempt - 1)
                    log.warning("target %d (%s) attempt %d/%d failed (%s); retrying in %.1fs",
                                q.target_id, q.img, attempt, attempts, why, delay)
                    await asyncio.sleep(delay)
                    continue
                if code is None:
                    log.exception("target %d (%s) failed", q.target_id, q.img)
                self.failed[q.target_id] = f"{q.img}: {why}" + (f" (after {attempt} attempts)" if attempt > 1 else "")
                return None
        return None

    # ---- the whole run
    def _count_hits(self, rec: dict) -> None:
        """Add one dialog to the running per-(K, round) hit counts behind the Hits@K gauges."""
        best = metrics.best_ranks([ranks_of(rec)])[0]
        for k in self.cfg.ks:
            counts = self._hits.setdefault(k, [0] * len(best))
            for t, b in enumerate(best):
                counts[t] += b < k
        self._n_counted += 1

    def _update_gauges(self) -> None:
        if not self._n_counted:
            return
        for k, counts in self._hits.items():
            for t, c in enumerate(counts):
                HITS_AT_K.labels(k=str(k), round=str(t)).set(100.0 * c / self._n_counted)

    def _lock(self):
        """One writer per folder: a second job on the same --out would interleave dialogs.jsonl."""
        import fcntl

        f = open(self.out / LOCK_FILE, "a")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise EvalError(f"another genir eval is writing to {self.out}; wait for it or use another --out") from None
        return f

    async def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            return await self._run()
        finally:
            lock.close()

    async def _run(self) -> RunResult:
        self.images.mkdir(exist_ok=True)
        self._check_run_file()
        self.finished = self.load_finished()
        run_info = {"n_targets_selected": len(self.targets), "targets": [q.target_id for q in self.targets]}
        self._write_run_file(run_info)
        pending = [q for q in self.targets if q.target_id not in self.finished]
        if self.finished:
            DIALOGS_TOTAL.labels(status="skipped").inc(len(self.finished))
            log.info("resuming: %d of %d dialogs already finished", len(self.finished), len(self.targets))
        for s in ("ok", "failed"):
            DIALOGS_TOTAL.labels(status=s).inc(0)  # export the series from the start
        for rec in self.finished.values():
            self._count_hits(rec)
        self._update_gauges()
        started = time.monotonic()
        bar = _progress(len(self.targets), len(self.finished), self.cfg)
        queue: asyncio.Queue[Query] = asyncio.Queue()
        for q in pending:
            queue.put_nowait(q)
        new = 0

        with DialogLog(self.out / DIALOGS) as dlog:
            async def worker():
                nonlocal new
                while True:
                    try:
                        q = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    rec = await self.run_one(q)
                    if rec is None:
                        DIALOGS_TOTAL.labels(status="failed").inc()
                        log.error("dialog for target %d failed: %s", q.target_id, self.failed[q.target_id])
                    else:
                        dlog.append(rec)
                        self.finished[q.target_id] = rec
                        new += 1
                        self._rounds_done += len(rec["rounds"])
                        DIALOGS_TOTAL.labels(status="ok").inc()
                        self._count_hits(rec)
                        self._update_gauges()
                    if bar is not None:
                        el = max(time.monotonic() - started, 1e-9)
                        bar.set_postfix(rounds_s=f"{self._rounds_done / el:.2f}", failed=len(self.failed),
                                        refresh=False)
                        bar.update(1)

            try:
                await asyncio.gather(*(worker() for _ in range(max(1, min(self.cfg.concurrency, len(pending) or 1)))))
            finally:
                if bar is not None:
                    bar.close()
        self._write_run_file(run_info | {
            "n_finished": len(self.finished), "new_this_run": new, "seconds_this_run": round(time.monotonic() - started, 3),
            "failed": {str(k): v for k, v in sorted(self.failed.items())}})
        return RunResult(finished=self.finished, failed=self.failed, targets=self.targets, new=new,
                         seconds=time.monotonic() - started)


def _progress(total: int, initial: int, cfg: EvalConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="dialog", desc=f"eval {cfg.name}", dynamic_ncols=True,
                smoothing=0.1)
