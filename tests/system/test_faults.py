"""Kill -9 during a running `genir eval`: nothing is lost, nothing is written twice, and the result
equals an uninterrupted run with the same seeds.

Every service is a real process (stack.up.Stack on tiny models, generated corpus). The eval
goes through the orchestrator. Each fault waits until one more dialog has been written since the
previous fault (so it lands mid-run, with dialogs in flight), then kills and restarts its victim on
the same ports with the same flags. A run that ends with failed dialogs (exit 1) is rerun, exactly
as an operator would; failed dialogs are never written, and the rerun completes them.

- quick (make test): kill -9 the generator once;
- slow (make test-system): in turn the generator, the Triton server (the tritonserver process: its
  launcher must notice and exit), the retriever (it must reopen its embedded Qdrant shard after
  kill -9), the Triton launcher (its tritonserver must die with it, leaving the ports free), and the
  eval process itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from testkit.procs import ROOT, eval_cmd, health_status, run_eval
from testkit.procs import proc_env as _env

from .conftest import make_world, start_stack

pytestmark = pytest.mark.timeout(900)

ROUNDS, SEED = 2, 5
QUICK_LIMIT, SLOW_LIMIT = 6, 14
# No slack for outages: the orchestrator tries a backend call twice, the eval never retries a
# dialog, so a dialog in flight while its backend restarts fails, and only a rerun completes it.
EVAL_FLAGS = ("--rounds", ROUNDS, "--seed", SEED, "--concurrency", 2, "--retries", 0)
ORCH_FLAGS = ["--retry-attempts", 2, "--retry-initial-backoff", 0.1, "--retry-max-backoff", 0.2]
TIMING_KEYS = {"seconds", "timings"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("faultworld"))


@pytest.fixture(scope="module")
def stack(tiny_models, world):
    s = start_stack(tiny_models, world, world.root / "stack", "faults", orchestrator_args=ORCH_FLAGS)
    yield s
    s.stop()
    # a tritonserver killed by SIGKILL leaves its backend stub behind; stop() must reap it
    work = str(s.workdir / "triton-work")
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info.get("cmdline") or [""])[0].startswith(work)]
    assert not left, f"Triton backend processes outlived the stack: {left}"


@pytest.fixture(scope="module")
def reference(stack, world):
    """Uninterrupted runs with the same seeds, one per --limit, made once."""
    made = {}

    def get(limit: int) -> Path:
        if limit not in made:
            out = world.root / f"reference-{limit}"
            r = run_eval(stack, world, out, "--limit", limit, *EVAL_FLAGS)
            assert r.returncode == 0, r.stderr[-4000:]
            made[limit] = out
        return made[limit]
    return get


# --------------------------------------------------------------------------- comparison
def _strip(obj):
    """Drop timing fields (they differ between any two runs), recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def dialogs(out: Path) -> dict:
    """dialogs.jsonl by target id, timing fields removed, each rendering replaced by its digest.
    Fails on a duplicated target or a torn line."""
    by_id = {}
    for line in (out / "dialogs.jsonl").read_text().splitlines():
        rec = _strip(json.loads(line))
        assert rec["target_id"] not in by_id, f"target {rec['target_id']} written twice"
        for r in rec["rounds"]:
            if r.get("image"):
                r["image"] = hashlib.sha256((out / r["image"]).read_bytes()).hexdigest()
        by_id[rec["target_id"]] = rec
    return by_id


def assert_same_result(out: Path, ref: Path, limit: int) -> None:
    got, want = dialogs(out), dialogs(ref)
    assert len(got) == limit and sorted(got) == sorted(want)
    assert all(len(rec["rounds"]) == ROUNDS + 1 for rec in got.values())
    for tid in want:
        assert got[tid] == want[tid], f"target {tid} differs from the uninterrupted run"
    assert _strip(json.loads((out / "summary.json").read_text())) == \
        _strip(json.loads((ref / "summary.json").read_text()))


