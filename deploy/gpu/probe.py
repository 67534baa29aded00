"""GPU probe without TensorRT: what a GPU box with only PyTorch can tell about the GPU path.

``bge_deploy.gpu.check`` needs the ``tensorrt`` package and NVIDIA's Triton; a box with only a CUDA build
of torch (the lent device of BENCHMARKS.md, a notebook) has neither. This probe checks what such a box can:

1. the plain ONNX export that ``bge-build-engine`` feeds TensorRT, made with this project's
   ``export_onnx`` and checked on onnxruntime against PyTorch fp32 (min cosine, parity texts);
2. PyTorch fp32 on the GPU against fp32 on the CPU, and fp16 against fp32 on the GPU (the fp16 gate, 0.999);
3. PyTorch fp16 texts/s with one CUDA stream against two concurrent ones: what Triton's
   ``instance_count`` 1 vs 2 does on one GPU (the GPU repositories default to 2).

    python -m bge_deploy.gpu.probe --config ../shared/models/bge-large-zh-v1.5   # random weights
    python -m bge_deploy.gpu.probe --model-dir /data/bge-large-zh-v1.5

``--device cpu`` runs steps 1 and 2 on CPU (the tests' path); step 3 needs CUDA.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bge_export.parity import PARITY_TEXTS, ParityResult, check_parity
from bge_export.settings import PARITY_THRESHOLDS, Precision
from bge_model_repository.contract import ATTENTION_MASK, ENCODER_INPUTS, INPUT_IDS, TOKEN_TYPE_IDS
from bge_model_repository.logs import configure_logging

log = logging.getLogger("bge-gpu")

SHAPES: tuple[tuple[int, int], ...] = ((64, 32), (128, 32), (128, 128), (512, 32), (512, 8))
"""(tokens, batch) pairs timed in step 3: small batches are launch-bound, large ones compute-bound."""
INPUT_NAMES = list(ENCODER_INPUTS)


def _say(message: str) -> None:
    """A line of the probe's report (its result, on stdout)."""
    sys.stdout.write(f"gpu-probe: {message}\n")
    sys.stdout.flush()


def environment(device: str) -> list[str]:
    """What the GPU path depends on here: GPU and driver, torch, tensorrt, onnxruntime's providers."""
    import onnxruntime as ort
    import torch
    import transformers

    lines = []
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        lines.append(subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    versions = f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}"
    lines.append(f"{versions}, on {name}")
    try:
        import tensorrt

        lines.append(f"tensorrt {tensorrt.__version__}: bge_deploy.gpu.check can run here")
    except ImportError:
        lines.append("tensorrt: not installed, so no engine is built or timed here (bge_deploy.gpu.check needs it)")
    lines.append(f"onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}")
    return lines


def _torch_feeds(arrays: dict[str, np.ndarray], device: str) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(arrays[name]).to(device) for name in INPUT_NAMES}


def sdpa_model(model_dir: Path, device: str) -> Any:
    """The PyTorch model steps 2 and 3 run: SDPA attention (what users run) and the export's pooling."""
    from transformers import AutoModel

    from bge_export.onnx_graph import PooledEncoder
    from bge_export.source import read_source

    pooling = read_source(str(model_dir)).pooling
    encoder = AutoModel.from_pretrained(str(model_dir), attn_implementation="sdpa")
    return PooledEncoder(encoder, pooling).eval().to(device)


