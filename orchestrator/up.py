"""`genir up`: every genir service as a local process, started health-checked and stopped cleanly.

    genir up --models .cache/tiny-models --workdir .cache/up --corpus C.json --image-root IMGS --collection demo

Python API (the demo, tests and benchmarks use it):

    with Stack(models, workdir, corpus=..., image_root=..., collection="demo", ports="free") as stack:
        stack.target("orchestrator")      # "127.0.0.1:PORT"
        stack.metrics_port("generator")
        stack.kill("generator"); stack.start(["generator"])   # fault injection / restart
        stack.restart("triton")           # kill -9 (whole process tree) and start on the same ports

Start order: Triton, generator and retriever together (with `genir index` first when a corpus is
given: the embedded Qdrant store is single-process, so indexing runs before the retriever opens
it), then the refiner once Triton is ready, then the orchestrator. Every start has a hard
deadline and fails at once, with the log tail, when its process exits. Stop: SIGTERM in reverse
order (each service drains), SIGKILL after a grace period.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config
from services.common.ports import free_port

log = logging.getLogger("genir.up")

ORDER = ("triton", "generator", "retriever", "refiner", "orchestrator")
DEFAULT_PORTS = {"orchestrator": (50050, 9100), "generator": (50051, 9101), "refiner": (50052, 9102),
                 "retriever": (50053, 9103), "triton": (8001, 8002)}
TRITON_HTTP_DEFAULT = 8000
ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "services" / "refiner" / "triton"


class StartError(RuntimeError):
    """A service exited during start-up or missed its deadline."""


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def grpc_serving(address: str, timeout: float = 1.0, creds: grpc.ChannelCredentials | None = None) -> bool:
    try:
        with (grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Service:
    name: str
    cmd: list[str]
    port: int
    metrics_port: int
    log_path: Path
    ready_url: str | None = None            # HTTP readiness (Triton); else gRPC health on port
    creds: grpc.ChannelCredentials | None = field(default=None, repr=False)  # health probe over TLS
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        return http_ok(self.ready_url) if self.ready_url else grpc_serving(f"127.0.0.1:{self.port}", creds=self.creds)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


class Stack:
    """The local services of one genir deployment."""

    def __init__(self, models: str | Path, workdir: str | Path, *, corpus: str | Path | None = None,
                 image_root: str | Path | None = None, collection: str = "demo", ports: str | dict = "default",
                 services: tuple[str, ...] = ORDER, auth_token: str | None = None,
                 orchestrator_args: list[str] | None = None, extra_args: dict[str, list[str]] | None = None,
                 startup_timeout: float = 300.0, env: dict | None = None, retriever_model: str = "blip",
                 health_tls: dict[str, tuple[str | None, str | None, str | None]] | None = None):
        self.models = Path(models).resolve()
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.corpus = Path(corpus).resolve() if corpus else None
        self.image_root = Path(image_root).resolve() if image_root else None
        self.collection = collection
        self.auth_token = auth_token
        self.names = tuple(n for n in ORDER if n in services)
        self.orchestrator_args = list(orchestrator_args or [])
        self.extra_args = dict(extra_args or {})
        self.startup_timeout = startup_timeout
        self.env = child_env(env)
        if auth_token:
            # by environment, never argv: every service requires it, the orchestrator also sends it
            self.env.update(GENIR_AUTH_TOKEN=auth_token, GENIR_BACKEND_TOKEN=auth_token)
        self.retriever_model = retriever_model
        # name -> (ca, cert, key) PEM paths for services started with TLS flags (via extra_args), so the
        # readiness probe can reach them; the flags themselves are the caller's.
        self.health_tls = dict(health_tls or {})
        self.store_path = self.workdir / "qdrant"
        self.db_path = self.workdir / "sessions.sqlite"
        if ports == "free":
            self.ports = {n: (free_port(), free_port()) for n in ORDER}
            self.triton_http = free_port()
        elif ports == "default":
            self.ports, self.triton_http = dict(DEFAULT_PORTS), TRITON_HTTP_DEFAULT
        else:
            self.ports = {**DEFAULT_PORTS, **ports}
            self.triton_http = self.ports.pop("triton_http", TRITON_HTTP_DEFAULT)
        self.services: dict[str, Service] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ addresses
    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name][0]}"

    def metrics_port(self, name: str) -> int:
        return self.ports[name][1]

    # ------------------------------------------------------------------ commands
    def _genir(self, *args) -> list[str]:
        return [sys.executable, "-m", "genir.cli", *map(str, args)]

    def command(self, name: str) -> Service:
        port, mport = self.ports[name]
        common = ["--host", "127.0.0.1", "--port", port, "--metrics-port", mport]
        ready_url = None
        if name == "triton":
            cmd = self._genir("serve", "triton", "--model-repository", REPOSITORY, "--model", self.models / "gemma3",
                              "--grpc-port", port, "--http-port", self.triton_http, "--metrics-port", mport,
                              "--workdir", self.workdir / "triton-work")
            ready_url = f"http://127.0.0.1:{self.triton_http}/v2/models/gemma3/ready"
        elif name == "generator":
            cmd = self._genir("serve", "generator", *common, "--model", self.models / "sd3")
        elif name == "retriever":
            cmd = self._genir("serve", "retriever", *common, "--model", self.models / self.retriever_model,
                              "--store-path", self.store_path)
        elif name == "refiner":
            cmd = self._genir("serve", "refiner", *common, "--triton-url", self.target("triton"))
        elif name == "orchestrator":
            cmd = self._genir("serve", "orchestrator", *common, "--generator", self.target("generator"),
                              "--refiner", self.target("refiner"), "--retriever", self.target("retriever"),
                              "--collection", self.collection, "--db", self.db_path)
            if self.corpus:
                cmd += ["--corpus", str(self.corpus)]
            if self.image_root:
                cmd += ["--image-root", str(self.image_root)]
            cmd += list(map(str, self.orchestrator_args))
        else:
            raise ValueError(f"unknown service {name!r}; expected one of {ORDER}")
        cmd += list(map(str, self.extra_args.get(name, [])))
        creds = None
        if name in self.health_tls:
            from services.common import tls
            creds = tls.channel_credentials(*self.health_tls[name])
        return Service(name, [str(c) for c in cmd], port, mport, self.workdir / "logs" / f"{name}.log", ready_url,
                       creds=creds)

    # ------------------------------------------------------------------ start / stop
    def _spawn(self, name: str) -> Service:
        svc = self.command(name)
        svc.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(svc.log_path, "ab") as out:
            svc.popen = subprocess.Popen(svc.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=ROOT, start_new_session=True)
        log.info("started %s (pid %d): %s", name, svc.popen.pid, " ".join(svc.cmd[2:]))
        with self._lock:
            self.services[name] = svc
        return svc

    def _wait(self, svcs: list[Service], deadline: float) -> None:
        pending = list(svcs)
        while pending:
            for svc in list(pending):
                if not svc.alive():
                    raise StartError(f"{svc.name} exited with code {svc.popen.returncode} during start-up "
                                     f"(log {svc.log_path}):\n{svc.log_tail()}")
                if svc.ready():
                    log.info("%s ready on port %d", svc.name, svc.port)
                    pending.remove(svc)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise StartError(f"{names} not ready within {self.startup_timeout:.0f}s; "
                                 f"log tail of {pending[0].name}:\n{pending[0].log_tail()}")
            if pending:
                time.sleep(0.2)

    def start(self, names: list[str] | tuple[str, ...] | None = None) -> "Stack":
        """Start `names` (default: all of this stack's services) in dependency order."""
        names = [n for n in ORDER if n in (names or self.names)]
        deadline = time.monotonic() + self.startup_timeout
        try:
            if "retriever" in names and self.corpus and self.image_root:
                self.index()
            first = [self._spawn(n) for n in names if n in ("triton", "generator", "retriever")]
            if "refiner" in names:
                triton = [s for s in first if s.name == "triton"]
                self._wait(triton, deadline)
                first = [s for s in first if s.name != "triton"] + [self._spawn("refiner")]
            self._wait(first, deadline)
            if "orchestrator" in names:
                self._wait([self._spawn("orchestrator")], deadline)
        except BaseException:
            self.stop(names)
            raise
        return self

    def index(self, timeout: float | None = None) -> None:
        """`genir index` the corpus into the retriever's store (resumable: only missing ids)."""
        if self.services.get("retriever") and self.services["retriever"].alive():
            raise StartError("index: stop the retriever first (the embedded store is single-process)")
        log_path = self.workdir / "logs" / "index.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self._genir("index", "--corpus", self.corpus, "--image-root", self.image_root,
                          "--model", self.models / self.retriever_model, "--collection", self.collection,
                          "--store-path", self.store_path, "--no-progress")
        with open(log_path, "ab") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                timeout=timeout or self.startup_timeout).returncode
        if rc != 0:
            raise StartError(f"genir index failed with code {rc}:\n{log_path.read_text(errors='replace')[-3000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL one service (fault injection): its process group and every descendant, including
        those in a session of their own (tritonserver)."""
        svc = self.services.get(name)
        if svc and svc.alive():
            tree = self.descendants(name)
            os.killpg(svc.popen.pid, signal.SIGKILL)
            for p in tree:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            svc.popen.wait(10)
            psutil.wait_procs(tree, timeout=10)

    def restart(self, name: str) -> Service:
        """Kill -9 `name` if it still runs, then start it again on the same ports with the same flags."""
        self.kill(name)
        svc = self.services.get(name)
        if svc is not None and svc.popen is not None and svc.popen.poll() is None:
            svc.popen.wait(30)
        self.start([name])
        return self.services[name]

    def descendants(self, name: str) -> list:
        """psutil.Process of every live descendant of `name`'s process."""
        svc = self.services.get(name)
        try:
            return psutil.Process(svc.popen.pid).children(recursive=True) if svc and svc.alive() else []
        except psutil.Error:
            return []

    def stop(self, names=None, grace: float = 30.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order, SIGKILL after `grace`; returns exit codes."""
        codes = {}
        for name in reversed(ORDER):
            svc = self.services.get(name)
            if svc is None or (names and name not in names):
                continue
            if svc.alive():
                try:
                    os.killpg(svc.popen.pid, signal.SIGTERM)
                    svc.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for %.0fs; killing it", name, grace)
                    self.kill(name)
                except ProcessLookupError:
                    pass
            codes[name] = svc.popen.returncode if svc.popen else None
        if names is None:
            self._reap_strays()
        return codes

    def _reap_strays(self) -> None:
        """Kill Python-backend stubs left by a tritonserver that died by SIGKILL: they run a copy of
        the stub from this stack's Triton work dir and outlive their server (re-parented to init)."""
        work = str(self.workdir / "triton-work")
        strays = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if cmd and cmd[0].startswith(work):
                strays.append(p)
        for p in strays:
            try:
                p.kill()
            except psutil.Error:
                pass
        if strays:
            log.warning("killed %d stray Triton backend process(es) from %s", len(strays), work)
            psutil.wait_procs(strays, timeout=10)

    def alive(self) -> dict[str, bool]:
        return {n: s.alive() for n, s in self.services.items()}

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = lambda *a, **k: config.add_flag(parser, *a, service="up", **k)  # noqa: E731
    f("models", default=".cache/tiny-models", help="folder with sd3/ gemma3/ blip/ (genir tiny-models build DIR)")
    f("workdir", default=".cache/up", help="logs, Qdrant store, sessions database")
    f("corpus", default=None, help="corpus JSON to index and search (ChatIR format)")
    f("image-root", default=None, help="folder the corpus paths are relative to")
    f("collection", default="demo", help="retriever collection")
    f("retriever-model", default="blip", help="sub-folder of --models for the retriever (blip, clip, siglip)")
    f("auth-token", default=None, help="bearer token the orchestrator requires")
    f("startup-timeout", default=300.0, type=float, help="hard deadline for the whole start-up, seconds")
    f("free-ports", default=False, bool_flag=True, help="pick free ports instead of the defaults")
    f("log-level", default="INFO", help="logging level")


def main(args) -> int:
    config.setup_logging(args.log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(args.models, args.workdir, corpus=args.corpus, image_root=args.image_root,
                  collection=args.collection, ports="free" if args.free_ports else "default",
                  auth_token=args.auth_token, startup_timeout=args.startup_timeout,
                  retriever_model=args.retriever_model)
    try:
        stack.start()
    except StartError as e:
        log.error("%s", e)
        return 1
    for name in stack.names:
        log.info("%-12s %s  metrics :%d  log %s", name, stack.target(name), stack.metrics_port(name),
                 stack.services[name].log_path)
    log.info("all services ready; Ctrl-C stops them")
    code = 0
    while not stop.wait(1.0):
        dead = [n for n, ok in stack.alive().items() if not ok]
        if dead:
            log.error("%s exited; stopping the rest", ", ".join(dead))
            code = 1
            break
    log.info("stopping: %s", stack.stop())
    return code
