"""Triton Python-backend model: a Gemma-3 image-text-to-text checkpoint through transformers.

Tensors (the first dimension is the batch, B rows per request, usually 1):
  in   messages           STRING [B, 1]  JSON chat messages with {"type": "image"} placeholders
  in   images             STRING [B, N]  encoded images for the placeholders, in order; N may be 0;
                                         empty elements are ignored (padding); an element
                                         b"sha256:<64 hex>" names an image this instance already
                                         holds (see below)
  in   sampling           STRING [B, 1]  JSON {temperature, top_p, top_k, max_new_tokens,
                                         repetition_penalty, seed}; "{}" = defaults
  out  text               STRING [B, 1]
  out  prompt_tokens      INT32  [B, 1]
  out  completion_tokens  INT32  [B, 1]

Every row of every request in one execute() call runs in ONE left-padded generate(). Sampling is
done per row by `_RowSampler` (each row has its own torch.Generator seeded from its request), and
each row stops at its own max_new_tokens, so a seeded request gives the same text whatever it is
batched with. A malformed request (bad JSON, undecodable image, placeholder/image mismatch, values
out of range, prompt too long) gets its own INVALID_ARG error; the rest of the batch is answered.
Cancelled requests (client gone or deadline passed) are dropped before and during generation.

Float caveat: rows are only nearly independent of their batch-mates. In float32 no difference was
seen (CPU, and an H100 check); in bfloat16 on an H100, 2 of 12 seeded rows of a random tiny model
sampled differently batched than alone. The `batch_invariant` parameter runs rows one at a time
(exact reruns, e.g. for evaluations, at the cost of batching); `dtype float32` is the other way.

Images are decoded once: each image is keyed by the SHA-256 of its bytes, and its decoded,
preprocessed pixels stay in a bounded LRU (`image_cache_entries`, default 64), so a dialog's target,
sent with every caption, compare and refine call, is decoded and resized once, not once per call.
The vision tower's output for the image is kept with it (computed for one image at a time, so it
does not depend on batch-mates) and handed to generate() as `mm_encoder_outputs`, so the tower too
runs once per image, not once per call. Counters on Triton's metrics port:
genir_gemma3_image_cache_total{result="hit"|"miss"} (decodes) and
genir_gemma3_vision_features_total{result="hit"|"miss"} (tower runs).

Images cross the wire once: a client may send b"sha256:<hex of the image's SHA-256>" instead of
bytes it sent before. When this instance still holds that image (LRU, one cache per instance, empty
after a restart) it is used as if sent; otherwise the request fails with INVALID_ARG and a message
starting "unknown image sha256:", and the client resends the bytes (triton_client.py). How images
arrived: genir_gemma3_images_received_total{form="bytes"|"reference"|"unknown_reference"}.

Model path: the `model_path` parameter of config.pbtxt (see the comment there).
"""

import hashlib
import io
import json
import os
import secrets
from collections import OrderedDict

import numpy as np
import triton_python_backend_utils as pb_utils

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")
ROLES = ("system", "user", "assistant", "model")
CANCEL_CHECK_EVERY = 8  # generation steps between is_cancelled() polls (each is an IPC round trip)
IMAGE_CACHE_ENTRIES = 64  # decoded, preprocessed images kept (about 9.6 MB each at Gemma-3's 896 px)


REFERENCE_PREFIX = b"sha256:"  # an images element naming a held image: this prefix + 64 hex digits
UNKNOWN_IMAGE = "unknown image sha256:"  # the miss message's start; triton_client.py looks for it


class BadRequest(Exception):
    """A client mistake; answered with INVALID_ARG."""


