"""Run a real Triton Inference Server locally: `genir serve triton --model-repository DIR --model HF_DIR`.

The `tritonserver` binary and the Python-backend stubs ship inside the `nvidia-pytriton` wheel, but
the wheel keeps them apart, so the launcher assembles a backend folder in the work dir:

    <workdir>/backends/python/   libtriton_python.so, triton_python_backend_utils.py (links) and
                                 triton_python_backend_stub (a copy: it must sit next to the backend)
    <workdir>/model_repository/  a copy of --model-repository with the `model_path` parameter of
                                 --model-name set to --model (the weights stay where they are)

and starts the server with the venv's bin first on PATH (the stub finds its Python, and through it
the venv's site-packages, as `python3` on PATH) and the wheel's bundled libraries plus libpython on
LD_LIBRARY_PATH. Without those libraries the stub never starts and Triton waits forever, so
readiness is awaited with a hard deadline while checking that the process is alive.

Each run gives the Python backend its own shared-memory prefix, so `stop()` removes exactly this
run's `/dev/shm/triton_python_backend_shm_region_*` files, even after a crash or SIGKILL.

Python API (tests, `genir up`):

    triton = TritonProcess(repo, workdir, model="/models/gemma3", grpc_port=8001).start()
    triton.wait_ready(timeout=180)     # raises TritonStartError (with the log tail) or TimeoutError
    ...
    triton.stop()

In production the same repository runs in NVIDIA's tritonserver image instead (README.md).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import logging
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from genir import contract
from services.common import config
from services.refiner.triton_repository import DEFAULT_REPOSITORY, TritonStartError, write_repository
from stack.process import ChildProcess

log = logging.getLogger("genir.triton")

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def pytriton_root() -> Path:
    """Folder of the tritonserver distribution inside the nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed (pip install nvidia-pytriton==0.7.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def prepare_backends(workdir: Path) -> Path:
    """Assemble <workdir>/backends/python from the wheel's pieces for this Python version."""
    ts = pytriton_root()
    version = "%d.%d" % sys.version_info[:2]
    stub = ts / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonStartError(f"no Python-backend stub for Python {version} in {ts}")
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ts / "backends" / "python" / name)
    # copy beside, then rename over: a stub of a killed run may still be executing the old file
    # (overwriting it in place fails with "Text file busy")
    tmp = target / f".triton_python_backend_stub.{os.getpid()}"
    shutil.copy2(stub, tmp)
    os.replace(tmp, target / "triton_python_backend_stub")
    return workdir / "backends"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL me when my parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _shm_files(prefix: str) -> list[str]:
    return glob.glob(str(SHM_DIR / (glob.escape(prefix) + "*")))


