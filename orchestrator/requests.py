"""The orchestrator's pure request validators: one `parse_<rpc>` per genir.v1.Orchestrator RPC.

Each takes the request proto (and the server's settings it depends on: the default collection,
the corpus list) and returns plain values, or raises a typed error from services/common/errors.
No I/O and no engine: the servicer calls them, and so does the engine for RunDialog and Describe,
since `genir eval --embedded` and the benchmarks drive the engine without a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from genir import contract
from genir.v1 import orchestrator_pb2
from orchestrator.corpus_images import MAX_SIDE, MIN_SIDE
from orchestrator.modes import fusion_weights, mode_name
from orchestrator.sessions import parse_image_ref, parse_session_id
from orchestrator.settings import resolve_preset
from services.common import validation
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


def resolve_options(opts: orchestrator_pb2.SessionOptions, default_collection: str) -> orchestrator_pb2.SessionOptions:
    """Validated copy of the options with defaults filled in (collection, top_k, preset, prompt set)."""
    out = orchestrator_pb2.SessionOptions()
    out.CopyFrom(opts)
    out.collection = (opts.collection or default_collection).strip()
    if not out.collection:
        raise InvalidArgument("options.collection: empty and the orchestrator has no default collection (--collection)")
    out.top_k = validation.int_range(opts.top_k or contract.DEFAULT_TOP_K, "options.top_k", 1, contract.MAX_TOP_K)
    for name in ("width", "height", "num_inference_steps"):
        validation.int_range(getattr(opts, name), f"options.{name}", 0, 8192)
    for name in ("image_weight", "text_weight"):
        validation.float_range(getattr(opts, name), f"options.{name}", 0.0, 1000.0)
    if opts.HasField("guidance_scale"):
        validation.float_range(opts.guidance_scale, "options.guidance_scale", 0.0, 100.0)
    if opts.HasField("seed"):
        validation.int_range(opts.seed, "options.seed", 0, contract.MAX_SEED)
    fusion_weights(opts)
    validation.int_range(opts.max_new_tokens, "options.max_new_tokens", 0, contract.MAX_SESSION_NEW_TOKENS)
    resolve_preset(out)
    validation.image_delivery(opts.image_delivery, "options.image_delivery")
    return out


def in_corpus(cid: int, value: str, field: str, corpus) -> int:
    """`cid` (parsed from `value`) when it names an image of `corpus`."""
    if cid >= len(corpus):
        raise NotFound(f"{field}: {value!r} is not in the corpus (ids 0..{len(corpus) - 1})")
    return cid


# ---------------------------------------------------------------------- sessions
def parse_create_session(request, default_collection: str) -> tuple[str, str, orchestrator_pb2.SessionOptions]:
    """(query, mode, resolved options) of a CreateSessionRequest; the seed stays unset when not given."""
    query = validation.text(request.query, "query", max_chars=contract.MAX_QUERY_CHARS)
    mode = mode_name(request.mode, session=True)
    return query, mode, resolve_options(request.options, default_collection)


def parse_next_round(request) -> tuple[str, str, str]:
    """(session id, which input, its text) of a NextRoundRequest; the input is "query" (a full new
    description) or "feedback"."""
    which = request.WhichOneof("input")
    if which is None:
        raise InvalidArgument("input: set either query (a full new description) or feedback (short feedback)")
    text = validation.text(getattr(request, which), which, max_chars=contract.MAX_QUERY_CHARS)
    validation.image_delivery(request.image_delivery)
    return parse_session_id(request.session_id), which, text


def parse_get_session(request) -> tuple[str, int]:
    """(session id, image delivery asked for) of a GetSessionRequest."""
    delivery = validation.image_delivery(request.image_delivery)
    return parse_session_id(request.session_id), delivery


def parse_delete_session(request) -> str:
    return parse_session_id(request.session_id)


def parse_get_image(request) -> str:
    return parse_image_ref(request.ref)


def parse_get_corpus_image(request, default_collection: str, corpus) -> tuple[str, int]:
    """(relative corpus path, max_side) of a GetCorpusImageRequest."""
    collection = (request.collection or default_collection).strip()
    cid = validation.corpus_id(request.id, "id")
    max_side = request.max_side
    if max_side:
        validation.int_range(max_side, "max_side", MIN_SIDE, MAX_SIDE)
    if corpus is None:
        raise FailedPrecondition("GetCorpusImage: the orchestrator has no corpus (start it with --corpus)")
    if collection != default_collection:
        raise FailedPrecondition(f"collection: corpus images are served for {default_collection!r} only "
                                 f"(the collection of the orchestrator's --corpus), not {collection!r}")
    return corpus.path_of(in_corpus(cid, request.id, "id", corpus)), max_side


# ---------------------------------------------------------------------- simulated dialogs
@dataclass(frozen=True)
class DialogRequest:
    """A validated RunDialogRequest; `options` are resolved, their seed set (0 when not given)."""
    mode: str
    rounds: int
    options: orchestrator_pb2.SessionOptions
    target_id: str
    dialog: tuple[str, ...]


def parse_run_dialog(request, default_collection: str, corpus) -> DialogRequest:
    name = mode_name(request.mode, session=False)
    rounds = validation.int_range(request.rounds, "rounds", 0, contract.MAX_DIALOG_ROUNDS)
    options = resolve_options(request.options, default_collection)
    if not (request.target_id or "").strip():
        raise InvalidArgument("target_id: required (the corpus id of the target image)")
    cid = validation.corpus_id(request.target_id, "target_id")
    if corpus is None:
        raise FailedPrecondition("target_id: the orchestrator has no corpus (start it with --corpus)")
    target_id = str(in_corpus(cid, request.target_id, "target_id", corpus))
    dialog = tuple(request.dialog)
    if name == "chatir":
        need = contract.chatir_dialog_length(rounds)
        if len(dialog) < need:
            raise InvalidArgument(f"dialog: chatir mode needs at least rounds + 1 = {need} strings "
                                  f"(caption + one Q/A per round), got {len(dialog)}")
        for i, s in enumerate(dialog[:need]):
            validation.text(s, f"dialog[{i}]")
    # A dialog without a seed replays seed 0: the same request gives the same dialog.
    options.seed = options.seed if options.HasField("seed") else 0
    return DialogRequest(name, rounds, options, target_id, dialog)


def parse_describe(request, default_collection: str) -> tuple[str, orchestrator_pb2.SessionOptions]:
    """(mode, resolved options) of a DescribeRequest: the dialog whose settings are asked for."""
    return mode_name(request.mode, session=False), resolve_options(request.options, default_collection)
