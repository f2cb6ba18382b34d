"""The refiner's Triton model repository and the copy a run serves.

`write_repository` copies the repository beside a run with some `config.pbtxt` parameters set
(the checkpoint folder, threads, ...); `stack/triton.py` starts tritonserver on that copy.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

DEFAULT_REPOSITORY = Path(__file__).resolve().parent / "triton"


class TritonStartError(RuntimeError):
    """Triton cannot be prepared, exited, or never became ready."""


# `parameters { key: KEY value { string_value: "..." } }`; the value may hold escaped quotes (JSON).
_PARAM = r'(key:\s*"{key}"\s*,?\s*value:\s*\{{\s*string_value:\s*)"((?:[^"\\]|\\.)*)"'


def _pattern(key: str) -> re.Pattern:
    return re.compile(_PARAM.format(key=re.escape(key)))


def set_parameter(config_text: str, key: str, value: str) -> str:
    """Replace the string value of `parameters { key: KEY ... }` in a config.pbtxt text."""
    pattern = _pattern(key)
    if not pattern.search(config_text):
        raise TritonStartError(f"config.pbtxt has no parameter {key!r} to set")
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    return pattern.sub(lambda m: m.group(1) + '"' + quoted + '"', config_text, count=1)


def get_parameter(config_text: str, key: str) -> str | None:
    """The string value of parameter KEY in a config.pbtxt text (escapes undone), or None."""
    m = _pattern(key).search(config_text)
    return None if m is None else re.sub(r"\\(.)", r"\1", m.group(2))


def write_repository(source: Path, workdir: Path, model_name: str, parameters: dict[str, str]) -> Path:
    """Copy the model repository into the work dir with `parameters` of `model_name` substituted."""
    source = Path(source).resolve()
    cfg = source / model_name / "config.pbtxt"
    if not cfg.is_file():
        raise TritonStartError(f"{cfg} not found: --model-repository must contain {model_name}/config.pbtxt")
    target = workdir / "model_repository"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    text = (target / model_name / "config.pbtxt").read_text()
    for key, value in parameters.items():
        text = set_parameter(text, key, value)
    (target / model_name / "config.pbtxt").write_text(text)
    return target
