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

Every call has a deadline (min of the caller's and `timeout`), passed to Triton as the gRPC
deadline, so Triton cancels the request when it passes (model.py checks is_cancelled()).
The channel reconnects at most `max_reconnect_backoff` seconds apart, so a restarted Triton is
found again within seconds, not gRPC's default two minutes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from services.common import channels, errors

log = logging.getLogger("genir.refiner.triton")

RETRYABLE = {"UNAVAILABLE", "NOT_FOUND"}
OUTPUTS = ("text", "prompt_tokens", "completion_tokens")


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
    image_row = np.empty((1, len(images)), dtype=np.object_)  # [1, 0] for text-only requests
    for i, data in enumerate(images):
        image_row[0, i] = bytes(data)
    return [_bytes_input("messages", np.array([[json.dumps(messages).encode()]], dtype=np.object_)),
            _bytes_input("images", image_row),
            _bytes_input("sampling", np.array([[json.dumps(sampling).encode()]], dtype=np.object_))]


class TritonVLM:
    def __init__(self, url: str, model: str = "gemma3", *, timeout: float = 120.0, retry_seconds: float = 5.0,
                 max_message_mb: int = 64, creds=None, max_reconnect_backoff: float = 2.0):
        self.url = url
        self.model = model
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        options = (channels.message_options(max_message_mb) + channels.NO_TRANSPORT_RETRIES
                   + channels.reconnect_options(max_reconnect_backoff))
        self._client = triton_aio.InferenceServerClient(url, creds=creds, channel_args=options)

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
        """One request; `timeout` caps the whole call, retries included."""
        budget = self.timeout if timeout is None else min(timeout, self.timeout)
        start = time.monotonic()
        deadline = start + budget
        retry_until = start + min(self.retry_seconds, budget)
        inputs = build_inputs(messages, images, sampling)
        outputs = [InferRequestedOutput(name) for name in OUTPUTS]
        delay, attempts = 0.1, 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.DeadlineExceeded(f"Triton at {self.url} did not answer within {budget:.1f}s")
            try:
                result = await self._client.infer(self.model, inputs, outputs=outputs, client_timeout=remaining)
                break
            except InferenceServerException as e:
                error = self._map(e, budget)
                now = time.monotonic()
                if _status(e) not in RETRYABLE or now + delay >= min(retry_until, deadline):
                    if attempts > 1 and isinstance(error, errors.Unavailable):
                        error = self._unavailable(f"{e.message()} (after {attempts} attempts in {now - start:.1f}s)")
                    raise error from None
                log.warning("Triton %s: %s; retry %d in %.1fs", self.url, _status(e), attempts, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return Completion(text=result.as_numpy("text")[0, 0].decode("utf-8", errors="replace"),
                          prompt_tokens=int(result.as_numpy("prompt_tokens")[0, 0]),
                          completion_tokens=int(result.as_numpy("completion_tokens")[0, 0]),
                          seconds=time.monotonic() - start, attempts=attempts)

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
