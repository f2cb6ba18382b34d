"""Async client for the Triton `gemma3` model (tritonclient.grpc.aio).

`TritonVLM.generate(messages, images, sampling, timeout)` sends one request and returns the text
and token counts. Failures come back as genir service errors, never as a hang:

  Triton answer                         raised                why
  INVALID_ARGUMENT                      InvalidArgument       the model rejected the input; message kept
  UNAVAILABLE / connection refused      Unavailable           retried with backoff for `retry_seconds`,
  NOT_FOUND (model unloading/absent)    Unavailable           then reported naming Triton's address
  DEADLINE_EXCEEDED                     DeadlineExceeded      no answer within the call's deadline
  RESOURCE_EXHAUSTED                    ResourceExhausted
  anything else                         Internal              with Triton's message

Images cross to Triton once: the client remembers (bounded, least recently used first) the
SHA-256 of images a call has delivered, and later calls send b"sha256:<hex>" in their place. The
model answers INVALID_ARGUMENT "unknown image sha256:..." when it no longer holds one (evicted,
restarted, another instance); the call is then sent once more with every image's bytes.
genir_refiner_triton_images_total{form="bytes"|"reference"} counts what was sent.

Every call has a deadline (min of the caller's and `timeout`), passed to Triton as the gRPC
deadline, so Triton cancels the request when it passes (model.py checks is_cancelled()).
The channel reconnects at most `max_reconnect_backoff` seconds apart, so a restarted Triton is
found again within seconds, not gRPC's default two minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from prometheus_client import Counter
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from services.common import errors
from services.common.channels import channel_options
from services.common.digests import UNKNOWN_IMAGE, SentImages
from services.common.retry import RetryPolicy

log = logging.getLogger("genir.refiner.triton")

RETRYABLE = {"UNAVAILABLE", "NOT_FOUND"}
# retries last `retry_seconds` (the caller's bound), 0.1 s apart at first, at most 1 s apart
RETRY = RetryPolicy(attempts=None, initial_backoff=0.1, max_backoff=1.0, jitter=False)
OUTPUTS = ("text", "prompt_tokens", "completion_tokens")
# The reference form and the miss message are the model's (triton/gemma3/1/model.py).
REFERENCE_PREFIX = b"sha256:"

IMAGES_SENT = Counter("genir_refiner_triton_images_total", "Images sent to Triton, as bytes or by reference.",
                      ["form"])
for _form in ("bytes", "reference"):
    IMAGES_SENT.labels(_form)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    attempts: int


def _status(e: InferenceServerException) -> str:
    """'StatusCode.INVALID_ARGUMENT' -> 'INVALID_ARGUMENT'."""
    return str(e.status() or "UNKNOWN").rsplit(".", 1)[-1]


def _bytes_input(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def build_inputs(messages: list[dict], images: list[bytes], sampling: dict) -> list[InferInput]:
    """`images` elements are image bytes or references (REFERENCE_PREFIX + hex digest)."""
    image_row = np.empty((1, len(images)), dtype=np.object_)  # [1, 0] for text-only requests
    for i, data in enumerate(images):
        image_row[0, i] = bytes(data)
    return [_bytes_input("messages", np.array([[json.dumps(messages).encode()]], dtype=np.object_)),
            _bytes_input("images", image_row),
            _bytes_input("sampling", np.array([[json.dumps(sampling).encode()]], dtype=np.object_))]


def is_reference(element: bytes) -> bool:
    return len(element) == len(REFERENCE_PREFIX) + 64 and element.startswith(REFERENCE_PREFIX)


def wire_images(images: list[bytes], digests: list[bytes], sent: SentImages) -> list[bytes]:
    """Each image as its bytes, or as a reference when `sent` says Triton has it."""
    return [REFERENCE_PREFIX + d.hex().encode() if d in sent else data for data, d in zip(images, digests, strict=True)]


def count_sent(wire: list[bytes]) -> None:
    refs = sum(map(is_reference, wire))
    IMAGES_SENT.labels("reference").inc(refs)
    IMAGES_SENT.labels("bytes").inc(len(wire) - refs)


class TritonVLM:
    def __init__(self, url: str, model: str = "gemma3", *, timeout: float = 120.0, retry_seconds: float = 5.0,
                 max_message_mb: int = 64, creds=None, max_reconnect_backoff: float = 2.0):
        self.url = url
        self.model = model
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._client = triton_aio.InferenceServerClient(
            url, creds=creds, channel_args=channel_options(max_message_mb, max_reconnect_backoff))
        self.sent = SentImages()

    def _unavailable(self, detail: str) -> errors.Unavailable:
        return errors.Unavailable(f"Triton at {self.url} (model {self.model}) is unavailable: {detail}")

    def _map(self, e: InferenceServerException, timeout: float) -> errors.ServiceError:
        code, message = _status(e), e.message() or str(e)
        if code == "INVALID_ARGUMENT":
            return errors.InvalidArgument(f"{self.model}: {message}")
        if code in RETRYABLE or code == "CANCELLED":
            return self._unavailable(message)
        if code == "DEADLINE_EXCEEDED":
            return errors.DeadlineExceeded(f"Triton at {self.url} did not answer within {timeout:.1f}s")
        if code == "RESOURCE_EXHAUSTED":
            return errors.ResourceExhausted(f"Triton at {self.url}: {message}")
        return errors.Internal(f"Triton at {self.url} failed ({code}): {message}")

    async def generate(self, messages: list[dict], images: list[bytes], sampling: dict,
                       timeout: float | None = None) -> Completion:
        """One request; `timeout` caps the whole call, retries included. Images Triton already
        holds go by reference; if it has lost one, the call is repeated once with all the bytes."""
        budget = self.timeout if timeout is None else min(timeout, self.timeout)
        start = time.monotonic()
        deadline = start + budget
        # the refiner hashed each image when it arrived (server.FieldBytes); others are hashed here
        digests = [getattr(data, "digest", None) or hashlib.sha256(data).digest() for data in images]
        wire = wire_images(images, digests, self.sent)
        try:
            result, attempts = await self._infer(messages, wire, sampling, start, deadline, budget)
        except errors.InvalidArgument as e:
            if not any(map(is_reference, wire)) or UNKNOWN_IMAGE not in e.message:
                raise
            log.info("Triton %s no longer holds an image (%s); resending the bytes", self.url, e.message)
            self.sent.forget(digests)
            wire = list(images)
            result, attempts = await self._infer(messages, wire, sampling, start, deadline, budget)
            attempts += 1
        self.sent.add(digests)
        return Completion(text=result.as_numpy("text")[0, 0].decode("utf-8", errors="replace"),
                          prompt_tokens=int(result.as_numpy("prompt_tokens")[0, 0]),
                          completion_tokens=int(result.as_numpy("completion_tokens")[0, 0]),
                          seconds=time.monotonic() - start, attempts=attempts)

    async def _infer(self, messages: list[dict], wire: list[bytes], sampling: dict, start: float,
                     deadline: float, budget: float):
        """Send one request, retrying UNAVAILABLE for retry_seconds; -> (result, attempts)."""
        inputs = build_inputs(messages, wire, sampling)
        count_sent(wire)
        retry_until = start + min(self.retry_seconds, budget)
        outputs = [InferRequestedOutput(name) for name in OUTPUTS]
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.DeadlineExceeded(f"Triton at {self.url} did not answer within {budget:.1f}s")
            try:
                return await self._client.infer(self.model, inputs, outputs=outputs,
                                                client_timeout=remaining), attempts
            except InferenceServerException as e:
                error = self._map(e, budget)
                now = time.monotonic()
                delay = RETRY.backoff(attempts - 1)
                if _status(e) not in RETRYABLE or now + delay >= min(retry_until, deadline):
                    if attempts > 1 and isinstance(error, errors.Unavailable):
                        error = self._unavailable(f"{e.message()} (after {attempts} attempts in {now - start:.1f}s)")
                    raise error from None
                log.warning("Triton %s: %s; retry %d in %.1fs", self.url, _status(e), attempts, delay)
                await asyncio.sleep(delay)

    async def ready(self, timeout: float = 2.0) -> bool:
        """Server and model ready (False when Triton does not answer)."""
        try:
            return bool(await self._client.is_server_ready(client_timeout=timeout)
                        and await self._client.is_model_ready(self.model, client_timeout=timeout))
        except InferenceServerException:
            return False

    async def wait_ready(self, seconds: float, poll: float = 0.5) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if await self.ready():
                return True
            if time.monotonic() + poll > deadline:
                return False
            await asyncio.sleep(poll)

    async def close(self) -> None:
        await self._client.close()
