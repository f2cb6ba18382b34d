"""What a GPU cluster needs beyond manifests that validate: one check per numbered problem of
issue 16, each on the rendered objects (`kubectl kustomize`) or the files the images are built from,
so that none of them can come back unnoticed. Alerts (problem 9) are checked by promtool
(test_prometheus_rules.py), the dashboard's queries (problem 10) against the real Prometheus
(test_prometheus_scrape.py), connection age and the health port on a real server
(test_server_options.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import yaml

from testkit.procs import free_port
from tests.deploy.conftest import KUBECTL, ROOT
from tests.deploy.test_manifests import containers, env_of, get, of_kind, pod_spec, selects

GENIR_SERVERS = ("orchestrator", "generator", "refiner", "retriever")
BACKENDS = ("generator", "refiner", "retriever")
GPU_PODS = ("generator", "triton")


def minor(v: str) -> tuple[int, int]:
    major, mnr = re.match(r"v?(\d+)\.(\d+)", v).groups()
    return int(major), int(mnr)


def secret_ref(container: dict, name: str) -> dict | None:
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("valueFrom", {}).get("secretKeyRef")
    return None


# --------------------------------------------------------------------------- 1. Qdrant version
def test_qdrant_server_is_within_one_minor_of_the_client_and_has_collection_metadata(objects):
    qdrant = containers(get(objects["overlays/gpu"], "StatefulSet", "qdrant"), init=False)[0]
    server = minor(qdrant["image"].rsplit(":", 1)[1])
    client = minor(version("qdrant-client"))
    assert server[0] == client[0] and abs(server[1] - client[1]) <= 1, (server, client)
    # collection metadata (model and dimension live there) arrived in server and client 1.16
    assert server >= (1, 16)
    floor = re.search(r"^qdrant-client>=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert floor and minor(floor.group(1)) >= (1, 16)


# --------------------------------------------------------------------------- 2. weights that arrive
def test_download_job_fills_exactly_the_folders_the_gpu_pods_wait_for_and_read(objects):
    job = get(objects["jobs/models"], "Job", "download-models")
    c = containers(job, init=False)[0]
    assert secret_ref(c, "HF_TOKEN") == {"name": "genir-hf", "key": "token"}  # gated checkpoints
    assert env_of(c)["HF_HUB_OFFLINE"] == "0"  # the image is offline by default
    script = c["args"][0]
    assert "os.umask(0o022)" in script and "0o644" in script  # readable by uid 1000 (Triton) and 10001
    assert ".genir-complete" in script
    folders = {line.split(",")[1] for line in env_of(c)["GENIR_MODELS"].split()}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert not mounts["/models"].get("readOnly")
    gpu = objects["overlays/gpu"]
    # what each GPU-overlay pod reads...
    read = {env_of(containers(get(gpu, "Deployment", "generator"), init=False)[0])["GENIR_GENERATOR_MODEL"],
            env_of(containers(get(gpu, "Deployment", "retriever"), init=False)[0])["GENIR_RETRIEVER_MODEL"],
            env_of(containers(get(objects["jobs/index/gpu"], "Job", "index-corpus"), init=False)[0])["GENIR_INDEX_MODEL"]}
    triton = containers(get(gpu, "Deployment", "triton"), init=False)[0]
    read |= {"/models/" + m["subPath"] for m in triton["volumeMounts"] if m["name"] == "models"}
    assert read == {f"/models/{f}" for f in folders}, (read, folders)
    # ...and each one waits for the download's completion marker of its folder first
    for kind, name, objs in (("Deployment", "generator", gpu), ("Deployment", "triton", gpu),
                             ("Deployment", "retriever", gpu), ("Job", "index-corpus", objects["jobs/index/gpu"])):
        init = [i for i in pod_spec(get(objs, kind, name)).get("initContainers", []) if i["name"] == "wait-for-models"]
        assert init, name
        waited = re.search(r"-e (\S+/\.genir-complete)", init[0]["args"][0]).group(1)
        # resolve the init container's own mounts (Triton mounts a subPath)
        mount = next(m for m in init[0]["volumeMounts"] if waited.startswith(m["mountPath"]))
        on_volume = Path("/models", mount.get("subPath", ""), Path(waited).relative_to(mount["mountPath"]))
        assert on_volume.parent.name in folders and on_volume.name == ".genir-complete", (name, waited)


def test_cuda_line_is_one_major_across_torch_wheels_and_triton():
    """NGC Triton release -> CUDA major of its base (NVIDIA's release notes): 25.01-25.07 CUDA 12.8-12.9,
    25.08 onwards CUDA 13.0."""
    services = (ROOT / "deploy/docker/services.Dockerfile").read_text()
    triton = (ROOT / "deploy/docker/triton.Dockerfile").read_text()

    def arg(text, name):
        return re.search(rf"^ARG {name}=(\S+)$", text, re.M).group(1)

    majors = set()
    for text in (services, triton):
        cuda = int(arg(text, "CUDA_MAJOR"))
        index = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", arg(text, "TORCH_INDEX_URL"))
        assert index and int(index.group(1)[:-1]) == cuda, arg(text, "TORCH_INDEX_URL")
        majors.add(cuda)
        # the build refuses a torch of another CUDA line instead of producing a broken image
        at = text.index("torch.version.cuda")
        assert "CUDA_MAJOR" in text[at - 200:at + 200] and "sys.exit" in text[at - 200:at + 200]
    year, month = map(int, re.fullmatch(r"(\d\d)\.(\d\d)-py3", arg(triton, "TRITON_TAG")).groups())
    triton_cuda = 13 if (year, month) >= (25, 8) else 12 if (year, month) >= (23, 1) else None
    majors.add(triton_cuda)
    assert len(majors) == 1, majors
    assert 'CUDA_VERSION%%.*' in triton  # the base image's own CUDA_VERSION is checked at build time


# --------------------------------------------------------------------------- 4. scaling on the queue
def test_generator_scales_on_its_queue_through_the_adapter_rule(objects):
    hpa = get(objects["overlays/gpu"], "HorizontalPodAutoscaler", "generator")
    assert hpa["spec"]["minReplicas"] >= 2  # problem 11: a rollout keeps one generator
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/adapter-rules.yaml").read_text())["rules"]["custom"]
    published = {r["name"]["as"] for r in rules}
    assert name in published
    exported = re.search(r'Gauge\("(\w+)"', (ROOT / "services/generator/batching.py").read_text()
                         .split("QUEUE_DEPTH =")[1]).group(1)
    assert name == exported and all(exported in r["seriesQuery"] for r in rules)
    # pods labels the ServiceMonitor scrape brings; the adapter maps them to the pod resource
    assert all(r["resources"]["overrides"]["pod"] == {"resource": "pod"} for r in rules)
    assert "HorizontalPodAutoscaler" not in {o["kind"] for o in objects["overlays/cpu-dev"]}  # no adapter there


# --------------------------------------------------------------------------- 5. load that spreads
def slowest_call(server: str) -> float:
    """The longest call each server answers, from the orchestrator's defaults (its calls' deadlines)."""
    import argparse

    from genir import contract
    from orchestrator.server import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([])
    return {"generator": args.generator_timeout, "refiner": args.refiner_timeout,
            "retriever": args.retriever_timeout,
            "orchestrator": (contract.MAX_DIALOG_ROUNDS + 1) * args.round_timeout}[server]  # a whole RunDialog


def test_every_server_recycles_connections_with_a_grace_longer_than_its_slowest_call(objects, monkeypatch):
    import argparse

    from services.common.config import ServerConfig, register

    for var in ("GENIR_PLAIN_MAX_CONNECTION_AGE", "GENIR_PLAIN_MAX_CONNECTION_AGE_GRACE"):
        monkeypatch.delenv(var, raising=False)
    p = argparse.ArgumentParser()
    register(p, ServerConfig, "plain", port=1, metrics_port=2)
    defaults = p.parse_args([])
    # outside Kubernetes (genir up) the defaults apply: they must not cut a RunDialog stream either
    assert defaults.max_connection_age > 0
    assert defaults.max_connection_age_grace > max(slowest_call(s) for s in GENIR_SERVERS)
    for overlay in ("overlays/gpu", "overlays/cpu-dev"):
        for name in GENIR_SERVERS:
            env = env_of(containers(get(objects[overlay], "Deployment", name), init=False)[0])
            age = float(env[f"GENIR_{name.upper()}_MAX_CONNECTION_AGE"])
            grace = float(env[f"GENIR_{name.upper()}_MAX_CONNECTION_AGE_GRACE"])
            assert 0 < age <= 600, (name, age)  # new replicas get traffic within minutes
            assert grace > slowest_call(name), (name, grace, slowest_call(name))


def test_orchestrator_dials_every_backend_through_a_headless_service_round_robin(objects):
    from services.common.channels import open_channel  # noqa: F401  (round_robin is set there)

    assert '("grpc.lb_policy_name", "round_robin")' in (ROOT / "services/common/channels.py").read_text()
    for overlay in ("overlays/gpu", "overlays/cpu-dev"):
        objs = objects[overlay]
        env = env_of(containers(get(objs, "Deployment", "orchestrator"), init=False)[0])
        for name in BACKENDS:
            target = env[f"GENIR_ORCHESTRATOR_{name.upper()}"]
            m = re.fullmatch(r"dns:///([a-z-]+):(\d+)", target)
            assert m, (name, target)
            svc = get(objs, "Service", m.group(1))
            assert svc["spec"].get("clusterIP") == "None", svc["metadata"]["name"]  # every pod's address
            pods = get(objs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
            assert selects({"matchLabels": svc["spec"]["selector"]}, pods)
            assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}


# --------------------------------------------------------------------------- 6. secrets and TLS
def test_tokens_and_the_qdrant_key_come_from_secrets_never_from_literals(objects):
    gpu = objects["overlays/gpu"]
    assert not of_kind(gpu, "Secret")  # production Secrets are created by the operator, not shipped
    token = {"name": "genir-auth", "key": "token"}
    backend = {"name": "genir-auth", "key": "backend-token"}
    orch = containers(get(gpu, "Deployment", "orchestrator"), init=False)[0]
    assert secret_ref(orch, "GENIR_AUTH_TOKEN") == token and secret_ref(orch, "GENIR_BACKEND_TOKEN") == backend
    for name in BACKENDS:
        assert secret_ref(containers(get(gpu, "Deployment", name), init=False)[0], "GENIR_AUTH_TOKEN") == backend
    key = {"name": "genir-qdrant", "key": "api-key"}
    assert secret_ref(containers(get(gpu, "StatefulSet", "qdrant"), init=False)[0], "QDRANT__SERVICE__API_KEY") == key
    for c in (containers(get(gpu, "Deployment", "retriever"), init=False)[0],
              containers(get(objects["jobs/index/gpu"], "Job", "index-corpus"), init=False)[0]):
        assert secret_ref(c, "GENIR_QDRANT_API_KEY") == key
    # eval submit: the token by secretKeyRef, and nowhere in the arguments
    for job in of_kind(objects["jobs/eval"], "Job"):
        for c in containers(job, init=False):
            assert not any("token" in a.lower() for a in c.get("args", []) + c.get("command", []))
    shard = containers(get(objects["jobs/eval"], "Job", "genir-eval-example"), init=False)[0]
    assert secret_ref(shard, "GENIR_EVAL_TOKEN") == token
    # the laptop overlay ships development values for exactly these secrets, marked as such
    dev = {s["metadata"]["name"]: s for s in of_kind(objects["overlays/cpu-dev"], "Secret")}
    assert set(dev) == {"genir-auth", "genir-qdrant"}
    assert all(s["metadata"]["labels"]["genir.io/dev-only"] == "true" for s in dev.values())


def test_retriever_sends_the_qdrant_api_key_from_env_or_file(tmp_path, monkeypatch):
    from services.retriever.store import qdrant_api_key

    monkeypatch.delenv("GENIR_QDRANT_API_KEY_FILE", raising=False)
    monkeypatch.setenv("GENIR_QDRANT_API_KEY", "from-env")
    assert qdrant_api_key() == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    monkeypatch.setenv("GENIR_QDRANT_API_KEY_FILE", str(tmp_path / "key"))
    assert qdrant_api_key() == "from-file"  # the mounted file wins
    (tmp_path / "key").write_text("")
    import pytest

    with pytest.raises(SystemExit, match="empty"):
        qdrant_api_key()


def test_server_mode_client_carries_the_api_key_on_grpc_and_rest(monkeypatch):
    """The real qdrant-client of the retriever's server mode (no call is made: no Qdrant server
    binary exists on the test machines; qdrant-client's local mode stands in for one elsewhere)."""
    from services.retriever.store import open_store

    monkeypatch.delenv("GENIR_QDRANT_API_KEY_FILE", raising=False)
    monkeypatch.setenv("GENIR_QDRANT_API_KEY", "k-123")
    store = open_store(qdrant_url=f"http://127.0.0.1:{free_port()}")  # nothing listens: no call succeeds
    try:
        remote = store.client._client
        assert ("api-key", "k-123") in remote._grpc_headers  # the retriever prefers gRPC (6334)
        assert remote._rest_headers["api-key"] == "k-123"
    finally:
        store.close()


