"""The load-time self-check for encoders that run no Python of ours: Triton's native GPU platforms.

A Python-backend encoder checks its stored references itself as it loads (``model_repository/encoder``).
``onnxruntime_onnx`` and ``tensorrt_plan`` encoders can't, so ``bge-triton`` sends the same references
through the served model over Triton's HTTP API once it is ready, and stops serving if they fail.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np

from bge_model_repository.parameters import SelfCheckParameters
from bge_model_repository.self_check import References, SelfCheckResult, run_self_check

TIMEOUT_S = 120.0


def _model_config(http_url: str, model: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/config", timeout=10) as response:
        return json.loads(response.read())


def infer_embeddings(http_url: str, model: str, inputs: dict[str, np.ndarray], output: str = "embedding") -> np.ndarray:
    """One KServe-v2 JSON request to ``model`` with int64 ``inputs``; the ``output`` tensor."""
    body = {
        "inputs": [
            {"name": name, "shape": list(array.shape), "datatype": "INT64", "data": array.ravel().tolist()}
            for name, array in inputs.items()
        ],
        "outputs": [{"name": output}],
    }
    request = urllib.request.Request(
        f"{http_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        result = json.loads(response.read())
    tensor = next(t for t in result["outputs"] if t["name"] == output)
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def served_self_check(http_url: str, model: str, references: References, spec: SelfCheckParameters) -> SelfCheckResult:
    """Embed the references through the served ``model`` and judge them as the encoder would."""
    config = _model_config(http_url, model)
    wanted = {tensor["name"] for tensor in config.get("input", [])}  # type: ignore[union-attr]
    inputs = {name: array for name, array in references.inputs.items() if name in wanted}
    return run_self_check(lambda batch, lengths: infer_embeddings(http_url, model, inputs), references, spec, model)


def check_native_encoders(http_url: str, repository: Path, models: list[str]) -> list[SelfCheckResult]:
    """Every served model with stored references that is not a Python-backend model (those check themselves)."""
    results = []
    for model in models:
        config = _model_config(http_url, model)
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}  # type: ignore[union-attr]
        spec = SelfCheckParameters.from_config(parameters, model)
        if spec.self_check_file is None or config.get("backend") == "python":
            continue
        versions = sorted((p for p in (repository / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        references = References.load(versions[-1] / spec.self_check_file)
        results.append(served_self_check(http_url, model, references, spec))
    return results
