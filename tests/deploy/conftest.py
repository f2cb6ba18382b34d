"""Rendered manifests for the deploy tests: `kubectl kustomize` of every kustomization, once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"
# Every kustomization a user applies; each must render and validate on its own.
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu-dev", "overlays/monitoring", "overlays/cpu-dev-monitoring",
                  "overlays/tls", "jobs/eval", "jobs/models", "jobs/index/gpu", "jobs/index/cpu-dev")
OVERLAYS = ("overlays/gpu", "overlays/cpu-dev")


def kustomize(path: str) -> str:
    out = subprocess.run([str(KUBECTL), "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    return {k: kustomize(k) for k in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def objects(rendered) -> dict[str, list[dict]]:
    return {k: [d for d in yaml.safe_load_all(text) if d] for k, text in rendered.items()}
