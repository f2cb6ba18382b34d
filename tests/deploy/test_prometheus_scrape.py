"""A real Prometheus server (Debian package) scrapes the real genir services — Triton + refiner,
generator, retriever and orchestrator started by stack.up.Stack on tiny models — with the
repository's deploy/prometheus/prometheus.yml (ports rewritten to the test's free ports, 1 s scrape
and rule intervals) and its rules, and answers histogram_quantile queries over
grpc_server_handling_seconds and genir_stage_seconds after one simulated GenIR dialog."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import urllib.parse
import urllib.request

import grpc
import pytest
import yaml

from genir.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from stack.up import Stack
from testkit.images import make_corpus
from testkit.procs import Proc, free_port
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.timeout(600)
PROM = ROOT / "deploy" / "prometheus"
# scrape job of the repo's config -> the Stack service whose metrics port it scrapes
JOB_SERVICE = {"genir-orchestrator": "orchestrator", "genir-generator": "generator", "genir-refiner": "refiner",
               "genir-retriever": "retriever", "triton": "triton"}


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("prom-stack")
    make_corpus(root / "images", 8, corpus_file=root / "corpus.json")
    s = Stack(tiny_models, root / "stack", corpus=root / "corpus.json", image_root=root / "images",
              collection="prom", ports="free", startup_timeout=300)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    """The repo's scrape config and rules, with every target moved to the stack's ports."""
    work = tmp_path_factory.mktemp("prometheus")
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(work / "rules" / "*.yml")]
    shutil.copytree(PROM / "rules", work / "rules")
    jobs = {sc["job_name"] for sc in cfg["scrape_configs"]}
    assert set(JOB_SERVICE) <= jobs and "genir-eval" in jobs
    idle = free_port()  # no evaluation runs during this test: its target must show as down
    for sc in cfg["scrape_configs"]:
        port = stack.metrics_port(JOB_SERVICE[sc["job_name"]]) if sc["job_name"] in JOB_SERVICE else idle
        for static in sc["static_configs"]:
            static["targets"] = [f"127.0.0.1:{port}"]
    # the rule groups evaluate every 30s in production; 1s here
    for path in (work / "rules").glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for g in rules["groups"]:
            g["interval"] = "1s"
        path.write_text(yaml.safe_dump(rules))
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = Proc([shutil.which("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                work / "prometheus.log").start()
    try:
        wait_for(lambda: proc.alive() and _ready(port), 30, "prometheus ready")
        yield port
    finally:
        proc.terminate(timeout=20)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_prometheus_scrapes_every_service_and_answers_latency_quantiles(stack, prometheus):
    port = prometheus

    def ups():
        got = {r["metric"]["job"]: r["value"][1] for r in query(port, "up")}
        return got if set(got) >= set(JOB_SERVICE) | {"genir-eval"} else None

    up = wait_for(ups, 30, "a first scrape of every target")
    assert {j: up[j] for j in JOB_SERVICE} == {j: "1" for j in JOB_SERVICE}, up
    assert up["genir-eval"] == "0"

    # A counter series is born at its first call, and rate() needs an increase it has seen: one
    # dialog creates every series, and once Prometheus has scraped them a second one moves them.
    def dialog(target_id):
        with grpc.insecure_channel(stack.target("orchestrator")) as ch:
            return list(orchestrator_pb2_grpc.OrchestratorStub(ch).RunDialog(
                orchestrator_pb2.RunDialogRequest(target_id=target_id, mode="genir", rounds=1), timeout=240))

    assert len(dialog("5")) == 2
    wait_for(lambda: query(port, 'genir_stage_seconds_count{stage="refine"}'), 30, "the first dialog scraped")
    assert len(dialog("3")) == 2

    def quantiles(promql):
        res = query(port, promql)
        return res if res and all(math.isfinite(float(r["value"][1])) for r in res) else None

    # per-RPC latency on the generator, as each service reports it
    gen = wait_for(lambda: quantiles(
        'histogram_quantile(0.5, sum by (le) (rate(grpc_server_handling_seconds_bucket'
        '{job="genir-generator", grpc_method="Generate"}[1m])))'), 30, "a Generate latency quantile")
    assert 0 < float(gen[0]["value"][1]) < 300
    # services with no call in the window have no quantile (NaN): "> 0" keeps the ones that served
    # each service's calls count once Prometheus has scraped it after them (1 s apart, later when busy)
    backends = {"genir.v1.Generator", "genir.v1.Retriever", "genir.v1.Refiner"}

    def serving():
        res = query(port, 'histogram_quantile(0.95, sum by (le, grpc_service) '
                          '(rate(grpc_server_handling_seconds_bucket[1m]))) > 0')
        return backends <= {r["metric"]["grpc_service"] for r in res or []}

    wait_for(serving, 30, "a latency quantile of every backend")

    # per-stage latency of the round, from the orchestrator
    stages = wait_for(lambda: quantiles(
        'histogram_quantile(0.95, sum by (le, stage) (rate(genir_stage_seconds_bucket[1m])))'), 30,
        "a genir_stage_seconds quantile")
    got = {r["metric"]["stage"]: float(r["value"][1]) for r in stages}
    assert {"generate", "retrieve", "compare", "refine"} <= set(got), got
    assert all(v > 0 for v in got.values()), got

    # the repository's recording rules, evaluated by this server on the same data
    recorded = wait_for(lambda: quantiles("genir:stage_seconds:p95"), 30, "the genir:stage_seconds:p95 rule")
    assert {"generate", "retrieve"} <= {r["metric"]["stage"] for r in recorded}
    ratio = wait_for(lambda: query(port, 'genir:grpc_server_error_ratio:rate5m{job="genir-generator"}'), 30,
                     "the error-ratio rule")
    assert float(ratio[0]["value"][1]) == 0.0
    # Triton's own counters arrive through the `triton` job
    triton = wait_for(lambda: query(port, 'sum(nv_inference_request_success{job="triton"}) > 0'), 30,
                      "Triton's nv_inference_request_success")
    assert float(triton[0]["value"][1]) >= 2  # compare + refine went through Triton


DASHBOARD = ROOT / "deploy/k8s/components/monitoring/genir-dashboard.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, with Grafana's variables as Grafana would expand
    them here: all namespaces, a 1-minute rate interval."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for t in panel["targets"]:
            out.append((panel["title"], t["expr"].replace("$namespace", ".*").replace("$__rate_interval", "1m")))
    return out


def test_every_dashboard_query_answers_with_data(stack, prometheus):
    """Issue 16, problem 10: the Grafana dashboard only shows what the services really export."""
    queries = dashboard_queries()
    assert len(queries) >= 12
    # the round panels need CreateSession/NextRound (the interactive path), not only RunDialog
    with grpc.insecure_channel(stack.target("orchestrator")) as ch:
        orch = orchestrator_pb2_grpc.OrchestratorStub(ch)
        for _ in range(2):
            session = orch.CreateSession(orchestrator_pb2.CreateSessionRequest(query="a red square"), timeout=240)
            wait_for(lambda: query(prometheus, 'grpc_server_handling_seconds_count{grpc_method="CreateSession"}'),
                     30, "CreateSession scraped")
            orch.NextRound(orchestrator_pb2.NextRoundRequest(session_id=session.session_id, feedback="bluer"),
                           timeout=240)
    empty = []
    for title, promql in queries:
        try:
            wait_for(lambda q=promql: query(prometheus, q), 40, promql)
        except AssertionError:
            empty.append((title, promql))
    assert not empty, f"dashboard queries without data: {empty}"
    # and the namespace variable's query is valid PromQL
    dash = json.loads(DASHBOARD.read_text())
    ns_var = [v for v in dash["templating"]["list"] if v["name"] == "namespace"][0]
    inner = re.fullmatch(r"label_values\((.+), namespace\)", ns_var["definition"]).group(1)
    assert query(prometheus, inner)