def test_tls_component_mounts_cert_manager_certificates_and_keeps_probes_working(objects):
    objs = objects["overlays/tls"]
    certs = {c["spec"]["secretName"]: c for c in of_kind(objs, "Certificate")}
    orch = get(objs, "Deployment", "orchestrator")
    orch_env = env_of(containers(orch, init=False)[0])
    for name in BACKENDS:
        d = get(objs, "Deployment", name)
        c = containers(d, init=False)[0]
        env = env_of(c)
        S = name.upper()
        secret = next(v["secret"]["secretName"] for v in pod_spec(d)["volumes"] if "secret" in v)
        cert = certs[secret]
        mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "tls")
        assert env[f"GENIR_{S}_TLS_CERT"] == f"{mount}/tls.crt" and env[f"GENIR_{S}_TLS_KEY"] == f"{mount}/tls.key"
        assert env[f"GENIR_{S}_TLS_CLIENT_CA"] == f"{mount}/ca.crt"  # mTLS: only the genir CA's clients
        # the host name the orchestrator dials is in the certificate
        host = re.fullmatch(r"dns:///([a-z-]+):\d+", orch_env[f"GENIR_ORCHESTRATOR_{S}"]).group(1)
        assert host in cert["spec"]["dnsNames"] and "server auth" in cert["spec"]["usages"]
        # kubelet gRPC probes cannot do TLS: they use the plaintext health port
        health = int(env[f"GENIR_{S}_HEALTH_PORT"])
        assert health != int(env[f"GENIR_{S}_PORT"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == health, (name, probe)
    orch_secret = next(v["secret"]["secretName"] for v in pod_spec(orch)["volumes"] if "secret" in v)
    assert "client auth" in certs[orch_secret]["spec"]["usages"]
    assert orch_env["GENIR_ORCHESTRATOR_CLIENT_TLS_CERT"].endswith("/tls.crt")
    issuers = {i["metadata"]["name"] for i in of_kind(objs, "Issuer")}
    assert all(c["spec"]["issuerRef"]["name"] in issuers for c in certs.values())


# --------------------------------------------------------------------------- 7 and 12. Jobs
def test_jobs_live_outside_the_service_overlays_with_ttls_deadlines_and_a_gpu(objects):
    for path, name in (("jobs/index/gpu", "index-corpus"), ("jobs/index/cpu-dev", "index-corpus"),
                       ("jobs/models", "download-models"), ("jobs/eval", "genir-eval-example"),
                       ("jobs/eval", "genir-eval-example-merge")):
        spec = get(objects[path], "Job", name)["spec"]
        assert spec["ttlSecondsAfterFinished"] > 0, (path, name)
        if name != "genir-eval-example":  # shards end through backoffLimitPerIndex
            assert spec["activeDeadlineSeconds"] > 0, (path, name)
    index = get(objects["jobs/index/gpu"], "Job", "index-corpus")
    c = containers(index, init=False)[0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and env_of(c)["GENIR_INDEX_DEVICE"] == "cuda"
    assert pod_spec(index)["tolerations"] == pod_spec(get(objects["overlays/gpu"], "Deployment", "generator"))["tolerations"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(objects["jobs/index/cpu-dev"])


def test_submit_role_grants_what_submit_calls(objects):
    role = get(objects["jobs/eval"], "Role", "genir-eval-submit")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    verb = {"create": "create", "read": "get", "delete": "delete", "list": "list", "patch": "patch",
            "replace": "update"}
    calls = set(re.findall(r"self\.api\.(\w+?)_namespaced_job", (ROOT / "evaluation/submit.py").read_text()))
    assert calls
    for call in calls:
        assert ("batch", "jobs", verb[call]) in granted, call
    binding = get(objects["jobs/eval"], "RoleBinding", "genir-eval-submit")
    sa = get(objects["jobs/eval"], "ServiceAccount", "genir-eval-submit")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "genir"}]


# --------------------------------------------------------------------------- 8. monitoring component
def test_monitoring_is_a_component_every_port_scraped_once_and_selected_by_release(objects):
    text = (ROOT / "deploy/k8s/components/monitoring/kustomization.yaml").read_text()
    assert yaml.safe_load(text)["kind"] == "Component"
    release = yaml.safe_load((ROOT / "deploy/k8s/components/monitoring/release-label.yaml").read_text())[0]
    for overlay, base in (("overlays/monitoring", "overlays/gpu"), ("overlays/cpu-dev-monitoring", "overlays/cpu-dev")):
        objs = objects[overlay]
        # the component adds its objects and nothing else changes
        assert len(objs) - len(objects[base]) == len([o for o in objs if o["kind"] in
                                                      ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap")])
        for o in objs:
            if o["apiVersion"].startswith("monitoring.coreos.com/"):
                assert o["metadata"]["labels"]["release"] == release["value"], o["metadata"]["name"]
        # each (pod, metrics port) is scraped by exactly one (monitor endpoint, Service) pair
        services = of_kind(objs, "Service")
        scraped: dict[tuple[str, int], int] = {}
        for sm in of_kind(objs, "ServiceMonitor"):
            for ep in sm["spec"]["endpoints"]:
                for svc in services:
                    if not selects(sm["spec"]["selector"], svc["metadata"]["labels"]):
                        continue
                    for p in svc["spec"]["ports"]:
                        if p["name"] == ep["port"]:
                            key = (svc["spec"]["selector"]["app.kubernetes.io/name"], p["targetPort"])
                            scraped[key] = scraped.get(key, 0) + 1
        assert scraped[("qdrant", 6333)] == 1
        assert all(n == 1 for n in scraped.values()), scraped
        assert {("generator", 9101), ("refiner", 9102), ("retriever", 9103), ("orchestrator", 9100),
                ("triton", 8002)} <= set(scraped)
        qdrant_sm = get(objs, "ServiceMonitor", "qdrant")
        assert qdrant_sm["spec"]["endpoints"][0]["authorization"]["credentials"] == {"name": "genir-qdrant",
                                                                                    "key": "api-key"}


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(objects):
    cm = get(objects["overlays/monitoring"], "ConfigMap", "genir-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (body,) = cm["data"].values()
    dash = json.loads(body)
    assert dash == json.loads((ROOT / "deploy/k8s/components/monitoring/genir-dashboard.json").read_text())
    assert all(t["expr"] for p in dash["panels"] for t in p["targets"])


# --------------------------------------------------------------------------- 9. histogram buckets
def test_latency_buckets_are_fine_around_the_slo_and_reach_the_longest_call():
    from orchestrator.dialog import STAGE_SECONDS
    from services.common.metrics import LATENCY_BUCKETS, SERVER_HANDLING

    buckets = list(LATENCY_BUCKETS)
    assert 60 in buckets  # the round SLO's threshold is a bucket boundary (rules: le="60.0")
    between = [b for b in buckets if 5 <= b <= 120]
    assert all(hi / lo <= 1.5 for lo, hi in zip(between, between[1:], strict=False)), between  # no 5->10->30 jumps
    assert buckets[-1] >= slowest_call("orchestrator")  # a whole RunDialog stream
    # the histograms the rules and the dashboard read use them (prometheus_client keeps the bounds)
    for hist in (SERVER_HANDLING, STAGE_SECONDS):
        assert list(hist._upper_bounds[:-1]) == buckets, hist._name


# --------------------------------------------------------------------------- 11. storage and rollouts
def test_qdrant_snapshots_are_on_their_own_claim(objects):
    for overlay in ("overlays/gpu", "overlays/cpu-dev"):
        sts = get(objects[overlay], "StatefulSet", "qdrant")
        c = containers(sts, init=False)[0]
        path = env_of(c)["QDRANT__STORAGE__SNAPSHOTS_PATH"]
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == path)
        assert mount["name"] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}, overlay
        assert mount["name"] not in {v["name"] for v in pod_spec(sts).get("volumes", [])}  # no emptyDir


def test_gpu_rollouts_keep_a_replica_serving(objects):
    gpu = objects["overlays/gpu"]
    triton = get(gpu, "Deployment", "triton")
    assert triton["spec"]["replicas"] >= 2
    for name in GPU_PODS:
        ru = get(gpu, "Deployment", name)["spec"]["strategy"]["rollingUpdate"]
        assert ru["maxSurge"] == 0 and ru["maxUnavailable"] == 1
    assert get(gpu, "HorizontalPodAutoscaler", "generator")["spec"]["minReplicas"] >= 2


def test_storage_class_knob_is_documented_and_works_when_enabled(objects, tmp_path):
    for o in of_kind(objects["overlays/gpu"], "PersistentVolumeClaim"):
        assert o["spec"].get("storageClassName") != "rwx", o["metadata"]["name"]  # no placeholder class
    assert "storage-class.yaml" in (ROOT / "docs/deploy.md").read_text()
    # enable the knob in a copy of the overlay, as the docs say: every shared claim gets the class
    shutil.copytree(ROOT / "deploy/k8s", tmp_path / "k8s")
    kustomization = tmp_path / "k8s/overlays/gpu/kustomization.yaml"
    text = kustomization.read_text()
    knob = re.search(r"^  # - path: storage-class\.yaml\n(  #.*\n){3}", text, re.M)
    assert knob, "the commented storage-class patch is missing"
    kustomization.write_text(text.replace(knob.group(0), knob.group(0).replace("  # ", "  ")))
    out = subprocess.run([str(KUBECTL), "kustomize", str(tmp_path / "k8s/overlays/gpu")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = yaml.safe_load((ROOT / "deploy/k8s/overlays/gpu/storage-class.yaml").read_text())["spec"]["storageClassName"]
    pvcs = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PersistentVolumeClaim"]
    shared = [p for p in pvcs if p["metadata"]["labels"].get("genir.io/shared") == "true"]
    assert {p["metadata"]["name"] for p in shared} == {"models", "data", "results"}
    assert all(p["spec"]["storageClassName"] == want for p in shared)
