"""Generator backends: what renders the images behind genir.v1.Generator.

The service (validation, micro-batching, seeds, encoding, limits) is the same for every backend;
a backend only loads a model and renders compatible items in one call. `--backend` chooses it:

  diffusers          (default) services.generator.pipeline.Pipeline, any AutoPipelineForText2Image folder
  scalewise          services.generator.scalewise: a tiny scale-wise autoregressive model (not diffusers)
  NAME               an entry point NAME in the group `genir.generator_backends` of an installed package
  module:Class       a class importable from this process (e.g. mypkg.infinity:InfinityBackend)

A backend class is built with `Class.from_args(args)` when it has that classmethod (it sees every
generator flag), else `Class(args.model, model_id=args.model_id, device=args.device)`, and provides:

  load() -> self                   load the model (runs in a thread before the server is SERVING)
  limits: pipeline.Limits          size multiple, defaults, largest side, prompt token limit
  model_id: str
  generate_batch(items) -> [PIL]   render items of equal Item.key() in ONE call, in item order; the
                                   image of an item must depend only on its own prompt and seed
  count_tokens(text) -> int        tokens of `text` as the model's text encoder counts them
  describe() -> dict               model, pipeline_class (family), backend, device, dtype
  close()

docs/generators.md shows how to write one (Infinity as the example).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "genir.generator_backends"
BUILTIN = {"diffusers": "services.generator.pipeline:Pipeline",
           "scalewise": "services.generator.scalewise:ScaleWiseBackend"}
REQUIRED = ("load", "generate_batch", "count_tokens", "describe", "close")


class BackendError(ValueError):
    """--backend names nothing loadable, or a class without the backend interface."""


def resolve(name: str):
    """The backend class for `name` (see the module docstring)."""
    spec = BUILTIN.get(name or "diffusers")
    if spec is None and ":" not in name:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            known = sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            raise BackendError(f"--backend {name!r}: no such backend; known: {', '.join(known)}, "
                               f"or give module:Class")
        cls = found[0].load()
    else:
        module, _, attr = (spec or name).partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise BackendError(f"--backend {name!r}: cannot import {attr!r} from {module!r} ({e})") from None
    missing = [m for m in REQUIRED if not callable(getattr(cls, m, None))]
    if missing:
        raise BackendError(f"--backend {name!r}: {cls.__name__} lacks {', '.join(missing)}")
    return cls


def build_backend(args):
    cls = resolve(getattr(args, "backend", "") or "diffusers")
    if hasattr(cls, "from_args"):
        return cls.from_args(args)
    return cls(args.model, model_id=args.model_id, device=args.device)