class TritonProcess(ChildProcess):
    """One tritonserver process serving a model repository on 127.0.0.1 (or `host`)."""

    exited_error = TritonStartError

    def __init__(self, model_repository: str | Path, workdir: str | Path, *, model: str | Path | None = None,
                 model_name: str = "gemma3", host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, parameters: dict[str, str] | None = None,
                 log_path: str | Path | None = None, log_verbose: int = 0, extra_args: list[str] | None = None,
                 tritonserver: str | None = None, env: dict[str, str] | None = None):
        # the kernel kills tritonserver if this launcher dies (kill -9): no orphan keeps the ports
        super().__init__([], log_path, name="tritonserver", preexec_fn=_die_with_parent)
        self.source = Path(model_repository)
        self.workdir = Path(workdir).resolve()
        self.model = Path(model).resolve() if model else None
        self.model_name = model_name
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.parameters = dict(parameters or {})
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args or [])
        self.tritonserver = tritonserver
        self.base_env = env
        self.shm_prefix = f"{SHM_PREFIX}genir_{uuid.uuid4().hex[:12]}_"

    # ------------------------------------------------------------------ addresses
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    # ------------------------------------------------------------------ start
    def command(self) -> tuple[list[str], dict[str, str]]:
        """Prepare the work dir; return the tritonserver command line and its environment."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The contract's sampling rules always, then what the caller set (which wins).
        params = {**contract.triton_parameters(), **self.parameters}
        if self.model is not None:
            if not (self.model / "config.json").is_file():
                raise TritonStartError(f"--model {self.model}: not a Hugging Face model folder (no config.json)")
            params["model_path"] = str(self.model)
        repo = write_repository(self.source, self.workdir, self.model_name, params)
        env = dict(self.base_env if self.base_env is not None else os.environ)
        venv_bin = Path(sys.executable).parent  # not resolved: the venv's bin, not the base interpreter's
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
        args = [f"--model-repository={repo}"]
        if self.tritonserver:  # a native install (e.g. inside NVIDIA's image) brings its own backends
            binary = self.tritonserver
        else:
            ts = pytriton_root()
            binary = str(ts / "bin" / "tritonserver")
            libs = [str(ts.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
            env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(
                os.pathsep)
            args += [f"--backend-directory={prepare_backends(self.workdir)}",
                     f"--cache-directory={ts / 'caches'}"]
        args += [f"--http-address={self.host}", f"--http-port={self.http_port}",
                 f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                 f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                 "--allow-gpu-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
                 f"--log-verbose={self.log_verbose}",
                 f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        return [binary] + args + self.extra_args, env

    def start(self) -> "TritonProcess":
        self.cmd, self.env = self.command()
        self.cwd = self.workdir
        log.info("starting %s", " ".join(self.cmd))
        return super().start()

    def _get(self, path: str, timeout: float = 1.0) -> int | None:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return None

    def is_ready(self) -> bool:
        return self._get("/v2/health/ready") == 200 and self._get(f"/v2/models/{self.model_name}/ready") == 200

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.25) -> "TritonProcess":
        """Block until server and model are ready. If Triton exits, raise TritonStartError at once;
        if it is still not ready at the deadline, kill it and raise TimeoutError."""
        try:
            super().wait_ready(self.is_ready, timeout, poll)
        except TritonStartError:
            self.cleanup_shm()
            raise
        log.info("Triton ready: grpc %s, http %s, metrics %s", self.grpc_url, self.http_url, self.metrics_url)
        return self

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Triton unloads models and drains), SIGKILL after `timeout`; then clean shm."""
        return self.terminate(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (server and stubs), then remove this run's shm files."""
        super().kill()
        self.cleanup_shm()

    def cleanup_shm(self) -> list[str]:
        removed = []
        for path in _shm_files(self.shm_prefix):
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
        if removed:
            log.info("removed %d leftover shared-memory regions of this run", len(removed))
        return removed

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = config.flags(parser, "triton")
    f("model-repository", default=str(DEFAULT_REPOSITORY), help="Triton model repository")
    f("model", default=None, help="Hugging Face folder of the checkpoint; sets the model's model_path "
                                  "parameter (default: the value in config.pbtxt)")
    f("model-name", default="gemma3", help="model in the repository that --model applies to")
    f("host", default="127.0.0.1", help="address Triton binds (0.0.0.0 in containers)")
    f("http-port", default=8000, type=int, help="HTTP/REST port (also readiness)")
    f("grpc-port", default=8001, type=int, help="gRPC port (the refiner's --triton-url)")
    f("metrics-port", default=8002, type=int, help="Prometheus metrics port (nv_inference_*)")
    f("workdir", default=None, help="scratch folder for the backend and the generated repository "
                                    "(default: a new temporary folder)")
    f("num-threads", default=None, help="torch threads per CPU model instance (sets num_threads)")
    f("ready-timeout", default=300.0, type=float, help="seconds to wait for readiness before giving up")
    f("tritonserver", default=None, help="use this tritonserver binary (with its own backends) instead of "
                                         "the one in the nvidia-pytriton wheel")
    f("log-verbose", default=0, type=int, help="Triton --log-verbose level")
    f("log-level", default="INFO", help="launcher logging level")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config.pbtxt parameter of --model-name, e.g. batch_invariant=true (repeatable)")
    parser.add_argument("extra", nargs="*", help="extra tritonserver flags (after --)")


def main(args: argparse.Namespace) -> int:
    config.setup_logging(args.log_level)
    config.log_config("triton", args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="genir-triton-"))
    params = {"num_threads": str(args.num_threads)} if args.num_threads else {}
    for item in args.parameter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            log.error("--parameter %r: expected KEY=VALUE", item)
            return 2
        params[key.strip()] = value
    triton = TritonProcess(args.model_repository, workdir, model=args.model, model_name=args.model_name,
                           host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, parameters=params, log_verbose=args.log_verbose,
                           extra_args=args.extra, tritonserver=args.tritonserver)
    stopping = threading.Event()
    ready = threading.Event()
    failures: list[Exception] = []

    def on_signal(signum, _frame):
        log.info("signal %d: stopping Triton", signum)
        stopping.set()

    def wait_ready():
        try:
            triton.wait_ready(args.ready_timeout)
            ready.set()
        except (TritonStartError, TimeoutError) as e:
            failures.append(e)
            stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        triton.start()
        threading.Thread(target=wait_ready, daemon=True).start()
        while not stopping.is_set() and triton.alive():
            stopping.wait(0.5)
        if failures:
            log.error("%s", failures[0])
            return 1
        if not stopping.is_set():
            state = "while serving" if ready.is_set() else "before becoming ready"
            log.error("tritonserver exited with code %s %s", triton.popen.returncode, state)
            return triton.popen.returncode or 1
        code = triton.stop()
        log.info("tritonserver stopped (exit code %s)", code)
        return 0
    except TritonStartError as e:
        log.error("%s", e)
        return 1
    finally:
        triton.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="genir serve triton")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
