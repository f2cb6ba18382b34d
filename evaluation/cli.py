"""`genir eval` (= `genir eval run`): run a benchmark evaluation.

    genir eval --queries Q.json --corpus C.json --image-root DIR --mode genir --rounds 10 --out DIR
               [--limit N] [--concurrency C] [--shard I/N] [--k 1,5,10] [--seed S] [--export-dataset]
               [--orchestrator HOST:PORT | --embedded]

Inputs are validated before any dialog runs (a target missing from the corpus is named). The run
resumes from OUT/dialogs.jsonl; failed dialogs are listed and make the exit code 1, so a rerun with
the same command completes them. Exit codes: 0 all done, 1 some dialogs failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from evaluation.runner import (
    MODE_ALIASES,
    MODES,
    EngineDialogSource,
    EvalConfig,
    EvalError,
    EvalRunner,
    GrpcDialogSource,
    check_collection_corpus,
    check_queries,
    parse_ks,
    parse_shard,
    select_targets,
    session_options,
)
from genir import contract
from orchestrator.datasets import DatasetError, load_corpus, read_queries, resolve_queries
from services.common.config import flags, read_secret, setup_logging
from services.common.errors import InvalidArgument
from services.common.metrics import serve_metrics
from services.common.paths import corpus_fingerprint, resolve_in_root

log = logging.getLogger("genir.eval")
SERVICE = "eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = flags(parser, SERVICE)
    f("queries", help="queries JSON: [{'img': path in corpus, 'dialog': [...]}, ...] (ChatIR/GenIR format)")
    f("corpus", help="corpus JSON: array of image paths; the index is the corpus id")
    f("image-root", default=None, help="folder the corpus paths are relative to (checks targets exist; "
      "thumbnails in the report)")
    f("mode", default="genir", choices=MODES + tuple(MODE_ALIASES), help="dialog mode ('hybrid' is the old "
      "name of 'fusion'; the paper's hybrid is `genir eval compare --hybrid`)")
    f("preset", default="paper", help="settings preset: paper (the paper's rendering per generator family and "
      "the scripts' refiner budgets) or service (each service's defaults); explicit flags win")
    f("prompt-set", default="", help="refiner prompt set: paper or v1 ('' = the preset's)")
    f("guidance", default=None, type=float, help="guidance scale (default: the preset's)")
    f("size", default=None, help="rendering size N or WxH (default: the preset's)")
    f("chatir-queries", default="concat", choices=("concat", "per-round"),
      help="chatir mode: concat = caption + first t Q/A joined (ChatIR); per-round = the t-th string alone (PlugIR)")
    f("max-new-tokens", default=0, type=int, help="refiner token budget for every stage (0 = the preset's per stage)")
    f("rounds", default=10, type=int, help="feedback rounds after round 0 (0..20; the paper uses 10)")
    f("out", help="output folder (dialogs.jsonl, summary.json, summary.csv, hits_at_k.png, report.html)")
    f("limit", default=None, type=int, help="only the first N targets of the queries file")
    f("concurrency", default=48, type=int,
      help="dialogs in flight; ~6x the services' batch size keeps the slowest one's batches full while "
           "the others work (benchmarks/bench_eval.py)")
    f("shard", default=None, help="I/N: run the I-th of N deterministic parts of the targets (merge afterwards)")
    f("k", default="1,5,10", help="cut-offs for Hits/Recall/MRR, comma-separated (headline 10)")
    f("seed", default=0, type=int, help="base seed; round seeds derive from (seed, target id, round)")
    parser.add_argument("--export-dataset", nargs="?", const="", default=None, metavar="DIR",
                        help="also write the GenIR dataset layout (default DIR: OUT/dataset)")
    f("orchestrator", default="127.0.0.1:50050", help="orchestrator HOST:PORT")
    f("embedded", default=False, bool_flag=True, help="run the orchestrator's engine in this process "
      "instead of calling a running orchestrator (backends from --generator/--refiner/--retriever)")
    f("generator", default=None, help="generator HOST:PORT (--embedded: default 127.0.0.1:50051; otherwise "
      "only asked for its model id, for the summary)")
    f("refiner", default=None, help="refiner HOST:PORT (--embedded: default 127.0.0.1:50052; otherwise "
      "only asked for its model id and defaults, for the summary)")
    f("retriever", default=None, help="retriever HOST:PORT (--embedded: default 127.0.0.1:50053; otherwise "
      "only asked for the collection's model id and, with --collection, its corpus list)")
    f("collection", default="", help="retriever collection ('' = the orchestrator's default)")
    f("top-k", default=contract.DEFAULT_TOP_K, type=int, help=f"hits returned per round (1..{contract.MAX_TOP_K}); the rank is exact regardless")
    f("width", default=0, type=int, help="rendering width (0 = the preset's)")
    f("height", default=0, type=int, help="rendering height (0 = the preset's)")
    f("steps", default=0, type=int, help="inference steps (0 = the preset's)")
    f("image-weight", default=None, type=float, help="fusion mode: image weight (default 0.5; 0 allowed)")
    f("text-weight", default=None, type=float, help="fusion mode: text weight (default 0.5; 0 allowed)")
    f("label", default="", help="name of this run in merged comparisons (default: the mode)")
    f("models", default="", help="model ids to record in the summary, e.g. generator=sd35,refiner=gemma3-12b")
    f("retries", default=3, type=int, help="extra attempts for a dialog that failed transiently")
    f("retry-backoff", default=1.0, type=float, help="first retry delay in seconds (doubles per attempt)")
    f("dialog-timeout", default=3600.0, type=float, help="deadline for one whole dialog, seconds")
    f("metrics-port", default=9104, type=int, help="Prometheus /metrics port while the job runs (-1 disables)")
    f("metrics-host", default="127.0.0.1", help="metrics bind address")
    f("report-max-dialogs", default=200, type=int, help="dialogs shown in report.html (by target id)")
    f("progress", default=True, bool_flag=True, help="tqdm progress bar on stderr")
    parser.add_argument("--token-file", default=None,
                        help="file with the bearer token for an orchestrator with auth on (or $GENIR_EVAL_TOKEN; "
                             "never on the command line)")
    f("tls-ca", default=None, help="PEM CA to verify the orchestrator and --retriever (enables TLS)")
    f("tls-cert", default=None, help="PEM client certificate (mTLS)")
    f("tls-key", default=None, help="PEM client key (mTLS)")
    f("max-message-mb", default=64, type=int, help="max gRPC message size, MiB")
    f("log-level", default="INFO", help="logging level")


def parse_models(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise EvalError(f"--models: {part!r} must be ROLE=MODEL, e.g. generator=sd35-medium")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_size(text: str | None, width: int, height: int) -> tuple[int, int]:
    """--size N or WxH (wins over --width/--height)."""
    if not text:
        return width, height
    try:
        parts = [int(x) for x in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise EvalError(f"--size: {text!r} must be N or WxH with positive integers, e.g. 1024 or 1024x768")
    return (parts[0], parts[-1])


def mode_of(name: str) -> str:
    if name in MODE_ALIASES:
        print(f"genir eval: warning: --mode {name} is now called {MODE_ALIASES[name]} (score fusion of rendering "
              f"and text); the paper's hybrid is `genir eval compare --hybrid`", file=sys.stderr)
    return MODE_ALIASES.get(name, name)


def config_from_args(args) -> EvalConfig:
    if args.concurrency < 1:
        raise EvalError(f"--concurrency: {args.concurrency} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise EvalError(f"--limit: {args.limit} must be >= 1")
    if not 1 <= args.top_k <= contract.MAX_TOP_K:
        raise EvalError(f"--top-k: {args.top_k} is out of range [1, {contract.MAX_TOP_K}]")
    if not 0 <= args.max_new_tokens <= contract.MAX_SESSION_NEW_TOKENS:
        raise EvalError(f"--max-new-tokens: {args.max_new_tokens} is out of range [0, {contract.MAX_SESSION_NEW_TOKENS}]")
    width, height = parse_size(args.size, args.width, args.height)
    cfg = EvalConfig(mode=mode_of(args.mode), rounds=args.rounds, ks=parse_ks(args.k), seed=args.seed,
                      concurrency=args.concurrency, top_k=args.top_k, collection=args.collection,
                      width=width, height=height, num_inference_steps=args.steps,
                      image_weight=args.image_weight, text_weight=args.text_weight, label=args.label,
                      preset=args.preset, prompt_set=args.prompt_set, max_new_tokens=args.max_new_tokens,
                      guidance=args.guidance, chatir_per_round=args.chatir_queries == "per-round",
                      retries=args.retries, retry_backoff_s=args.retry_backoff,
                      dialog_timeout_s=args.dialog_timeout, progress=args.progress,
                      models=parse_models(args.models))
    check_options(cfg)
    return cfg


def check_options(cfg: EvalConfig):
    """The orchestrator's own validation of the options, before any dialog (bad preset, weights...)."""
    from orchestrator.requests import resolve_options
    from services.common.errors import ServiceError

    try:
        return resolve_options(session_options(cfg), cfg.collection or "-")
    except ServiceError as e:
        raise EvalError(f"settings: {e.message}") from None