def _reference(blob):
    """The SHA-256 digest an images element names, or None when the element is image bytes."""
    if len(blob) != len(REFERENCE_PREFIX) + 64 or not blob.startswith(REFERENCE_PREFIX):
        return None
    try:
        return bytes.fromhex(blob[len(REFERENCE_PREFIX):].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


class _OneByOne(Exception):
    """batch_invariant is on: run the rows of this execute() one at a time."""


# pb_utils.TritonError and friends are injected by the stub after this module is imported, so they
# may only be touched inside functions.
def _error(message, code_name="INVALID_ARG"):
    code = getattr(pb_utils.TritonError, code_name, None) if code_name else None
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _parameter(config, key, default):
    entry = config.get("parameters", {}).get(key)
    return default if entry is None else entry.get("string_value", default)


def _contract_parameter(config, key):
    """A JSON parameter written from genir/contract.py (by `genir serve triton`, or checked in)."""
    text = _parameter(config, key, None)
    if not text:
        raise pb_utils.TritonModelException(
            f"config.pbtxt has no {key!r} parameter: the sampling rules come from genir/contract.py; "
            "start Triton with `genir serve triton`, or use the repository's config.pbtxt")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise pb_utils.TritonModelException(f"config.pbtxt parameter {key!r} is not valid JSON ({e})") from None


class _Range:
    """A closed range, or one open at its low end: the contract's sampling ranges."""

    def __init__(self, lo, hi, lo_open):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def __contains__(self, value):
        return (self.lo < value if self.lo_open else self.lo <= value) and value <= self.hi

    def __str__(self):
        return f"{'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}]"


def _number(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


def _as_text(raw, field):
    if isinstance(raw, (bytes, bytearray)):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{field}: not UTF-8 text") from None
    return str(raw)


def resolve_model_path(value, model_dir):
    """Expand $$TRITON_MODEL_DIRECTORY and $VARS; relative paths are relative to the model's folder."""
    path = (value or "").replace("$$TRITON_MODEL_DIRECTORY", model_dir)
    path = os.path.expandvars(path)
    if not path or "$" in path:
        raise pb_utils.TritonModelException(
            f"model_path parameter {value!r} is empty or names an unset environment variable")
    return path if os.path.isabs(path) else os.path.join(model_dir, path)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(_parameter(config, "num_threads", "0") or 0)
        if threads > 0:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch is imported
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        if threads > 0:
            torch.set_num_threads(threads)
        on_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', 0)}" if on_gpu else "cpu")
        dtype_name = _parameter(config, "dtype", "auto")
        if dtype_name == "auto":
            dtype_name = "bfloat16" if on_gpu else "float32"
        dtype = getattr(torch, dtype_name)

        path = resolve_model_path(_parameter(config, "model_path", ""), args["model_repository"])
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise pb_utils.TritonModelException(f"model_path {path!r} is not a Hugging Face model folder "
                                                "(no config.json)")
        self.limit = int(_parameter(config, "max_new_tokens_limit", "1024"))
        self.ranges = {k: _Range(*v) for k, v in _contract_parameter(config, "sampling_ranges").items()}
        self.defaults = {**_contract_parameter(config, "sampling_defaults"), "seed": None}
        need_ranges = set(SAMPLING_KEYS) - {"max_new_tokens"}  # its range is [1, max_new_tokens_limit]
        missing = sorted((set(SAMPLING_KEYS) - set(self.defaults)) | (need_ranges - set(self.ranges)))
        if missing:
            raise pb_utils.TritonModelException(f"config.pbtxt sampling parameters lack {missing}")
        # The same image bounds as the genir services (services/common/images.py), for clients
        # that call Triton directly; PIL's own bomb check is replaced by these.
        self.max_pixels = int(_parameter(config, "max_image_pixels", "40000000"))
        self.max_request_pixels = int(_parameter(config, "max_request_pixels", "64000000"))
        self.batch_invariant = _parameter(config, "batch_invariant", "false").strip().lower() in ("1", "true", "yes")
        self.processor = AutoProcessor.from_pretrained(path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generate() continues every row from the same column
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(self.device).eval()

        self.images = _ImageCache(int(_parameter(config, "image_cache_entries", str(IMAGE_CACHE_ENTRIES))),
                                  self.processor.image_processor)
        self.stop_ids = self._stop_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_positions = int(getattr(text_config, "max_position_embeddings", 1 << 30))
        pb_utils.Logger.log_info(f"gemma3: loaded {path} on {self.device} ({dtype_name}), stop ids {self.stop_ids}, "
                                 f"{self.max_positions} positions, max_new_tokens <= {self.limit}")

    def _stop_ids(self):
        ids = set()
        eos = self.model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.eos_token_id)
        # Chat checkpoints end a turn with <end_of_turn>; some tokenizers keep it a plain token.
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end_of_turn, int) and end_of_turn != self.tokenizer.unk_token_id:
            ids.add(end_of_turn)
        return sorted(i for i in ids if i is not None)

    # ------------------------------------------------------------------ parsing
    def _messages(self, raw):
        try:
            messages = json.loads(_as_text(raw, "messages"))
        except json.JSONDecodeError as e:
            raise BadRequest(f"messages: not valid JSON ({e})") from None
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: expected a non-empty JSON list of {role, content} objects")
        placeholders = 0
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise BadRequest(f"messages[{i}]: expected an object with role one of {', '.join(ROLES)}")
            content = m.get("content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list):
                raise BadRequest(f"messages[{i}].content: expected a string or a list of parts")
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    placeholders += 1
                elif kind != "text" or not isinstance(part.get("text"), str):
                    raise BadRequest(f"messages[{i}].content[{j}]: expected {{'type': 'text', 'text': str}} "
                                     "or {'type': 'image'}")
        return messages, placeholders

    def _sampling(self, raw):
        text = _as_text(raw, "sampling").strip() if raw is not None else ""
        given = {}
        if text:
            try:
                given = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadRequest(f"sampling: not valid JSON ({e})") from None
            if not isinstance(given, dict):
                raise BadRequest("sampling: expected a JSON object")
        unknown = sorted(set(given) - set(SAMPLING_KEYS))
        if unknown:
            raise BadRequest(f"sampling: unknown keys {unknown}; allowed {sorted(SAMPLING_KEYS)}")
        s = {k: (self.defaults.get(k) if given.get(k) is None else given[k]) for k in SAMPLING_KEYS}
        if given.get("max_new_tokens") is None:
            s["max_new_tokens"] = min(self.defaults["max_new_tokens"], self.limit)
        try:
            s["temperature"], s["top_p"] = float(s["temperature"]), float(s["top_p"])
            s["repetition_penalty"] = float(s["repetition_penalty"])
            s["top_k"], s["max_new_tokens"] = int(s["top_k"]), int(s["max_new_tokens"])
            s["seed"] = secrets.randbits(63) if s["seed"] is None else int(s["seed"])
        except (TypeError, ValueError) as e:
            raise BadRequest(f"sampling: {e}") from None
        ranges = {**self.ranges, "max_new_tokens": _Range(1, self.limit, False)}
        for name in SAMPLING_KEYS:
            allowed = ranges[name]
            if s[name] not in allowed:
                raise BadRequest(f"sampling.{name}: {s[name]} is out of range {allowed}")
        return s

    def _images(self, row, expected):
        from PIL import Image

        blobs = [bytes(b) for b in row if b is not None and len(b) > 0]
        if len(blobs) != expected:
            raise BadRequest(f"images: {len(blobs)} given but the messages have {expected} image placeholders")
        total, held, formats = 0, {}, []
        for i, blob in enumerate(blobs):   # headers first: the budget holds before any pixel is decoded
            key = _reference(blob)
            if key is not None:            # sent before: its size was checked then and kept
                entry = self.images.held(key)
                if entry is None:
                    raise BadRequest(f"images[{i}]: {UNKNOWN_IMAGE}{key.hex()} is not held here (evicted, or "
                                     "the server restarted); send the image's bytes")
                held[i] = entry
                formats.append("held")
                total += entry.pixels
                continue
            self.images.count_received("bytes")
            try:
                header = Image.open(io.BytesIO(blob))
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
                raise BadRequest(f"images[{i}]: cannot decode ({type(e).__name__}: {e})") from None
            w, h = header.size
            formats.append(header.format or "image")
            if w * h > self.max_pixels:
                raise BadRequest(f"images[{i}]: {w}x{h} = {w * h} pixels, over the limit of {self.max_pixels}")
            total += w * h
        if total > self.max_request_pixels:
            raise BadRequest(f"images: {total} pixels in all, over the per-request budget of {self.max_request_pixels}")
        out = []
        for i, blob in enumerate(blobs):   # decoded (and preprocessed) once per distinct image
            if i in held:
                out.append(held[i])
                continue
            try:
                out.append(self.images.get(blob))
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
                raise BadRequest(f"images[{i}]: truncated or corrupt {formats[i]} data ({type(e).__name__}: {e})") from None
        return out

    def _parse(self, request):
        """One request -> list of rows {messages, images, sampling}; raises BadRequest."""
        messages = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy()
        images_t = pb_utils.get_input_tensor_by_name(request, "images")
        sampling_t = pb_utils.get_input_tensor_by_name(request, "sampling")
        images = images_t.as_numpy() if images_t is not None else np.empty((messages.shape[0], 0), dtype=object)
        sampling = sampling_t.as_numpy() if sampling_t is not None else None
        rows = []
        for b in range(messages.shape[0]):
            msgs, n = self._messages(messages[b, 0])
            rows.append({"messages": msgs,
                         "images": self._images(images[b] if images.ndim == 2 and images.shape[0] > b else [], n),
                         "sampling": self._sampling(sampling[b, 0] if sampling is not None else None)})
        return rows

    # ------------------------------------------------------------------ generation
    def _encode(self, rows):
        texts = [self.processor.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
                 for r in rows]
        images = [[entry.value for entry in r["images"]] for r in rows]
        kwargs = {"images": images, **self.images.processor_kwargs} if any(images) else {}
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)

    def _too_long(self, rows, lengths):
        """Indices of rows whose prompt + max_new_tokens exceeds the model's positions, with messages."""
        bad = {}
        for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
            want = n + row["sampling"]["max_new_tokens"]
            if want > self.max_positions:
                bad[i] = (f"prompt of {n} tokens + max_new_tokens {row['sampling']['max_new_tokens']} exceeds "
                          f"the model's {self.max_positions} positions")
        return bad

    def _generate(self, rows, cancelled):
        """Run rows in one generate(). Returns [(text, prompt_tokens, completion_tokens) | BadRequest]."""
        torch = self.torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        results = [None] * len(rows)
        enc = self._encode(rows)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        for i, msg in self._too_long(rows, lengths).items():
            results[i] = BadRequest(msg)
        keep = [i for i, r in enumerate(results) if r is None]
        if not keep:
            return results
        if len(keep) < len(rows):
            rows = [rows[i] for i in keep]
            enc = self._encode(rows)
            lengths = enc["attention_mask"].sum(dim=1).tolist()
        enc = enc.to(self.device)
        if "pixel_values" in enc:
            features = self._image_features(rows)
            if features is None:
                enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
            else:   # generate() takes the tower's output instead of running it on the pixels
                enc.pop("pixel_values")
                enc["mm_encoder_outputs"] = {"image": features}
        width = enc["input_ids"].shape[1]
        params = [r["sampling"] for r in rows]
        limits = torch.tensor([p["max_new_tokens"] for p in params], device=self.device)
        sampler = _RowSampler(torch, params, [width - n for n in lengths], self.device)
        stopper = _RowStopper(torch, width, limits, lambda: [cancelled(keep[i]) for i in range(len(rows))])
        config = GenerationConfig(
            # Sampling is _RowSampler's job, so generate() itself is greedy. Every field is set on
            # purpose: unset ones are filled from the checkpoint's generation_config.json.
            do_sample=False, num_beams=1, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
            max_new_tokens=int(limits.max()), eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config,
                                      logits_processor=LogitsProcessorList([sampler]),
                                      stopping_criteria=StoppingCriteriaList([stopper]))
        for slot, i in enumerate(keep):
            new = out[slot, width:width + params[slot]["max_new_tokens"]].tolist()
            produced = len(new)
            for j, tok in enumerate(new):
                if tok in self.stop_ids:
                    new, produced = new[:j], j + 1
                    break
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results[i] = (text, int(lengths[slot]), produced)
        return results

    def _image_features(self, rows):
        """The vision tower's output for every image of `rows`, in order, run once per distinct
        image (alone, so the result does not depend on its batch-mates) and kept with the image.
        None when cached images are not one-to-one with tower inputs (pan-and-scan crops)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if not self.images.preprocessed:
            return None
        features = [self.images.features(entry, self._tower) for r in rows for entry in r["images"]]
        return BaseModelOutputWithPooling(pooler_output=self.torch.cat(features))

    def _tower(self, pixels):
        torch = self.torch
        batch = torch.from_numpy(np.ascontiguousarray(pixels))[None].to(self.device, self.model.dtype)
        with torch.inference_mode():
            return self.model.get_image_features(pixel_values=batch, return_dict=True).pooler_output

    # ------------------------------------------------------------------ Triton entry points
    def execute(self, requests):
        answers = [None] * len(requests)  # per request: TritonError or list of row results
        rows, owner = [], []
        for r, request in enumerate(requests):
            try:
                if request.is_cancelled():
                    answers[r] = _error("request cancelled", "CANCELLED")
                    continue
                parsed = self._parse(request)
            except BadRequest as e:
                answers[r] = _error(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - one odd request must not fail its batch-mates
                answers[r] = _error(f"cannot read request: {type(e).__name__}: {e}", None)
                continue
            rows.extend(parsed)
            owner.extend([r] * len(parsed))

        if rows:
            results = self._run(rows, owner, requests)
            for r in sorted(set(owner)):
                mine = [res for res, o in zip(results, owner, strict=True) if o == r]
                if requests[r].is_cancelled():
                    answers[r] = _error("request cancelled", "CANCELLED")
                else:
                    bad = next((x for x in mine if isinstance(x, Exception)), None)
                    answers[r] = mine if bad is None else _error(str(bad), "INVALID_ARG" if isinstance(
                        bad, BadRequest) else None)
        return [self._response(a) for a in answers]

    def _run(self, rows, owner, requests):
        cancelled = lambda i: requests[owner[i]].is_cancelled()  # noqa: E731
        try:
            if self.batch_invariant and len(rows) > 1:
                raise _OneByOne()
            return self._generate(rows, cancelled)
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, _OneByOne):
                # The batch failed as a whole; retry each row alone so only the culprit gets the error.
                pb_utils.Logger.log_warn(f"gemma3: batched generate of {len(rows)} rows failed ({e}); "
                                         "retrying one by one")
            out = []
            for i, row in enumerate(rows):
                try:
                    out.extend(self._generate([row], lambda _j, i=i: cancelled(i)))
                except Exception as single:  # noqa: BLE001
                    out.append(single)
            return out

    @staticmethod
    def _response(answer):
        if isinstance(answer, pb_utils.TritonError):
            return pb_utils.InferenceResponse(output_tensors=[], error=answer)
        text = np.array([[t.encode("utf-8")] for t, _, _ in answer], dtype=np.object_)
        prompt = np.array([[p] for _, p, _ in answer], dtype=np.int32)
        completion = np.array([[c] for _, _, c in answer], dtype=np.int32)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("text", text), pb_utils.Tensor("prompt_tokens", prompt),
            pb_utils.Tensor("completion_tokens", completion)])

    def finalize(self):
        self.model = None
        self.processor = None


class _Held:
    """One cached image: what the processor gets, its pixel count for the request budget, and the
    vision tower's output for it once computed."""

    __slots__ = ("value", "pixels", "features")

    def __init__(self, value, pixels):
        self.value = value
        self.pixels = pixels
        self.features = None


class _ImageCache:
    """Decoded images by content hash, least recently used dropped first.

    Entries are the image processor's output for one image (resized, rescaled, normalised), and
    `processor_kwargs` tells the processor not to do that again; with pan-and-scan on (one image
    becomes several crops) entries are the decoded RGB images instead.
    """

    def __init__(self, entries, image_processor):
        self.entries = max(0, entries)
        self.image_processor = image_processor
        self.preprocessed = not getattr(image_processor, "do_pan_and_scan", False)
        self.processor_kwargs = ({"do_resize": False, "do_rescale": False, "do_normalize": False}
                                 if self.preprocessed else {})
        self._items = OrderedDict()
        self.hits = self.misses = 0
        self.tower = {"hit": 0, "miss": 0}
        self.received = {"bytes": 0, "reference": 0, "unknown_reference": 0}
        family = getattr(pb_utils, "MetricFamily", None)  # absent outside a Triton server
        self._families = []  # a family must outlive its metrics, so they are kept too
        self._metrics = self._received = self._tower = None
        if family is not None:
            lookups = family(name="genir_gemma3_image_cache_total",
                             description="Images looked up by content hash: hit = already decoded",
                             kind=family.COUNTER)
            arrivals = family(name="genir_gemma3_images_received_total",
                              description="Request images by form: bytes, or a reference to a held image "
                                          "(unknown_reference: not held, the client must resend)",
                              kind=family.COUNTER)
            towers = family(name="genir_gemma3_vision_features_total",
                            description="Vision tower outputs looked up per image: miss = the tower ran",
                            kind=family.COUNTER)
            self._families = [lookups, arrivals, towers]
            self._metrics = {r: lookups.Metric(labels={"result": r}) for r in ("hit", "miss")}
            self._received = {f: arrivals.Metric(labels={"form": f}) for f in self.received}
            self._tower = {r: towers.Metric(labels={"result": r}) for r in self.tower}

    def _count(self, result):
        if result == "hit":
            self.hits += 1
        else:
            self.misses += 1
        if self._metrics is not None:
            self._metrics[result].increment(1)

    def count_received(self, form):
        self.received[form] += 1
        if self._received is not None:
            self._received[form].increment(1)

    def features(self, entry, compute):
        """The tower's output for a cached image; `compute(pixels)` runs it on a miss."""
        result = "hit" if entry.features is not None else "miss"
        if entry.features is None:
            entry.features = compute(entry.value)
        self.tower[result] += 1
        if self._tower is not None:
            self._tower[result].increment(1)
        return entry.features

    def held(self, key):
        """The entry for a referenced image, or None; counted as a cache lookup when found."""
        entry = self._items.get(key)
        self.count_received("unknown_reference" if entry is None else "reference")
        if entry is not None:
            self._items.move_to_end(key)
            self._count("hit")
        return entry

    def get(self, blob):
        key = hashlib.sha256(blob).digest()
        if key in self._items:
            self._items.move_to_end(key)
            self._count("hit")
            return self._items[key]
        entry = _Held(*self._decode(blob))
        self._count("miss")
        if self.entries:
            self._items[key] = entry
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        return entry

    def _decode(self, blob):
        from PIL import Image

        img = Image.open(io.BytesIO(blob))
        img.load()
        pixels = img.size[0] * img.size[1]
        img = img.convert("RGB")
        if not self.preprocessed:
            return img, pixels
        return self.image_processor(img, return_tensors="np")["pixel_values"][0], pixels


class _RowSampler:
    """LogitsProcessor that samples each row with its own settings and its own seeded generator.

    The drawn token is returned as the only finite score of the row, so generate()'s greedy argmax
    picks it. Rows with temperature 0 keep their (penalised) logits and are plain greedy. Rows
    with the same settings (usually all of them) are penalised, filtered and normalised together,
    one tensor operation per step instead of one per row; only the draw is per row, from the row's
    own generator. Every operation works row by row, so a row's result does not depend on its
    batch-mates.
    """

    def __init__(self, torch, params, pad_lengths, device):
        self.torch = torch
        self.params = params
        self.starts = pad_lengths  # left padding to skip for the repetition penalty
        self.generators = [torch.Generator(device=device).manual_seed(p["seed"]) for p in params]
        groups = {}
        for i, p in enumerate(params):
            key = (p["repetition_penalty"], p["temperature"], p["top_k"], p["top_p"])
            groups.setdefault(key, []).append(i)
        self.groups = [(key, torch.tensor(rows, device=device)) for key, rows in groups.items()]
        self.start_t = torch.tensor(pad_lengths, device=device)

    def _seen(self, input_ids, rows):
        """Each row's tokens, its left padding replaced by its own first real token, so a
        penalty applied over the whole width touches exactly the tokens the row has seen."""
        torch = self.torch
        ids = input_ids[rows]
        starts = self.start_t[rows]
        first = ids.gather(1, starts.clamp(max=ids.shape[1] - 1)[:, None])
        pad = torch.arange(ids.shape[1], device=ids.device)[None, :] < starts[:, None]
        return torch.where(pad, first, ids)

    def __call__(self, input_ids, scores):
        torch = self.torch
        scores = scores.float()
        for (penalty, temperature, top_k, top_p), rows in self.groups:
            block = scores[rows]
            if penalty != 1.0:
                seen = self._seen(input_ids, rows)
                old = block.gather(1, seen)
                block.scatter_(1, seen, torch.where(old < 0, old * penalty, old / penalty))
            if temperature <= 0:
                scores[rows] = block
                continue
            logits = block / temperature
            if 0 < top_k < logits.shape[1]:
                kth = torch.topk(logits, top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                ordered, order = torch.sort(logits, dim=1, descending=True)
                probs = torch.softmax(ordered, dim=1)
                drop = (probs.cumsum(dim=1) - probs) >= top_p  # keep the token that crosses top_p
                logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
            probs = torch.softmax(logits, dim=1)
            block.fill_(float("-inf"))
            for j, i in enumerate(rows.tolist()):
                token = torch.multinomial(probs[j], 1, generator=self.generators[i])
                block[j, token] = 0.0
            scores[rows] = block
        return scores


class _RowStopper:
    """StoppingCriteria: per-row max_new_tokens, and rows whose request was cancelled."""

    def __init__(self, torch, width, limits, cancelled):
        self.torch = torch
        self.width = width
        self.limits = limits
        self.cancelled = cancelled
        self.steps = 0
        self.gone = torch.zeros_like(limits, dtype=torch.bool)

    def __call__(self, input_ids, scores, **kwargs):
        self.steps += 1
        if self.steps % CANCEL_CHECK_EVERY == 0:
            self.gone = self.torch.tensor(self.cancelled(), dtype=self.torch.bool, device=self.limits.device)
        return ((input_ids.shape[1] - self.width) >= self.limits) | self.gone