# --------------------------------------------------------------------------- the eval job
class EvalJob:
    """`genir eval` as a process in its own session (so kill -9 reaches all of it); reruns append
    to the same output folder."""

    def __init__(self, stack, world, out: Path, limit: int):
        self.cmd = eval_cmd(stack, world, out, "--limit", limit, *EVAL_FLAGS)
        self.out, self.limit = out, limit
        self.proc: subprocess.Popen | None = None
        self.runs: list[int | str] = []           # exit code of each run ("killed" for kill -9)
        self.failures: dict[str, str] = {}        # target id -> why, from each failed run's run.json

    def start(self) -> None:
        log = open(self.out.parent / f"{self.out.name}-eval.log", "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def written(self) -> int:
        path = self.out / "dialogs.jsonl"
        return path.read_bytes().count(b"\n") if path.exists() else 0

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        self.runs.append("killed")

    def ended(self) -> int:
        """Record how the run ended; a run with failed dialogs must not have written them."""
        code = self.proc.returncode
        self.proc = None
        self.runs.append(code)
        if code == 1:
            failed = json.loads((self.out / "run.json").read_text())["failed"]
            assert failed, "exit code 1 without failed dialogs"
            written = {str(json.loads(x)["target_id"]) for x in (self.out / "dialogs.jsonl").read_text().splitlines()}
            assert not written & set(failed), f"failed dialogs were written: {written & set(failed)}"
            self.failures.update(failed)
        return code

    def wait_for_dialog(self, victim: str, timeout: float = 300) -> None:
        """Return once a dialog more than now is written with the job still running (rerunning it
        when it ended with failed dialogs)."""
        want = self.written() + 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None:
                self.start()
            elif self.proc.poll() is not None:
                code = self.ended()
                assert not (code == 0 and self.written() == self.limit), \
                    f"the run completed before {victim} could be killed; raise the target count"
                assert code == 1, f"eval exited with {code}:\n{self.log_tail()}"
                self.start()
            elif self.written() >= want:
                return
            time.sleep(0.05)
        pytest.fail(f"no dialog finished within {timeout}s before killing {victim}:\n{self.log_tail()}")

    def finish(self, max_runs: int = 8, timeout: float = 400) -> None:
        """Wait for the running job, and rerun until one run completes."""
        deadline = time.monotonic() + timeout
        while len(self.runs) < max_runs and time.monotonic() < deadline:
            if self.proc is None:
                self.start()
            elif self.proc.poll() is not None and self.ended() == 0:
                return
            time.sleep(0.1)
        pytest.fail(f"eval did not complete after runs {self.runs}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return (self.out.parent / f"{self.out.name}-eval.log").read_text(errors="replace")[-3000:]


# --------------------------------------------------------------------------- faults
def kill_tritonserver(stack) -> int:
    """kill -9 the tritonserver process itself; its launcher must notice and exit non-zero."""
    launcher = stack.services["triton"].popen
    servers = [p for p in stack.descendants("triton") if p.name() == "tritonserver"]
    assert servers, "no tritonserver under the Triton launcher"
    for p in servers:
        p.kill()
    launcher.wait(60)
    assert launcher.returncode not in (0, None), launcher.returncode
    stack.restart("triton")
    return launcher.returncode


def kill_triton_launcher(stack) -> None:
    """kill -9 only the launcher: the kernel must take its tritonserver down with it (no orphan on
    the ports), so that a new launcher starts on the same ports."""
    launcher = stack.services["triton"].popen
    servers = [p for p in stack.descendants("triton") if p.name() == "tritonserver"]
    assert servers
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(10)
    gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive, f"tritonserver outlived its launcher: {alive}"
    stack.restart("triton")


def inject(stack, job: EvalJob, victim: str) -> None:
    if victim == "eval":
        job.kill()
    elif victim == "triton":
        kill_tritonserver(stack)
    elif victim == "triton-launcher":
        kill_triton_launcher(stack)
    else:
        old = stack.services[victim].popen.pid
        stack.restart(victim)            # kill -9, then the same command on the same ports
        assert stack.services[victim].popen.pid != old


def run_with_faults(stack, world, out: Path, limit: int, victims: list[str]) -> EvalJob:
    job = EvalJob(stack, world, out, limit)
    job.start()
    for victim in victims:
        job.wait_for_dialog(victim)
        inject(stack, job, victim)
        print(f"killed {victim} after {job.written()} of {limit} dialogs; eval runs so far {job.runs}")
    job.finish()
    print(f"eval runs (exit codes): {job.runs}; failed dialogs on the way: {job.failures}")
    # a killed backend shows as UNAVAILABLE (after the orchestrator's retries), never as an internal error
    codes = {why.split(": ")[1] for why in job.failures.values()}     # "<image path>: <CODE>: ..."
    assert codes <= {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}, job.failures
    return job


def assert_stack_serving(stack) -> None:
    assert all(stack.alive().values()), stack.alive()
    deadline = time.monotonic() + 15        # the refiner re-checks a restarted Triton every 2 s
    for name in ("generator", "retriever", "refiner", "orchestrator"):
        while health_status(stack.target(name)) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_status(stack.target(name)) == 1, name


# --------------------------------------------------------------------------- tests
def test_generator_kill_9_mid_eval_then_rerun_equals_uninterrupted(stack, world, reference, tmp_path):
    ref = reference(QUICK_LIMIT)
    out = tmp_path / "gen"
    job = run_with_faults(stack, world, out, QUICK_LIMIT, ["generator"])
    assert job.runs[-1] == 0
    assert_same_result(out, ref, QUICK_LIMIT)
    assert_stack_serving(stack)


@pytest.mark.slow
def test_every_process_kill_9_in_turn_then_rerun_equals_uninterrupted(stack, world, reference, tmp_path):
    ref = reference(SLOW_LIMIT)
    out = tmp_path / "all"
    victims = ["generator", "triton", "retriever", "triton-launcher", "eval"]
    job = run_with_faults(stack, world, out, SLOW_LIMIT, victims)
    assert "killed" in job.runs and job.runs[-1] == 0
    assert 1 in job.runs, f"no run ended with failed dialogs, so no rerun completed any: {job.runs}"
    assert_same_result(out, ref, SLOW_LIMIT)
    assert_stack_serving(stack)
    # after the retriever's kill -9, `genir index` reopened its embedded Qdrant shard and found every
    # point there (nothing re-embedded), then the retriever reopened it and served identical ranks
    n = len(json.loads(world.corpus.read_text()))
    summaries = [ln for ln in (stack.workdir / "logs" / "index.log").read_text().splitlines() if "in corpus" in ln]
    assert len(summaries) >= 2 and f"{n} in corpus; kept {n}, added 0, changed 0, moved 0, removed 0" in summaries[-1]
