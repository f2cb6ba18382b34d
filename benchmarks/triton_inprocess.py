"""The refiner's Triton python-backend model (services/refiner/triton/gemma3/1/model.py), run in
this process for benchmarks on a machine where no Triton server runs.

What stands in for Triton (and only this): the `triton_python_backend_utils` module the server's
python stub provides (tensors, requests, responses, errors, logger), and the dynamic batcher,
replaced by handing `execute()` up to `max_batch_size` (from config.pbtxt) requests at once, which
is what Triton does with requests that arrive within its queue delay. Every line of the model's
own code (parsing, image decoding, one left-padded generate(), per-row sampling) runs unchanged.
Results of a run through this are labelled "in-process" wherever they are written.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np

from genir import contract

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "services" / "refiner" / "triton" / "gemma3"


class _Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _TritonError(Exception):
    INVALID_ARG, CANCELLED, INTERNAL = "INVALID_ARG", "CANCELLED", "INTERNAL"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code

    def message(self) -> str:
        return str(self)


class _Response:
    def __init__(self, output_tensors=(), error=None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class Request:
    """One inference request as a client sends it: messages, encoded images, sampling."""

    def __init__(self, messages: list[dict], images: list[bytes], sampling: dict):
        self.inputs = {"messages": np.array([[json.dumps(messages).encode()]], dtype=np.object_),
                       "images": np.array([list(images)], dtype=np.object_),
                       "sampling": np.array([[json.dumps(sampling).encode()]], dtype=np.object_)}

    def is_cancelled(self) -> bool:
        return False


def _utils_module() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = _Tensor
    m.TritonError = _TritonError
    m.TritonModelException = RuntimeError
    m.InferenceResponse = _Response
    m.get_input_tensor_by_name = lambda req, name: (_Tensor(name, req.inputs[name]) if name in req.inputs else None)
    m.Logger = types.SimpleNamespace(log_info=lambda s: print(f"[gemma3] {s}", flush=True),
                                     log_warn=lambda s: print(f"[gemma3] WARN {s}", flush=True),
                                     log_error=lambda s: print(f"[gemma3] ERROR {s}", flush=True))
    return m


def max_batch_size() -> int:
    return int(re.search(r"^max_batch_size:\s*(\d+)", (MODEL_DIR / "config.pbtxt").read_text(), re.M).group(1))


class InProcessGemma:
    """`TritonPythonModel` loaded from the repository's model.py, fed like Triton feeds it."""

    def __init__(self, model_path: Path, *, device: str = "cpu", parameters: dict | None = None):
        sys.modules.setdefault("triton_python_backend_utils", _utils_module())
        spec = importlib.util.spec_from_file_location("genir_gemma3_triton_model", MODEL_DIR / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        params = {**contract.triton_parameters(), "model_path": str(Path(model_path).resolve()), **(parameters or {})}
        config = {"name": "gemma3", "parameters": {k: {"string_value": str(v)} for k, v in params.items()}}
        self.model = module.TritonPythonModel()
        self.model.initialize({"model_config": json.dumps(config), "model_repository": str(MODEL_DIR),
                               "model_instance_kind": "GPU" if device.startswith("cuda") else "CPU",
                               "model_instance_device_id": device.partition(":")[2] or "0"})
        self.batch = max_batch_size()

    def infer(self, requests: list[Request]) -> list[tuple[str, int, int]]:
        """(text, prompt_tokens, completion_tokens) per request; execute() calls of max_batch_size."""
        out = []
        for i in range(0, len(requests), self.batch):
            for resp in self.model.execute(requests[i:i + self.batch]):
                if resp.error is not None:
                    raise RuntimeError(f"gemma3 model error: {resp.error}")
                out.append((resp.outputs["text"][0, 0].decode(), int(resp.outputs["prompt_tokens"][0, 0]),
                            int(resp.outputs["completion_tokens"][0, 0])))
        return out
