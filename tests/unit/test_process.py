"""The one child-process wrapper (stack/process.py) that genir up, the Triton launcher, the tests and
the benchmarks share: exit codes, the log tail in errors, SIGTERM then SIGKILL, the whole group."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from stack.process import ChildProcess


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_before_ready_fails_at_once_with_its_log(tmp_path):
    child = ChildProcess(py("print('no model here', flush=True); raise SystemExit(3)"), tmp_path / "c.log",
                         name="gen").start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"gen exited with code 3 before becoming ready:\nno model here"):
        child.wait_ready(lambda: False, timeout=60)
    assert time.monotonic() - started < 30 and child.returncode == 3


def test_a_child_never_ready_is_killed_at_the_deadline(tmp_path):
    child = ChildProcess(py("import time; time.sleep(60)"), tmp_path / "c.log", name="slow").start()
    with pytest.raises(TimeoutError, match="slow not ready within 1s"):
        child.wait_ready(lambda: False, timeout=1.0, poll=0.05)
    assert not child.alive() and child.returncode == -9


def test_terminate_sigterms_then_sigkills_the_whole_group(tmp_path):
    # the child ignores SIGTERM and starts a grandchild in its group
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")
    child = ChildProcess(py(code), tmp_path / "c.log", name="stubborn").start()
    deadline = time.monotonic() + 30
    while not child.log_tail().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(child.log_tail().split()[0])
    assert child.terminate(grace=0.5) == -9
    assert gone(grandchild)


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_clean_exit_on_sigterm_is_its_exit_code(tmp_path):
    child = ChildProcess(py("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
                            "print('up', flush=True); time.sleep(60)"), tmp_path / "c.log").start()
    child.wait_ready(lambda: "up" in child.log_tail(), timeout=30, poll=0.05)
    assert child.terminate(grace=30) == 0
    assert child.terminate() == 0 and ChildProcess(["true"]).terminate() is None
