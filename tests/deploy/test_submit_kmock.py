"""`genir eval submit` as a real process against **kmock's KubernetesEmulator** — an in-memory
emulation of the Kubernetes API (no real API server exists on this machine). The emulator stores
objects and answers the API calls; it runs no controllers, so this test plays the Job controller
itself by writing Job status (completed/failed indexes, conditions) into the stored objects.

Added to the emulator, as a real API server does: creating an object in a namespace that does not
exist answers 404 ("namespaces \"x\" not found").
"""

from __future__ import annotations

import asyncio
import sys

import kmock
import pytest
import yaml
from kmock._internal import enums

from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.timeout(180)
JOBS = kmock.resource("batch/v1/jobs")


class KubernetesApiEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the namespace-existence check of the real API server."""

    async def _handle(self, request):
        if request.action == enums.action.CREATE and request.namespace:
            if not any(r.plural == "namespaces" and n == request.namespace for r, _, n in self.objects):
                raise kmock.KubernetesNotFoundError(reason="NotFound",
                                                    message=f'namespaces "{request.namespace}" not found')
        return await super()._handle(request)


class Emulated:
    """One emulated API server on a free port, with a kubeconfig pointing at it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path

    async def __aenter__(self):
        self.api = KubernetesApiEmulator()
        await self.api.__aenter__()
        self.server = kmock.Server(self.api)
        await self.server.__aenter__()
        self.api.objects["v1/namespaces", None, "genir"] = {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": "genir"}}
        self.kubeconfig = self.tmp_path / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": str(self.api.url).rstrip("/")}}],
            "users": [{"name": "nobody", "user": {}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "nobody"}}]}))
        return self

    async def __aexit__(self, *exc):
        await self.server.__aexit__(*exc)
        await self.api.__aexit__(*exc)

    def job(self, name, namespace="genir"):
        key = (JOBS, namespace, name)
        return self.api.objects[key] if key in self.api.objects and not self.api.objects[key].deleted else None

    async def wait_job(self, name, timeout=60.0):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (obj := self.job(name)) is None:
            assert loop.time() < end, f"job {name} was never created"
            await asyncio.sleep(0.05)
        return obj

    def set_status(self, name, status):
        """What the Job controller would write."""
        self.api.objects[JOBS, "genir", name].patch({"status": status})

    async def submit(self, *args, **kw):
        cmd = [sys.executable, "-m", "genir.cli", "eval", "submit", "--kubeconfig", str(self.kubeconfig),
               "--poll-interval", "0.1", *map(str, args)]
        return await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, **kw)


async def finish(proc, timeout=60):
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def done(condition):
    return {"type": condition, "status": "True", "reason": condition, "message": ""}


