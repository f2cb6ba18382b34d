"""Ways to send a malformed request to a genir server (or Triton) and read back (status, message).

Every sender returns `Outcome(code, message)`: `code` is a grpc.StatusCode name ("OK",
"INVALID_ARGUMENT", ...), "CLIENT" when grpcurl refused the request before sending it (then
`message` is grpcurl's stderr), or the HTTP status as a string for Triton's HTTP endpoint.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc

from testkit.images import png, png_header_only  # noqa: F401 - the bad-input tests import them from here
from testkit.procs import grpcurl_bin


@dataclass
class Outcome:
    code: str
    message: str


# ---------------------------------------------------------------------- image payloads
def truncated_png() -> bytes:
    data = png(64, 64, (10, 200, 90))
    return data[: len(data) // 2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def img(data: bytes) -> dict:
    """A genir.v1.Image as grpcurl JSON."""
    return {"data": b64(data)}


# ---------------------------------------------------------------------- senders
def via_grpcurl(target: str, method: str, data, headers: list[str] | None = None, timeout: float = 60) -> Outcome:
    """The real grpcurl binary with a JSON body (read from stdin, so large bodies fit)."""
    cmd = [grpcurl_bin(), "-plaintext", "-format-error", "-max-time", str(int(timeout))]
    for h in headers or []:
        cmd += ["-H", h]
    cmd += ["-d", "@", target, method]
    body = data if isinstance(data, str) else json.dumps(data)
    out = subprocess.run(cmd, input=body, capture_output=True, text=True, timeout=timeout + 10)
    if out.returncode == 0:
        return Outcome("OK", out.stdout)
    if out.returncode >= 64:
        err = json.loads(out.stdout or out.stderr)
        return Outcome(grpc.StatusCode(_code_tuple(err.get("code", 2))).name, err.get("message", ""))
    return Outcome("CLIENT", out.stderr.strip())


def _code_tuple(value: int):
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c.value
    raise ValueError(value)


def _serialize(m) -> bytes:
    return m if isinstance(m, bytes) else m.SerializeToString()


def via_bytes(target: str, method: str, payload: bytes, metadata=None, streaming: str = "", timeout: float = 60,
              credentials=None) -> Outcome:
    """Raw serialized bytes (or a protobuf message) through a generic gRPC call. `streaming`:
    "" unary, "response" server-streaming (all responses read), "request" client-streaming
    (`payload` is a list of messages)."""
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    ch = grpc.secure_channel(target, credentials, options=opts) if credentials else \
        grpc.insecure_channel(target, options=opts)
    path = "/" + method
    try:
        if streaming == "response":
            call = ch.unary_stream(path, request_serializer=_serialize, response_deserializer=bytes)
            list(call(payload, metadata=metadata, timeout=timeout))
        elif streaming == "request":
            call = ch.stream_unary(path, request_serializer=_serialize, response_deserializer=bytes)
            call(iter(payload), metadata=metadata, timeout=timeout)
        else:
            call = ch.unary_unary(path, request_serializer=_serialize, response_deserializer=bytes)
            call(payload, metadata=metadata, timeout=timeout)
        return Outcome("OK", "")
    except grpc.RpcError as e:
        return Outcome(e.code().name, e.details() or "")
    finally:
        ch.close()


def via_http(url: str, body: bytes | str, timeout: float = 60) -> Outcome:
    """POST to Triton's HTTP endpoint; the outcome's code is the HTTP status, the message its body."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Outcome(str(r.status), r.read().decode(errors="replace"))
    except urllib.error.HTTPError as e:
        return Outcome(str(e.code), e.read().decode(errors="replace"))
