"""`genir up`: every genir service as a local process, started health-checked and stopped cleanly.

    genir up --corpus ~/photos                      # a folder of photos; prints the web page's URL
    genir up --models DIR --workdir DIR --corpus C.json --image-root IMGS --collection demo

Python API (the demo, tests and benchmarks use it):

    with Stack(models, workdir, corpus=..., image_root=..., collection="demo", ports="free") as stack:
        stack.target("orchestrator")      # "127.0.0.1:PORT"
        stack.metrics_port("generator")
        stack.kill("generator"); stack.start(["generator"])   # fault injection / restart
        stack.restart("triton")           # kill -9 (whole process tree) and start on the same ports

Start order: every port checked free first; `genir index` when a corpus is given (the embedded
Qdrant store is single-process, so indexing runs before the retriever opens it; no deadline);
then Triton, generator and retriever together, the refiner once Triton is ready, the
orchestrator, and the web page (`services=ORDER`). Every service start has a hard deadline and
fails at once, with the log tail, when its process exits. Stop: SIGTERM in reverse order (each
service drains), SIGKILL after a grace period.

The command adds what a person at a terminal needs: early one-line input errors, the index
progress on the console, Ctrl-C/SIGTERM/SIGHUP stopping everything at once (also during
start-up), a parent-death signal in every child, and a Supervisor that restarts a crashed
service with bounded exponential backoff while the others keep serving.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import config
from services.common.ports import free_port
from services.common.retry import RetryPolicy
from stack.process import ChildProcess, exit_reason

log = logging.getLogger("genir.up")

ORDER = ("triton", "generator", "retriever", "refiner", "orchestrator", "web")
CORE = ORDER[:5]                 # the gRPC services; the web page is opt-in for Stack, on for `genir up`
DEFAULT_PORTS = {"orchestrator": (50050, 9100), "generator": (50051, 9101), "refiner": (50052, 9102),
                 "retriever": (50053, 9103), "triton": (8001, 8002), "web": (8080, -1)}
TRITON_HTTP_DEFAULT = 8000
ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "services" / "refiner" / "triton"


class StartError(RuntimeError):
    """A service exited during start-up or missed its deadline, or its port is taken."""


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port (SO_REUSEADDR: sockets in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


PARENT_ENV = "GENIR_DIE_WITH_PARENT"


def die_with_parent() -> None:
    """In a child started with GENIR_DIE_WITH_PARENT=<pid>: get SIGTERM when that parent dies (even
    by SIGKILL or a closed terminal). Called at the child's start (genir.cli), not in a preexec_fn,
    which is unsafe in a parent with threads (gRPC's)."""
    want = os.environ.pop(PARENT_ENV, "")
    if not want.isdecimal() or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(want):                                # the parent died before prctl ran
        os.kill(os.getpid(), signal.SIGTERM)


SECRET_ENV = ("GENIR_AUTH_TOKEN", "GENIR_BACKEND_TOKEN", "GENIR_ORCHESTRATOR_AUTH_TOKEN",
              "GENIR_WEB_ORCHESTRATOR_TOKEN")


def child_env(extra: dict | None = None) -> dict:
    # tokens reach only the children meant to have them (Stack.service_env), never every child
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
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


class ServiceProcess(ChildProcess):
    """One service of the stack as a child process: its ports and how to tell that it is ready."""

    exited_error = StartError

    def __init__(self, name: str, cmd: list[str], port: int, metrics_port: int, log_path: Path,
                 ready_url: str | None = None, creds: grpc.ChannelCredentials | None = None):
        super().__init__(cmd, log_path, cwd=ROOT, name=name, signal_group=True)
        self.port, self.metrics_port = port, metrics_port
        self.ready_url = ready_url      # HTTP readiness (Triton, the web page); else gRPC health on port
        self.creds = creds              # health probe over TLS

    def ready(self) -> bool:
        return http_ok(self.ready_url) if self.ready_url else grpc_serving(f"127.0.0.1:{self.port}", creds=self.creds)

    def descendants(self) -> list:
        """psutil.Process of every live descendant."""
        try:
            return psutil.Process(self.popen.pid).children(recursive=True) if self.alive() else []
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL the process group and every descendant, including those in a session of their own
        (tritonserver)."""
        tree = self.descendants()
        super().kill()
        for p in tree:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(tree, timeout=10)


class Stack:
    """The local services of one genir deployment."""

    def __init__(self, models: str | Path, workdir: str | Path, *, corpus: str | Path | None = None,
                 image_root: str | Path | None = None, collection: str = "demo", ports: str | dict = "default",
                 services: tuple[str, ...] = CORE, auth_token: str | None = None,
                 orchestrator_args: list[str] | None = None, extra_args: dict[str, list[str]] | None = None,
                 startup_timeout: float = 300.0, env: dict | None = None, retriever_model: str = "blip",
                 health_tls: dict[str, tuple[str | None, str | None, str | None]] | None = None,
                 console: bool = False, parent_death: bool = False, backend_token: str | None = None):
        self.models = Path(models).resolve()
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.corpus = Path(corpus).resolve() if corpus else None
        self.image_root = Path(image_root).resolve() if image_root else None
        self.collection = collection
        self.auth_token = auth_token
        # shared token between the orchestrator and its backends (generator, refiner, retriever);
        # without one of its own, the backends require the user's token too
        self.backend_token = backend_token or auth_token
        self.names = tuple(n for n in ORDER if n in services)
        self.orchestrator_args = list(orchestrator_args or [])
        self.extra_args = dict(extra_args or {})
        self.startup_timeout = startup_timeout
        self.env = child_env(env)
        self.retriever_model = retriever_model
        # name -> (ca, cert, key) PEM paths for services started with TLS flags (via extra_args), so the
        # readiness probe can reach them; the flags themselves are the caller's.
        self.health_tls = dict(health_tls or {})
        # console: index progress and summary on this process's terminal (genir up), not only in the log
        self.console = console
        # parent_death: children get SIGTERM when the thread that started them dies (genir up only:
        # the Python API may start services from short-lived threads)
        self.parent_death = parent_death
        self.store_path = self.workdir / "qdrant"
        self.db_path = self.workdir / "sessions.sqlite"
        if ports == "free":
            self.ports = {n: (free_port(), free_port() if n != "web" else -1) for n in ORDER}
            self.triton_http = free_port()
        elif ports == "default":
            self.ports, self.triton_http = dict(DEFAULT_PORTS), TRITON_HTTP_DEFAULT
        else:
            self.ports = {**DEFAULT_PORTS, **ports}
            self.triton_http = self.ports.pop("triton_http", TRITON_HTTP_DEFAULT)
        self.services: dict[str, ServiceProcess] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ addresses
    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name][0]}"

    def metrics_port(self, name: str) -> int:
        return self.ports[name][1]

    # ------------------------------------------------------------------ commands
    def _genir(self, *args) -> list[str]:
        return [sys.executable, "-m", "genir.cli", *map(str, args)]

    def command(self, name: str) -> ServiceProcess:
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
        elif name == "web":
            cmd = self._genir("serve", "web", "--host", "127.0.0.1", "--port", port,
                              "--orchestrator", self.target("orchestrator"))
            ready_url = f"http://127.0.0.1:{port}/"
        else:
            raise ValueError(f"unknown service {name!r}; expected one of {ORDER}")
        cmd += list(map(str, self.extra_args.get(name, [])))
        creds = None
        if name in self.health_tls:
            from services.common import tls
            creds = tls.channel_credentials(*self.health_tls[name])
        return ServiceProcess(name, [str(c) for c in cmd], port, mport, self.workdir / "logs" / f"{name}.log",
                              ready_url, creds=creds)

    # ------------------------------------------------------------------ start / stop
    def service_env(self, name: str) -> dict:
        """The child's environment: secrets travel here, never in argv (visible in `ps`)."""
        env = dict(self.env)
        if self.auth_token and name == "orchestrator":
            # GENIR_AUTH_TOKEN is the agreed name; the flag's own env fallback works in every version
            env.update(GENIR_AUTH_TOKEN=self.auth_token, GENIR_ORCHESTRATOR_AUTH_TOKEN=self.auth_token)
        if self.auth_token and name == "web":
            env["GENIR_WEB_ORCHESTRATOR_TOKEN"] = self.auth_token
        if self.backend_token and name in ("generator", "refiner", "retriever"):
            env["GENIR_AUTH_TOKEN"] = self.backend_token
        if self.backend_token and name == "orchestrator":
            env["GENIR_BACKEND_TOKEN"] = self.backend_token
        return env

    def _child_env(self, env: dict) -> dict:
        """With parent_death, the child asks for SIGTERM when this process dies (die_with_parent)."""
        return {**env, PARENT_ENV: str(os.getpid())} if self.parent_death else env

    def _child_kw(self, env: dict) -> dict:
        """Own session, as every ChildProcess: the terminal's Ctrl-C reaches only genir up."""
        return {"start_new_session": True, "env": self._child_env(env)}

    def url(self, name: str = "web") -> str:
        return f"http://127.0.0.1:{self.ports[name][0]}/"

    def _spawn(self, name: str) -> ServiceProcess:
        svc = self.command(name)
        svc.env = self._child_env(self.service_env(name))
        svc.start()
        log.info("started %s (pid %d): %s", name, svc.popen.pid, " ".join(svc.cmd[2:]))
        with self._lock:
            self.services[name] = svc
        return svc

    def _wait(self, svcs: list[ServiceProcess], deadline: float) -> None:
        pending = list(svcs)
        while pending:
            for svc in list(pending):
                svc.check_alive(f"during start-up (log {svc.log_path})")
                if svc.ready():
                    log.info("%s ready on port %d", svc.name, svc.port)
                    pending.remove(svc)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise StartError(f"{names} not ready within {self.startup_timeout:.0f}s; "
                                 f"log tail of {pending[0].name}:\n{pending[0].log_tail()}")
            if pending:
                time.sleep(0.2)

    def ports_of(self, name: str) -> list[tuple[int, str]]:
        port, mport = self.ports[name]
        out = [(port, f"{name} gRPC" if name != "web" else "web page")]
        if mport > 0:
            out.append((mport, f"{name} metrics"))
        if name == "triton":
            out.append((self.triton_http, "triton HTTP"))
        return out

    def check_ports(self, names, wait: float = 0.0) -> None:
        """Fail before anything starts (and before any health check could reach another stack).
        `wait`: seconds to let a just-killed process's ports come free (restarts)."""
        deadline = time.monotonic() + wait
        while True:
            taken = [(p, what) for n in names for p, what in self.ports_of(n) if port_taken(p)]
            if not taken or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if taken:
            listed = ", ".join(f"{p} ({what})" for p, what in taken)
            raise StartError(f"port {listed} already in use (another genir up?); stop what holds it, "
                             "or use --free-ports")

    def start(self, names: list[str] | tuple[str, ...] | None = None, index: bool = True,
              port_wait: float = 0.0) -> "Stack":
        """Start `names` (default: all of this stack's services) in dependency order. Indexing runs
        first, outside the start-up deadline (it takes as long as the corpus needs)."""
        names = [n for n in ORDER if n in (names or self.names)]
        try:
            self.check_ports(names, port_wait)
            if index and "retriever" in names and self.corpus and self.image_root:
                self.index()
            deadline = time.monotonic() + self.startup_timeout
            first = [self._spawn(n) for n in names if n in ("triton", "generator", "retriever")]
            if "refiner" in names:
                triton = [s for s in first if s.name == "triton"]
                self._wait(triton, deadline)
                first = [s for s in first if s.name != "triton"] + [self._spawn("refiner")]
            self._wait(first, deadline)
            if "orchestrator" in names:
                self._wait([self._spawn("orchestrator")], deadline)
            if "web" in names:
                self._wait([self._spawn("web")], deadline)
        except BaseException:
            self.stop(names)
            raise
        return self

    def index(self, timeout: float | None = None) -> None:
        """`genir index` the corpus into the retriever's store (resumable: only missing ids).
        No deadline unless `timeout` is given: a big folder on CPU takes many minutes."""
        if self.services.get("retriever") and self.services["retriever"].alive():
            raise StartError("index: stop the retriever first (the embedded store is single-process)")
        log_path = self.workdir / "logs" / "index.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self._genir("index", "--corpus", self.corpus, "--image-root", self.image_root,
                          "--model", self.models / self.retriever_model, "--collection", self.collection,
                          "--store-path", self.store_path)
        if self.console:
            rc = self._index_on_console(cmd, log_path, timeout)
        else:
            with open(log_path, "ab") as out:
                rc = subprocess.run(cmd + ["--no-progress"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    timeout=timeout, **self._child_kw(self.env)).returncode
        if rc != 0:
            raise StartError(f"genir index failed with code {rc}:\n{log_path.read_text(errors='replace')[-3000:]}")

    def _index_on_console(self, cmd: list[str], log_path: Path, timeout: float | None) -> int:
        """Progress bar and warnings straight to the terminal; the summary line logged and kept."""
        log.info("indexing %s into collection %r (progress below; log %s)", self.corpus, self.collection, log_path)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, cwd=ROOT, text=True, timeout=timeout,
                              **self._child_kw(self.env))
        with open(log_path, "a") as out:
            out.write(proc.stdout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if lines:
            log.info("index summary: %s", lines[-1])
        return proc.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one service (fault injection) with everything it started."""
        svc = self.services.get(name)
        if svc and svc.alive():
            svc.kill()

    def restart(self, name: str) -> ServiceProcess:
        """Kill -9 `name` if it still runs, then start it again on the same ports with the same flags."""
        self.kill(name)
        svc = self.services.get(name)
        if svc is not None and svc.popen is not None and svc.popen.poll() is None:
            svc.popen.wait(30)
        self.start([name], port_wait=15.0)
        return self.services[name]

    def descendants(self, name: str) -> list:
        """psutil.Process of every live descendant of `name`'s process."""
        svc = self.services.get(name)
        return svc.descendants() if svc else []

    def stop(self, names=None, grace: float = 30.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order, SIGKILL after `grace`; returns exit codes."""
        codes = {}
        for name in reversed(ORDER):
            svc = self.services.get(name)
            if svc is None or (names and name not in names):
                continue
            codes[name] = svc.terminate(grace)
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


# ---------------------------------------------------------------------- supervision
class Supervisor:
    """Restarts services of a running stack that die, with exponential backoff, and gives up (so
    `genir up` stops) when one dies more than `max_restarts` times within `window` seconds."""

    def __init__(self, stack: Stack, *, max_restarts: int = 5, window: float = 600.0, first_backoff: float = 1.0,
                 max_backoff: float = 30.0):
        self.stack = stack
        self.max_restarts, self.window = max_restarts, window
        self.retry = RetryPolicy(attempts=None, initial_backoff=first_backoff, max_backoff=max_backoff, jitter=False)
        self.deaths: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.due: dict[str, float] = {}          # name -> when to restart it

    def _why(self, svc: ServiceProcess) -> str:
        last = [ln.strip() for ln in svc.log_tail(2000).splitlines() if ln.strip()]
        tail = f"; last log line: {last[-1][:200]}" if last else ""
        return f"{exit_reason(svc.popen.returncode)}{tail} (log {svc.log_path})"

    def poll(self, now: float | None = None) -> None:
        """One supervision step; raises StartError when a service keeps dying."""
        now = time.monotonic() if now is None else now
        for name, svc in list(self.stack.services.items()):
            if name in self.due or svc.alive():
                continue
            deaths = self.deaths[name]
            deaths.append(now)
            while deaths and now - deaths[0] > self.window:
                deaths.popleft()
            if len(deaths) > self.max_restarts:
                raise StartError(f"{name} died {len(deaths)} times within {self.window:.0f}s; giving up. "
                                 f"Last: {self._why(svc)}")
            delay = self.retry.backoff(len(deaths) - 1)
            log.error("%s died: %s; restarting it in %.0fs (restart %d of at most %d per %.0fs)", name,
                      self._why(svc), delay, len(deaths), self.max_restarts, self.window)
            self.due[name] = now + delay
        for name, when in sorted(self.due.items(), key=lambda kv: kv[1]):
            if when <= now:
                del self.due[name]
                self._restart(name)

    def _restart(self, name: str) -> None:
        self.stack.kill(name)                   # whatever of its tree is left
        if name == "triton":
            self.stack._reap_strays()
        try:
            self.stack.start([name], index=False, port_wait=15.0)
            log.info("%s restarted and ready on port %d", name, self.stack.ports[name][0])
        except StartError as e:
            first = str(e).splitlines()[0]
            log.error("restarting %s failed: %s", name, first)   # the next poll sees it dead again


# ---------------------------------------------------------------------- CLI
class Stopped(Exception):
    """SIGTERM or SIGHUP (closed terminal) arrived."""


def _raise_stopped(signum, _frame):
    raise Stopped(signal.Signals(signum).name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = config.flags(parser, "up")
    f("models", default=".cache/tiny-models", help="folder with sd3/ gemma3/ and the retriever's folder "
      "(genir tiny-models build DIR, or real weights: README 'Real models')")
    f("workdir", default=".cache/up", help="logs, Qdrant store, sessions database, the corpus list of a folder")
    f("corpus", default=None, help="a folder of photos (recursive), or a corpus JSON list with --image-root")
    f("image-root", default=None, help="folder the paths of a corpus JSON are relative to")
    f("collection", default="demo", help="retriever collection")
    f("retriever-model", default="blip", help="sub-folder of --models for the retriever (blip, clip, siglip)")
    f("auth-token-file", default=None, help="file with the bearer token the orchestrator requires "
      "(else env GENIR_AUTH_TOKEN; never on the command line)")
    f("startup-timeout", default=300.0, type=float, help="deadline for the services to become ready, seconds "
      "(indexing a corpus comes first and has none)")
    f("free-ports", default=False, bool_flag=True, help="pick free ports instead of the defaults")
    f("ports", default="", help="NAME=PORT[:METRICS_PORT],... over the defaults or free ports (e.g. web=8088)")
    f("web", default=True, bool_flag=True, help="also serve the web page (genir serve web)")
    parser.add_argument("--service-flags", action="append", default=[], metavar="NAME=FLAGS",
                        help="extra flags for one service, e.g. generator='--drop-t5 --dtype float16' (repeatable)")
    f("max-restarts", default=5, type=int, help="restarts of one crashed service within 10 min before giving up")
    f("log-level", default="INFO", help="logging level")


def parse_ports(text: str, base: dict) -> dict:
    """--ports "web=8088,orchestrator=50060:9110" applied over `base` (name -> (port, metrics port))."""
    out = dict(base)
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, value = item.partition("=")
        port, _, mport = value.partition(":")
        if name not in ORDER or not port.isdecimal() or (mport and not mport.isdecimal()):
            raise ValueError(f"--ports {item!r}: expected NAME=PORT[:METRICS_PORT] with NAME one of {', '.join(ORDER)}")
        out[name] = (int(port), int(mport) if mport else out[name][1])
    return out


def parse_service_flags(items: list[str]) -> dict[str, list[str]]:
    import shlex

    out: dict[str, list[str]] = {}
    for item in items:
        name, _, flags = item.partition("=")
        if name not in ORDER or not flags.strip():
            raise ValueError(f"--service-flags {item!r}: expected NAME=FLAGS with NAME one of {', '.join(ORDER)}")
        out.setdefault(name, []).extend(shlex.split(flags))
    return out


def check_models(models: Path, retriever_model: str) -> str | None:
    missing = [d for d in ("sd3", "gemma3", retriever_model) if not (models / d).is_dir()]
    if missing:
        return (f"--models {models}: missing {', '.join(m + '/' for m in missing)} (genir tiny-models build DIR, "
                "or download real weights as in the README section 'Real models'; genir models check DIR)")
    return None


def main(args) -> int:
    from genir.corpus_folder import CorpusInputError, resolve_corpus

    config.setup_logging(args.log_level)
    token = config.read_secret(args.auth_token_file, config.INBOUND_TOKEN_ENV)  # a bad file stops here, one line
    problem = check_models(Path(args.models), args.retriever_model)
    corpus, image_root = None, None
    if problem is None and args.corpus:
        try:
            corpus, image_root, n = resolve_corpus(args.corpus, args.image_root,
                                                   Path(args.workdir) / f"{args.collection}.corpus.json")
            log.info("corpus: %d images (list %s, image root %s)", n, corpus, image_root)
        except CorpusInputError as e:
            problem = str(e)
    elif problem is None and args.image_root:
        problem = "--image-root without --corpus: give the corpus (a folder of photos or a JSON list) too"
    if problem:
        print(f"genir up: {problem}", file=sys.stderr)
        return 2
    names = CORE + (("web",) if args.web else ())
    try:
        extra = parse_service_flags(args.service_flags)
    except ValueError as e:
        print(f"genir up: {e}", file=sys.stderr)
        return 2
    stack = Stack(args.models, args.workdir, corpus=corpus, image_root=image_root, collection=args.collection,
                  ports="free" if args.free_ports else "default", services=names, auth_token=token,
                  startup_timeout=args.startup_timeout, retriever_model=args.retriever_model, console=True,
                  parent_death=True, extra_args=extra, backend_token=secrets.token_urlsafe(32))
    try:
        stack.ports = parse_ports(args.ports, stack.ports)
    except ValueError as e:
        print(f"genir up: {e}", file=sys.stderr)
        return 2
    # Ctrl-C raises KeyboardInterrupt; SIGTERM and SIGHUP raise Stopped: both end start-up at once too.
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    code = 0
    try:
        stack.start()
        for name in stack.names:
            metrics = f"metrics :{stack.metrics_port(name)}" if stack.metrics_port(name) > 0 else "no metrics"
            log.info("%-12s %s  %s  log %s", name, stack.target(name), metrics, stack.services[name].log_path)
        if "web" in stack.names:
            print(f"genir up: web page on {stack.url()}", flush=True)
        print(f"genir up: all services ready (orchestrator {stack.target('orchestrator')}); Ctrl-C stops them",
              flush=True)
        supervisor = Supervisor(stack, max_restarts=args.max_restarts)
        while True:
            supervisor.poll()
            time.sleep(0.5)
    except StartError as e:
        log.error("%s", e)
        code = 1
    except (KeyboardInterrupt, Stopped) as e:
        log.info("%s: stopping every service", "Ctrl-C" if isinstance(e, KeyboardInterrupt) else e)
        code = 130 if isinstance(e, KeyboardInterrupt) else 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # stopping is under way; let it finish
        log.info("stopped: %s", stack.stop(grace=15.0))
    return code