def test_submit_creates_the_indexed_job_follows_it_and_merges(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            proc = await k.submit("--shards", 3, "--mode", "verbal", "--image", "reg.example/genir:1.2",
                                  "--namespace", "genir", "--run-id", "nightly-1", "--rounds", 5, "--limit", 30)
            job = (await k.wait_job("genir-eval-nightly-1")).raw
            # the Job as created through the API
            spec = job["spec"]
            assert spec["completionMode"] == "Indexed" and spec["completions"] == 3 and spec["parallelism"] == 3
            assert spec["backoffLimitPerIndex"] == 3
            c = spec["template"]["spec"]["containers"][0]
            assert c["image"] == "reg.example/genir:1.2"
            args = c["args"]
            for flag, value in (("--mode", "verbal"), ("--rounds", "5"), ("--limit", "30"),
                                ("--shard", "$(JOB_COMPLETION_INDEX)/3"),
                                ("--out", "/results/nightly-1/shard-$(JOB_COMPLETION_INDEX)"),
                                ("--orchestrator", "orchestrator:50050")):
                assert args[args.index(flag) + 1] == value, flag
            assert job["metadata"]["namespace"] == "genir"
            assert k.job("genir-eval-nightly-1-merge") is None  # merge only after every shard succeeded
            # play the Job controller: shards finish one by one
            k.set_status("genir-eval-nightly-1", {"active": 3})
            await asyncio.sleep(0.3)
            k.set_status("genir-eval-nightly-1", {"active": 1, "succeeded": 2, "completedIndexes": "0,2"})
            await asyncio.sleep(0.3)
            assert k.job("genir-eval-nightly-1-merge") is None
            k.set_status("genir-eval-nightly-1", {"active": 0, "succeeded": 3, "completedIndexes": "0-2",
                                                  "conditions": [done("SuccessCriteriaMet"), done("Complete")]})
            merge = (await k.wait_job("genir-eval-nightly-1-merge")).raw
            margs = merge["spec"]["template"]["spec"]["containers"][0]["args"]
            assert margs == ["eval", "merge", "/results/nightly-1/shard-0", "/results/nightly-1/shard-1",
                             "/results/nightly-1/shard-2", "--out", "/results/nightly-1/merged",
                             "--image-root", "/data/images"]
            assert proc.returncode is None  # still following the merge
            k.set_status("genir-eval-nightly-1-merge", {"succeeded": 1, "conditions": [done("Complete")]})
            rc, out, err = await finish(proc)
            assert rc == 0, err
            assert "merged results: results:/results/nightly-1/merged" in out
            assert "3/3" in err  # the progress bar reached every shard
            posts = [r for r in k.api["post"]]
            assert [r.data["metadata"]["name"] for r in posts] == ["genir-eval-nightly-1", "genir-eval-nightly-1-merge"]

    asyncio.run(scenario())


def test_dry_run_prints_the_manifests_and_calls_no_api(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            proc = await k.submit("--shards", 2, "--image", "genir", "--run-id", "dry", "--dry-run")
            rc, out, err = await finish(proc)
            assert rc == 0, err
            docs = list(yaml.safe_load_all(out))
            assert [d["metadata"]["name"] for d in docs] == ["genir-eval-dry", "genir-eval-dry-merge"]
            assert docs[0]["spec"]["completionMode"] == "Indexed"
            assert len(k.api) == 0  # not a single request reached the API

    asyncio.run(scenario())


def test_existing_job_is_a_clear_409_error_unless_replace(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            old = {"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "genir-eval-again", "namespace": "genir", "labels": {"old": "yes"}},
                   "spec": {"completions": 9}}
            k.api.objects[JOBS, "genir", "genir-eval-again"] = old
            rc, out, err = await finish(await k.submit("--shards", 2, "--image", "genir", "--run-id", "again",
                                                       "--no-wait"))
            assert rc == 1
            assert "'genir-eval-again' already exists in namespace 'genir'" in err and "--replace" in err
            assert "Traceback" not in err
            assert k.job("genir-eval-again").raw["spec"]["completions"] == 9  # untouched
            rc, out, err = await finish(await k.submit("--shards", 2, "--image", "genir", "--run-id", "again",
                                                       "--no-wait", "--replace"))
            assert rc == 0, err
            assert len(k.api["delete"]) == 1
            assert k.job("genir-eval-again").raw["spec"]["completions"] == 2  # the new spec
            assert k.job("genir-eval-again-merge") is not None  # --no-wait creates both at once

    asyncio.run(scenario())


def test_missing_namespace_and_vanished_job_are_clear_404_errors(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            rc, out, err = await finish(await k.submit("--shards", 2, "--image", "genir", "--namespace", "nope",
                                                       "--run-id", "x"))
            assert rc == 1
            assert "namespace 'nope' not found" in err and "Traceback" not in err
            proc = await k.submit("--shards", 2, "--image", "genir", "--run-id", "gone")
            await k.wait_job("genir-eval-gone")
            k.api.objects[JOBS, "genir", "genir-eval-gone"].delete()  # someone ran kubectl delete job
            rc, out, err = await finish(proc)
            assert rc == 1 and "disappeared" in err and "Traceback" not in err

    asyncio.run(scenario())


def test_failed_shards_fail_the_submission_without_merging(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            proc = await k.submit("--shards", 4, "--image", "genir", "--run-id", "bad")
            await k.wait_job("genir-eval-bad")
            k.set_status("genir-eval-bad", {"succeeded": 3, "failed": 4, "completedIndexes": "0,2-3",
                                            "failedIndexes": "1", "conditions": [
                                                {"type": "Failed", "status": "True", "reason": "FailedIndexes",
                                                 "message": "Job has failed indexes"}]})
            rc, out, err = await finish(proc)
            assert rc == 1
            assert "failed shard(s): 1" in err and "kubectl -n genir logs job/genir-eval-bad" in err
            assert k.job("genir-eval-bad-merge") is None

    asyncio.run(scenario())


def test_bad_arguments_exit_2_before_any_call(tmp_path):
    async def scenario():
        async with Emulated(tmp_path) as k:
            for args, msg in ((["--image", "genir"], "--shards"), (["--shards", 2], "--image"),
                              (["--shards", 2, "--image", "g", "--run-id", "Bad_Name"], "--run-id"),
                              # issue 16, problem 6: the token never travels as a Job argument
                              (["--shards", 2, "--image", "g", "--eval-arg=--token=s3cret"], "--token-secret"),
                              (["--shards", 2, "--image", "g", "--token-secret", "Bad Secret"], "--token-secret")):
                rc, out, err = await finish(await k.submit(*args))
                assert rc == 2 and msg in err, (args, err)
            assert len(k.api) == 0

    asyncio.run(scenario())


def test_unreachable_api_server_is_a_clear_error(tmp_path):
    """No emulator at all: the kubeconfig points at a closed port."""
    import subprocess

    from testkit.procs import free_port

    cfg = tmp_path / "kubeconfig"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {}}], "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    out = subprocess.run([sys.executable, "-m", "genir.cli", "eval", "submit", "--shards", "2", "--image", "g",
                          "--run-id", "r", "--kubeconfig", str(cfg)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "cannot reach the Kubernetes API" in out.stderr and "Traceback" not in out.stderr