def prepare(args):
    """Everything that can be wrong with the inputs, checked before any dialog: (cfg, targets)."""
    for name in ("queries", "corpus", "out"):
        if not getattr(args, name):
            raise EvalError(f"--{name} is required")
    cfg = config_from_args(args)
    shard = parse_shard(args.shard)
    corpus = load_corpus(args.corpus)
    cfg = replace(cfg, corpus=corpus_fingerprint(corpus.paths))
    # Only the targets this run will use must be in the corpus (--limit / --shard choose them first).
    targets = resolve_queries(select_targets(read_queries(args.queries), args.limit, shard), corpus, args.queries)
    if not targets:
        raise EvalError(f"no targets: {args.queries} holds no queries" + (
            f" for shard {args.shard}" if args.shard else ""))
    check_queries(targets, cfg)
    if args.embedded:
        from evaluation.embedded import check_args

        check_args(args)
    if args.image_root:
        root = Path(args.image_root)
        if not root.is_dir():
            raise EvalError(f"--image-root: {root} is not a folder")
        missing = [q.img for q in targets if not _is_file_in(root, q.img)]
        if missing:
            raise EvalError(f"--image-root {root}: {len(missing)} target image(s) missing, first {missing[0]!r}")
    return cfg, targets, shard


def _is_file_in(root: Path, rel: str) -> bool:
    try:
        return resolve_in_root(root, rel, "target").is_file()
    except InvalidArgument:
        return False


