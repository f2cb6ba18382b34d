"""`genir eval submit`: run an evaluation on Kubernetes as an Indexed Job, then merge the shards.

    genir eval submit --shards 8 --mode genir --image registry/genir:0.1.0 --namespace genir
                      [--run-id ID] [--rounds 10] [--limit N] [--dry-run] [--replace] [--no-wait]

Shard I of N is pod I of an Indexed Job (`completionMode: Indexed`): each pod runs
`genir eval run --shard $(JOB_COMPLETION_INDEX)/N --out /results/RUN/shard-$(JOB_COMPLETION_INDEX)`
against the orchestrator Service, on the shared `results` volume. A failed shard is retried on its
own (`backoffLimitPerIndex`) and resumes from its dialogs.jsonl; bad input (exit code 2) fails the
index at once instead of being retried. When every index has succeeded, a merge Job runs
`genir eval merge` into /results/RUN/merged. Its init container also waits for all shards to be
finished, so with `--no-wait` both Jobs are created at once and the cluster sequences them.

`--dry-run` prints both manifests as YAML and talks to no cluster. deploy/k8s/jobs/eval/ holds
such a rendering (kept in sync by tests/deploy).

Exit codes: 0 merged (or created, with --no-wait); 1 failed (API error, failed shards, job gone);
2 bad arguments; 124 --timeout passed (the Jobs keep running).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone

from genir import contract
from services.common.config import flags

SERVICE = "submit"
MODES = contract.MODES + tuple(contract.MODE_ALIASES)  # the old names too: `genir eval` warns about them
EVAL_METRICS_PORT = 9104
RESULTS_MOUNT = "/results"
DATA_MOUNT = "/data"
COMPLETE, FAILED = ("Complete", "SuccessCriteriaMet"), ("Failed", "FailureTarget")
RUN_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")

# Init step of the merge Job: waits until every shard has written its summary and a run.json that
# records no failed dialogs (run.json is rewritten without "failed" when a shard (re)starts).
WAIT_FOR_SHARDS = """\
import json, os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
def done(i):
    d = os.path.join(root, "shard-%d" % i)
    try:
        info = json.load(open(os.path.join(d, "run.json")))
    except (OSError, ValueError):
        return False
    return os.path.exists(os.path.join(d, "summary.json")) and "failed" in info and not info["failed"]
while True:
    left = [i for i in range(n) if not done(i)]
    if not left:
        break
    print("waiting for shard(s) %s under %s" % (left, root), flush=True)
    time.sleep(20)
