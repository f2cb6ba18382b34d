"""`genir` command line: one entry for every service, tool and job.

Each command lives in its own module exposing `add_arguments(parser)` and `main(args) -> int`;
modules are imported only when their command runs, so `genir --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command path -> (module, help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("serve", "generator"): ("services.generator.server", "text-to-image service (diffusers)"),
    ("serve", "refiner"): ("services.refiner.server", "caption/compare/refine service (talks to Triton)"),
    ("serve", "retriever"): ("services.retriever.server", "embedding + Qdrant search service"),
    ("serve", "orchestrator"): ("orchestrator.server", "dialog rounds, sessions, evaluation API"),
    ("serve", "web"): ("genir.web.app", "web page for searching a collection by description (talks to the orchestrator)"),
    ("serve", "triton"): ("stack.triton", "local Triton server with the Gemma-3 model"),
    ("models", "check"): ("genir.models_check", "check a models folder and print what each service will load"),
    ("tiny-models", "build"): ("genir.tiny_models.cli", "build tiny random HF checkpoints for tests/demo"),
    ("index",): ("genir.index_cli", "embed a corpus (a folder of photos or a ChatIR list) into a collection"),
    ("eval", "run"): ("evaluation.cli", "run a benchmark evaluation (also: genir eval ...)"),
    ("eval", "merge"): ("evaluation.merge", "merge shard/mode result folders"),
    ("eval", "compare"): ("evaluation.compare", "side-by-side table of modes per round"),
    ("eval", "rescore"): ("evaluation.rescore", "score a run's queries by text->image retrieval"),
    ("eval", "submit"): ("evaluation.submit", "run an evaluation as a Kubernetes Indexed Job"),
    ("up",): ("stack.up", "start all services as local processes"),
    ("demo",): ("stack.demo", "end-to-end demo on tiny models"),
}

GROUP_HELP = {"serve": "run one service", "tiny-models": "tiny model checkpoints", "models": "model folders",
              "eval": "batch evaluation (genir eval --queries ... runs one)"}


def _attach(sub, path, module, help_text):
    parser = sub.add_parser(path[-1], help=help_text, description=help_text)
    parser.set_defaults(_module=module, _parser=parser)
    return parser


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genir", description="GenIR: mental image retrieval with "
                                     "generative visual feedback, as gRPC services.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (module, help_text) in COMMANDS.items():
        if len(path) == 1:
            target = _attach(sub, path, module, help_text)
        else:
            if path[0] not in groups:
                gp = sub.add_parser(path[0], help=GROUP_HELP.get(path[0], ""))
                groups[path[0]] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            target = _attach(groups[path[0]], path, module, help_text)
        # Only the chosen command's module is imported, to add its flags.
        if argv[: len(path)] == list(path) and not any(a in ("-h", "--help") for a in argv[:1]):
            _add_module_arguments(target, module)
    return parser


def _add_module_arguments(parser, module):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            parser.set_defaults(_missing=f"{module} is not built yet")
            return
        raise
    mod.add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("GENIR_DIE_WITH_PARENT"):  # a child of `genir up`: stop when it dies
        from stack.up import die_with_parent

        die_with_parent()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `genir eval --queries ...` is short for `genir eval run --queries ...`
    if argv[:1] == ["eval"] and (len(argv) == 1 or argv[1].startswith("-")) and not set(argv[1:2]) & {"-h", "--help"}:
        argv.insert(1, "run")
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0 if not argv else 2
    if getattr(args, "_missing", None):
        print(f"genir: not yet available: {args._missing}", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    return int(mod.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