def make_source(args):
    if not args.embedded:
        return GrpcDialogSource(args.orchestrator, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
                                token=args.token, max_message_mb=args.max_message_mb)
    from evaluation.embedded import make_engine

    return EngineDialogSource(make_engine(args))


def finish(out: Path, result, cfg: EvalConfig, image_root, export, report_max: int) -> None:
    """summary.json/csv, plot, report and (optionally) the dataset export from the finished dialogs."""
    from evaluation import outputs
    from evaluation.export import export_dataset
    from evaluation.report import write_report

    summary = outputs.label_summary(result.finished, cfg.ks, cfg.identity(), cfg.models)
    outputs.write_all(out, summary)
    write_report(out, summary, {cfg.name: {t: (r, out) for t, r in result.finished.items()}},
                 image_root=image_root, max_dialogs=report_max)
    if export is not None:
        export_dataset(Path(export) if export else out / "dataset", result.finished, out, summary)
    return summary


async def _with_models(source, cfg: EvalConfig) -> EvalConfig:
    """Add the model ids the backends report (--models wins where both name a role) and every
    effective setting the run will use, asked through the same path as the dialogs (the
    orchestrator's Describe, or the in-process engine), so they are what the run really uses."""
    import grpc

    try:
        found, effective = await source.describe(cfg.mode, check_options(cfg))
    except grpc.aio.AioRpcError as e:
        if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED):
            raise EvalError(f"orchestrator Describe: {e.details()}") from None
        log.warning("orchestrator Describe: %s; the run's settings are recorded as unknown", e.code().name)
        found, effective = {}, {"unknown": f"the orchestrator did not describe the run ({e.code().name})"}
    return replace(cfg, models=found | cfg.models, effective=effective)


async def _run(args, cfg, targets, shard) -> int:
    if args.retriever and args.collection and not args.embedded:
        # says where the lists differ; without --retriever the orchestrator refuses with the counts
        await check_collection_corpus(args.retriever, args.collection, load_corpus(args.corpus).paths, args.token,
                                      ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    source = make_source(args)
    try:
        cfg = await _with_models(source, cfg)
        runner = EvalRunner(source, targets, cfg, args.out)
        result = await runner.run()
    finally:
        await source.close()
    out = Path(args.out)
    summary = finish(out, result, cfg, args.image_root, args.export_dataset, args.report_max_dialogs)
    # run.json (written by the runner) holds what does not belong in the reproducible summary
    info = json.loads((out / "run.json").read_text())
    info["shard"] = f"{shard[0]}/{shard[1]}"
    from evaluation.outputs import write_json

    write_json(out / "run.json", info)
    k = summary["headline_k"]
    hits = summary["hits_at_k"][str(k)]
    if hits:
        print(f"{cfg.name}: n_targets={summary['n_targets']} Hits@{k} round 0 = {hits[0]:.2f} -> round "
              f"{len(hits) - 1} = {hits[-1]:.2f}; BRI={summary['bri']}; results in {out}")
    else:
        print(f"{cfg.name}: no finished dialogs; results in {out}")
    if result.failed:
        print(f"{len(result.failed)} dialog(s) failed and were not written; rerun the same command to "
              f"complete them:", file=sys.stderr)
        for tid, why in sorted(result.failed.items()):
            print(f"  target {tid}: {why}", file=sys.stderr)
        return 1
    return 0


def main(args) -> int:
    setup_logging(args.log_level)
    args.token = read_secret(args.token_file, "GENIR_EVAL_TOKEN")
    try:
        cfg, targets, shard = prepare(args)
    except (EvalError, DatasetError) as e:
        print(f"genir eval: {e}", file=sys.stderr)
        return 2
    try:
        serve_metrics(args.metrics_port, args.metrics_host)  # the same endpoint every service serves
    except OSError as e:  # a second local job on the same port must still run
        log.warning("metrics port %d unavailable (%s); metrics not exposed", args.metrics_port, e)
    log.info("eval %s: %d target(s), shard %d/%d, %d round(s), concurrency %d, out %s", cfg.name, len(targets),
             shard[0], shard[1], cfg.rounds + 1, cfg.concurrency, args.out)
    try:
        return asyncio.run(_run(args, cfg, targets, shard))
    except EvalError as e:
        print(f"genir eval: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genir eval: interrupted; {_finished(args.out)} finished dialog(s) are kept in "
              f"{Path(args.out) / 'dialogs.jsonl'}; rerun the same command to resume", file=sys.stderr)
        return 130


def _finished(out) -> int:
    try:
        with open(Path(out) / "dialogs.jsonl", "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0