"""


class SubmitError(Exception):
    """A failure explained to the user (exit code 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = flags(parser, SERVICE)
    f("shards", default=None, type=int, help="number of shards = completions of the Indexed Job (required)")
    f("mode", default="genir", choices=MODES, help="dialog mode")
    f("image", default=None, help="genir image, e.g. registry.example.com/genir/genir:0.1.0 (required)")
    f("namespace", default="genir", help="namespace of the genir deployment")
    f("run-id", default=None, help="names the Jobs (genir-eval-RUN) and the results folder /results/RUN "
      "(lowercase letters, digits, '-'; default: MODE-UTCTIMESTAMP); reuse it with --replace to resume")
    f("parallelism", default=None, type=int, help="shards running at once (default: all)")
    f("backoff-limit-per-index", default=3, type=int, help="retries of one shard before it counts as failed")
    f("max-failed-indexes", default=None, type=int, help="stop the whole Job once this many shards failed")
    f("queries", default=f"{DATA_MOUNT}/queries.json", help="queries file inside the pod (data volume)")
    f("corpus", default=f"{DATA_MOUNT}/corpus.json", help="corpus file inside the pod (data volume)")
    f("image-root", default=f"{DATA_MOUNT}/images", help="corpus image folder inside the pod")
    f("rounds", default=10, type=int, help="feedback rounds after round 0")
    f("limit", default=None, type=int, help="only the first N targets (before sharding)")
    f("concurrency", default=4, type=int, help="dialogs in flight per shard")
    f("k", default="1,5,10", help="cut-offs for Hits/Recall/MRR")
    f("seed", default=0, type=int, help="base seed")
    f("orchestrator", default="orchestrator:50050", help="orchestrator address as seen from the pods")
    f("results-claim", default="results", help="PersistentVolumeClaim for results (ReadWriteMany)")
    f("data-claim", default="data", help="PersistentVolumeClaim holding queries, corpus and images")
    f("cpu", default="500m", help="CPU request per shard pod")
    f("memory", default="1Gi", help="memory request per shard pod (the limit is twice this)")
    f("token-secret", default="genir-auth:token", help="Secret NAME:KEY holding the orchestrator's bearer token, "
      "given to the shards as $GENIR_EVAL_TOKEN by secretKeyRef ('' = none: an orchestrator without auth)")
    f("ttl", default=604800, type=int, help="seconds a finished Job (and its pods' logs) is kept")
    f("merge-deadline", default=172800, type=int, help="seconds the merge Job may wait for the shards "
      "(with --no-wait it is what ends a run whose shard failed)")
    parser.add_argument("--eval-arg", action="append", default=[], metavar="ARG",
                        help="extra argument passed to `genir eval run` (repeatable), e.g. --eval-arg=--steps=28")
    f("merge", default=True, bool_flag=True, help="run the merge Job after the shards")
    f("dry-run", default=False, bool_flag=True, help="print the Job manifests (YAML) and exit")
    f("replace", default=False, bool_flag=True, help="delete Jobs of the same run id first (results are kept, "
      "so finished dialogs are skipped)")
    f("wait", default=True, bool_flag=True, help="follow the Job with a progress bar until merged")
    f("timeout", default=None, type=float, help="give up following after this many seconds (Jobs keep running)")
    f("poll-interval", default=5.0, type=float, help="seconds between status reads")
    f("progress", default=True, bool_flag=True, help="progress bar on stderr")
    f("kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
    f("context", default=None, help="kubeconfig context")


# ----------------------------------------------------------------------------------------- manifests
def job_names(run_id: str) -> tuple[str, str]:
    return f"genir-eval-{run_id}", f"genir-eval-{run_id}-merge"


def _labels(run_id: str, name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "eval",
            "app.kubernetes.io/part-of": "genir", "genir.io/eval-run": run_id}


def _pod_security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _volumes(args) -> list[dict]:
    return [{"name": "results", "persistentVolumeClaim": {"claimName": args.results_claim}},
            {"name": "data", "persistentVolumeClaim": {"claimName": args.data_claim, "readOnly": True}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]


def _mounts() -> list[dict]:
    return [{"name": "results", "mountPath": RESULTS_MOUNT},
            {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"}]


def _resources(args) -> dict:
    return {"requests": {"cpu": str(args.cpu), "memory": str(args.memory)},
            "limits": {"memory": _double(str(args.memory))}}


def _double(quantity: str) -> str:
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    return f"{int(m.group(1)) * 2}{m.group(2)}" if m else quantity


def _token_env(args) -> list[dict]:
    """The bearer token from a Secret: never in the Job's arguments (visible to anyone who can get Jobs)."""
    if not args.token_secret:
        return []
    name, _, key = args.token_secret.partition(":")
    return [{"name": "GENIR_EVAL_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key or "token"}}}]


def eval_args(args, run_id: str) -> list[str]:
    """`genir eval run` arguments of every shard pod; Kubernetes expands $(JOB_COMPLETION_INDEX)."""
    out = ["eval", "run", "--queries", args.queries, "--corpus", args.corpus, "--image-root", args.image_root,
           "--mode", args.mode, "--rounds", str(args.rounds), "--concurrency", str(args.concurrency),
           "--k", args.k, "--seed", str(args.seed),
           "--shard", f"$(JOB_COMPLETION_INDEX)/{args.shards}",
           "--out", f"{RESULTS_MOUNT}/{run_id}/shard-$(JOB_COMPLETION_INDEX)",
           "--orchestrator", args.orchestrator,
           "--metrics-host", "0.0.0.0", "--metrics-port", str(EVAL_METRICS_PORT), "--no-progress"]
    if args.limit is not None:
        out += ["--limit", str(args.limit)]
    return out + list(args.eval_arg)


def eval_job(args, run_id: str) -> dict:
    name, _ = job_names(run_id)
    labels = _labels(run_id, "eval")
    spec = {
        "completionMode": "Indexed",
        "completions": args.shards,
        "parallelism": args.parallelism or args.shards,
        "backoffLimitPerIndex": args.backoff_limit_per_index,
        "ttlSecondsAfterFinished": args.ttl,
        # Exit code 2 is bad input: retrying cannot help. Evictions/preemptions do not count.
        "podFailurePolicy": {"rules": [
            {"action": "FailIndex", "onExitCodes": {"containerName": "eval", "operator": "In", "values": [2]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {
            "metadata": {"labels": {**labels, "genir.io/metrics": "true"}},
            "spec": {
                "restartPolicy": "Never",  # required by podFailurePolicy; retries are new pods
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": _pod_security(),
                "containers": [{
                    "name": "eval",
                    "image": args.image,
                    "args": eval_args(args, run_id),
                    # Set by the Job controller too; declared so that $(...) expansion in args is explicit.
                    "env": [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                            *_token_env(args)],
                    "ports": [{"name": "metrics", "containerPort": EVAL_METRICS_PORT}],
                    "resources": _resources(args),
                    "securityContext": _container_security(),
                    "volumeMounts": _mounts(),
                }],
                "volumes": _volumes(args),
            },
        },
    }
    if args.max_failed_indexes is not None:
        spec["maxFailedIndexes"] = args.max_failed_indexes
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": args.namespace, "labels": labels,
                         "annotations": {"genir.io/shards": str(args.shards), "genir.io/mode": args.mode}},
            "spec": spec}


def merge_job(args, run_id: str) -> dict:
    _, name = job_names(run_id)
    labels = _labels(run_id, "eval-merge")
    root = f"{RESULTS_MOUNT}/{run_id}"
    shards = [f"{root}/shard-{i}" for i in range(args.shards)]
    base = {"image": args.image, "securityContext": _container_security(), "volumeMounts": _mounts()}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": args.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 2,
                "ttlSecondsAfterFinished": args.ttl,
                "activeDeadlineSeconds": args.merge_deadline,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": _pod_security(),
                        "initContainers": [{
                            "name": "wait-for-shards", **base,
                            "command": ["python", "-c", WAIT_FOR_SHARDS, root, str(args.shards)],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                        }],
                        "containers": [{
                            "name": "merge", **base,
                            "args": ["eval", "merge", *shards, "--out", f"{root}/merged",
                                     "--image-root", args.image_root],
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                        }],
                        "volumes": _volumes(args),
                    },
                },
            }}


def manifests(args, run_id: str) -> list[dict]:
    jobs = [eval_job(args, run_id)]
    if args.merge:
        jobs.append(merge_job(args, run_id))
    return jobs


def to_yaml(docs: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)


# ----------------------------------------------------------------------------------------- status
def count_indexes(text: str | None) -> int:
    """Size of a Job status index set such as "0-3,7,9-10" (-> 7)."""
    n = 0
    for part in filter(None, (text or "").split(",")):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def condition(job: dict, types: tuple[str, ...]) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in types and c.get("status") == "True":
            return c
    return None


# ----------------------------------------------------------------------------------------- cluster
class Cluster:
    """The few batch/v1 Job calls submit needs, with API errors turned into SubmitError."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str):
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
        except Exception as e:  # no kubeconfig: inside a pod, use its service account
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise SubmitError(f"no Kubernetes configuration: {e}") from None
        self.api = client.BatchV1Api()
        self.host = self.api.api_client.configuration.host
        self.namespace = namespace

    def _call(self, what: str, fn, *a, **k):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*a, **k)
        except ApiException as e:
            e.what = what
            raise
        except HTTPError as e:
            raise SubmitError(f"cannot reach the Kubernetes API at {self.host} ({what}): {e}") from None

    def create(self, job: dict) -> dict:
        resp = self._call(f"create job {job['metadata']['name']}", self.api.create_namespaced_job,
                          self.namespace, job, _preload_content=False)
        return json.loads(resp.data)

    def read(self, name: str) -> dict:
        resp = self._call(f"read job {name}", self.api.read_namespaced_job, name, self.namespace,
                          _preload_content=False)
        return json.loads(resp.data)

    def delete(self, name: str) -> None:
        # Foreground: the Job object stays until its pods are gone, so a replacement never runs
        # beside the old pods on the same shard folders.
        self._call(f"delete job {name}", self.api.delete_namespaced_job, name, self.namespace,
                   propagation_policy="Foreground", _preload_content=False)


def _api_message(e) -> str:
    try:
        body = json.loads(e.body)
        return body.get("message") or e.reason
    except (TypeError, ValueError):
        return str(e.reason)


def create_job(cluster: Cluster, job: dict, replace: bool, poll: float) -> None:
    from kubernetes.client.exceptions import ApiException

    name, ns = job["metadata"]["name"], cluster.namespace
    try:
        cluster.create(job)
        return
    except ApiException as e:
        if e.status == 404:
            raise SubmitError(f"namespace {ns!r} not found ({_api_message(e)}); deploy genir first "
                              f"(kubectl apply -k deploy/k8s/overlays/gpu) or pass --namespace") from None
        if e.status != 409:
            raise SubmitError(f"{e.what}: HTTP {e.status} {_api_message(e)}") from None
        if not replace:
            raise SubmitError(f"job {name!r} already exists in namespace {ns!r}; pass --replace to delete it and "
                              f"start again (finished dialogs on the results volume are kept and skipped), "
                              f"or choose another --run-id") from None
    print(f"replacing job {ns}/{name}", file=sys.stderr)
    delete_quietly(cluster, name)
    wait_gone(cluster, name, poll)
    try:
        cluster.create(job)
    except ApiException as e:
        raise SubmitError(f"{e.what}: HTTP {e.status} {_api_message(e)}") from None


def delete_quietly(cluster: Cluster, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.delete(name)
    except ApiException as e:
        if e.status != 404:
            raise SubmitError(f"{e.what}: HTTP {e.status} {_api_message(e)}") from None


def wait_gone(cluster: Cluster, name: str, poll: float, timeout: float = 300.0) -> None:
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cluster.read(name)
        except ApiException as e:
            if e.status == 404:
                return
            raise SubmitError(f"{e.what}: HTTP {e.status} {_api_message(e)}") from None
        time.sleep(min(poll, 2.0))
    raise SubmitError(f"job {name!r} still exists {timeout:.0f}s after deletion")


class Timeout(Exception):
    pass


def follow(cluster: Cluster, name: str, total: int, args, unit: str) -> dict:
    """Poll the Job until it completes or fails; a progress bar counts finished indexes."""
    from kubernetes.client.exceptions import ApiException
    from tqdm import tqdm

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    bar = tqdm(total=total, unit=unit, desc=name, disable=not args.progress, file=sys.stderr, dynamic_ncols=True)
    try:
        while True:
            try:
                job = cluster.read(name)
            except ApiException as e:
                if e.status == 404:
                    raise SubmitError(f"job {name!r} disappeared from namespace {cluster.namespace!r} "
                                      f"(deleted while running?)") from None
                raise SubmitError(f"{e.what}: HTTP {e.status} {_api_message(e)}") from None
            status = job.get("status") or {}
            done = (count_indexes(status.get("completedIndexes")) if "completedIndexes" in status
                    else int(status.get("succeeded") or 0))
            bar.update(max(0, min(done, total) - bar.n))
            failed_now = (count_indexes(status.get("failedIndexes")) if "failedIndexes" in status
                          else status.get("failed", 0))
            bar.set_postfix(active=status.get("active", 0), failed=failed_now, refresh=False)
            if condition(job, COMPLETE):
                return job
            failed = condition(job, FAILED)
            if failed:
                which = status.get("failedIndexes")
                raise SubmitError(f"job {name!r} failed: {failed.get('reason', '')} {failed.get('message', '')}"
                                  + (f"; failed shard(s): {which}" if which else "")
                                  + f". Logs: kubectl -n {cluster.namespace} logs job/{name}")
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(name)
            time.sleep(args.poll_interval)
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------- main
def check_args(args) -> str:
    if args.shards is None or args.shards < 1:
        raise ValueError("--shards: required, >= 1")
    if not args.image:
        raise ValueError("--image: required (the genir image the cluster pulls)")
    if args.parallelism is not None and args.parallelism < 1:
        raise ValueError("--parallelism: must be >= 1")
    if args.backoff_limit_per_index < 0:
        raise ValueError("--backoff-limit-per-index: must be >= 0")
    if any(a.split("=")[0] == "--token" for a in args.eval_arg):
        raise ValueError("--eval-arg --token would put the token into the Job (readable by anyone who can get "
                         "Jobs): use --token-secret NAME:KEY")
    if args.token_secret and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*(:[-._a-zA-Z0-9]+)?", args.token_secret):
        raise ValueError(f"--token-secret: {args.token_secret!r} is not NAME[:KEY] of a Secret")
    run_id = args.run_id or f"{args.mode}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if not RUN_ID.match(run_id):
        raise ValueError(f"--run-id: {run_id!r} must be 1-40 lowercase letters, digits or '-', "
                         "starting and ending with a letter or digit")
    return run_id


def main(args) -> int:
    try:
        run_id = check_args(args)
    except ValueError as e:
        print(f"genir eval submit: {e}", file=sys.stderr)
        return 2
    docs = manifests(args, run_id)
    if args.dry_run:
        sys.stdout.write(to_yaml(docs))
        return 0
    eval_name, merge_name = job_names(run_id)
    ns = args.namespace
    try:
        cluster = Cluster(args.kubeconfig, args.context, ns)
        create_job(cluster, docs[0], args.replace, args.poll_interval)
        print(f"created job {ns}/{eval_name}: {args.shards} shard(s), results in "
              f"{args.results_claim}:{RESULTS_MOUNT}/{run_id}", file=sys.stderr)
        if not args.wait:
            if args.merge:  # its init container waits for the shards on the volume
                create_job(cluster, docs[1], args.replace, args.poll_interval)
                print(f"created job {ns}/{merge_name}", file=sys.stderr)
            print(f"follow with: kubectl -n {ns} get job {eval_name} -w", file=sys.stderr)
            return 0
        follow(cluster, eval_name, args.shards, args, "shard")
        print(f"all {args.shards} shard(s) done", file=sys.stderr)
        if not args.merge:
            return 0
        create_job(cluster, docs[1], args.replace, args.poll_interval)
        follow(cluster, merge_name, 1, args, "merge")
    except SubmitError as e:
        print(f"genir eval submit: {e}", file=sys.stderr)
        return 1
    except Timeout as e:
        print(f"genir eval submit: --timeout {args.timeout:g}s passed while following job {e}; it keeps "
              f"running (kubectl -n {ns} get job {e})", file=sys.stderr)
        return 124
    print(f"merged results: {args.results_claim}:{RESULTS_MOUNT}/{run_id}/merged "
          f"(summary.json, summary.csv, hits_at_k.png, report.html)")
    return 0