def parity_checks(model_dir: Path, model: Any, work: Path, device: str) -> list[tuple[str, ParityResult]]:
    """Steps 1 and 2: (what was compared, result) for the ONNX export, `model` in fp32 and, on CUDA, in fp16.

    On CUDA `model` is left in fp16, as step 3 times it.
    """
    import torch

    from bge_export.onnx_graph import PooledEncoder, export_onnx, load_encoder
    from bge_export.source import read_source
    from bge_model_repository.encoder_runtime import OnnxEncoder, token_batch_inputs
    from bge_model_repository.tokenization import load_tokenizer, tokenize

    pooling = read_source(str(model_dir)).pooling
    batch = tokenize(load_tokenizer(model_dir), list(PARITY_TEXTS), 512)
    arrays = token_batch_inputs(batch)
    counts = batch.num_tokens.ravel().tolist()
    exact = PARITY_THRESHOLDS[Precision.FP32]
    eager = PooledEncoder(load_encoder(model_dir), pooling).eval()
    with torch.inference_mode():
        cpu_fp32 = eager(**_torch_feeds(arrays, "cpu")).numpy()
    onnx_file = work / "model.onnx"
    export_onnx(eager, INPUT_NAMES, onnx_file, 17)
    del eager
    onnx_vectors = OnnxEncoder(onnx_file).run(arrays)
    onnx_parity = check_parity(cpu_fp32, onnx_vectors, exact, counts)
    results = [("plain ONNX export on onnxruntime CPU vs PyTorch fp32 CPU", onnx_parity)]

    with torch.inference_mode():
        fp32 = model(**_torch_feeds(arrays, device)).float().cpu().numpy()
        results.append((f"PyTorch fp32 (SDPA) on {device} vs fp32 CPU", check_parity(cpu_fp32, fp32, exact, counts)))
        if device == "cuda":
            fp16 = model.half()(**_torch_feeds(arrays, device)).float().cpu().numpy()
            gate = PARITY_THRESHOLDS[Precision.FP16]
            results.append(("PyTorch fp16 on cuda vs fp32 on cuda", check_parity(fp32, fp16, gate, counts)))
    return results


def texts_per_second(model: Any, tokens: int, batch: int, streams: int, seconds: float) -> float:
    """Closed loop: `streams` threads, each on its own CUDA stream, running the same batch of `tokens` tokens."""
    import torch

    rng = np.random.default_rng(tokens)
    ids = rng.integers(1000, 20000, size=(batch, tokens))
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]: exact-length texts, no padding
    arrays = {INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids), TOKEN_TYPE_IDS: np.zeros_like(ids)}
    inputs = _torch_feeds(arrays, "cuda")
    torch.cuda.synchronize()
    done = [0] * streams
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                model(**inputs)
            stream.synchronize()
            while time.perf_counter() < stop:
                model(**inputs)
                stream.synchronize()
                done[index] += batch

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start)


def stream_table(model: Any, seconds: float) -> list[str]:
    """Step 3: fp16 texts/s of `model` (on CUDA), one stream vs two, for each of SHAPES."""
    import torch

    model = model.half()
    lines = ["tokens  batch  1 stream  2 streams  2 vs 1"]
    for tokens, batch in SHAPES:
        one = texts_per_second(model, tokens, batch, 1, seconds)
        two = texts_per_second(model, tokens, batch, 2, seconds)
        lines.append(f"{tokens:6d} {batch:6d} {one:9.0f} {two:10.0f} {two / one:7.2f}x")
    lines.append(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m bge_deploy.gpu.probe", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="a model with weights")
    source.add_argument("--config", type=Path, help="a config + tokenizer folder: random weights of that shape")
    parser.add_argument("--layers", type=int, help="with --config: override num_hidden_layers (tests)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--seconds", type=float, default=2.0, help="step 3: seconds per shape and stream count")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("torch %s sees no GPU here; --device cpu runs steps 1-2", torch.__version__)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the parity figures
    for line in environment(args.device):
        _say(line)
    with tempfile.TemporaryDirectory(prefix="bge-gpu-probe-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            from bge_deploy.bench.random_model import build_random_model

            model_dir = build_random_model(args.config, work / "model", num_hidden_layers=args.layers)
        model = sdpa_model(model_dir, args.device)
        results = parity_checks(model_dir, model, work, args.device)
        for what, result in results:
            verdict = "PASS" if result.passed else "FAIL"
            _say(f"{what}: min cosine {result.min_cosine:.7f} (>= {result.threshold}) {verdict}")
        if args.device == "cuda":
            _say(f"PyTorch fp16 (SDPA) texts/s, {args.seconds:g} s per cell")
            for line in stream_table(model, args.seconds):
                _say(line)
    return 0 if all(result.passed for _, result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
