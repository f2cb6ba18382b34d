"""One child process, the way `genir up`, the Triton launcher, the tests and the benchmarks run them.

    child = ChildProcess(cmd, log_path, name="generator").start()   # own session, output in the log
    child.wait_ready(lambda: serving(port), timeout=120)             # fails at once if it exits
    child.terminate(grace=30)                                        # SIGTERM, SIGKILL after grace

A child runs in a session of its own, so a terminal's Ctrl-C reaches only its parent (which stops
children in order) and `kill()` can reach everything the child started in its process group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("genir.process")


def exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ChildProcess:
    """A command with its output appended to `log_path` (None: this process's stdout)."""

    # what wait_ready raises when the child exits before it is ready
    exited_error: type[Exception] = RuntimeError

    def __init__(self, cmd: list, log_path: str | Path | None = None, *, env: dict | None = None,
                 cwd: str | Path | None = None, name: str | None = None, signal_group: bool = False,
                 preexec_fn: Callable[[], None] | None = None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.cwd = cwd
        self.name = name or " ".join(self.cmd[:4])
        self.signal_group = signal_group    # SIGTERM the whole group, not only the child
        self.preexec_fn = preexec_fn        # only for children that are not Python (it is unsafe with threads)
        self.popen: subprocess.Popen | None = None

    def start(self) -> "ChildProcess":
        if self.log_path is None:
            self.popen = self._popen(None)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:     # the child keeps its own copy of the descriptor
            self.popen = self._popen(out)
        return self

    def _popen(self, out) -> subprocess.Popen:
        return subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=self.env,
                                cwd=self.cwd, start_new_session=True, preexec_fn=self.preexec_fn)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None:
            return "(log on the parent's stdout)"
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def check_alive(self, before: str = "before becoming ready") -> None:
        """Raise `exited_error` with the log tail when the child has exited."""
        if not self.alive():
            code = self.popen.returncode if self.popen else None
            raise self.exited_error(f"{self.name} exited with code {code} {before}:\n{self.log_tail()}")

    def wait_ready(self, ready: Callable[[], bool], timeout: float, poll: float = 0.2,
                   what: str = "ready") -> "ChildProcess":
        """Block until `ready()`; raise `exited_error` at once if the child exits, or kill it and
        raise TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if ready():
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise TimeoutError(f"{self.name} not {what} within {timeout:.0f}s (killed):\n{self.log_tail()}")
            time.sleep(poll)

    def terminate(self, grace: float = 30.0) -> int | None:
        """SIGTERM (the child drains), SIGKILL after `grace` seconds; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            try:
                (os.killpg if self.signal_group else os.kill)(self.popen.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, grace)
            except ProcessLookupError:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the child's whole process group (what it started there dies too)."""
        if self.popen is not None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) did not die after SIGKILL", self.name, self.popen.pid)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.terminate()
