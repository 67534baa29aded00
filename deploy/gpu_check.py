"""GPU check (one command, a few minutes): TensorRT FP16 engine parity and speed vs PyTorch fp16.

Run on a machine with an NVIDIA GPU, torch (CUDA), transformers and the ``tensorrt`` package:

    python -m bge_deploy.gpu_check --config ../shared/models/bge-large-zh-v1.5   # random weights, real shape
    python -m bge_deploy.gpu_check --model-dir /data/bge-large-zh-v1.5           # real weights

Steps: export the plain ONNX (``--backend tensorrt``), build the FP16 engine with optimization
profiles batch 1..max x sequence 1..512, run it on texts of 1..512 tokens and compare with the
PyTorch fp32 reference (min cosine >= 0.999), then time batch x {64, 128, 512} tokens through the
engine and through PyTorch fp16 (SDPA) on the same GPU and print the ratio.
Serving the engine needs NVIDIA's Triton container (``tensorrt_plan`` backend); see deploy/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bge_export.tensorrt_engine import EngineBuildError, build_for_repository, require_gpu

SEQ_LENGTHS = (64, 128, 512)
PARITY_MIN_COSINE = 0.999


def _random_model(config_dir: Path, out: Path) -> Path:
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(str(config_dir))).save_pretrained(str(out))
    for item in config_dir.iterdir():
        if item.name != "config.json":
            (shutil.copytree if item.is_dir() else shutil.copyfile)(item, out / item.name)
    return out


class EngineRunner:
    """Minimal TensorRT 10 runtime: torch tensors as device buffers, one profile."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt

        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def __call__(self, feeds: dict) -> object:
        import torch

        batch = next(iter(feeds.values())).shape[0]
        for name, tensor in feeds.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        output_name = next(n for n in self.names if n not in feeds)
        out = torch.empty((batch, self.context.get_tensor_shape(output_name)[-1]), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(output_name, out.data_ptr())
        self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out


def _time(fn: object, repeats: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bge-gpu-check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="model with weights (default: random weights of --config)")
    parser.add_argument("--config", type=Path, default=Path("../shared/models/bge-large-zh-v1.5"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        require_gpu()
    except EngineBuildError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModel

    from bge_export.onnx_graph import PooledEncoder
    from bge_export.parity import PARITY_TEXTS
    from bge_export.pipeline import run_export
    from bge_export.settings import Backend, ExportSettings
    from bge_export.source import read_source
    from bge_model_repository.tokenization import load_tokenizer, tokenize

    work = Path(tempfile.mkdtemp(prefix="bge-gpu-check-"))
    model_dir = args.model_dir or _random_model(args.config, work / "model")
    settings = ExportSettings(
        model=str(model_dir),
        output=work / "repo",
        workdir=work / "export",
        name="bge",
        backend=Backend.TENSORRT,
        max_batch_size=args.max_batch_size,
    )
    print(f"gpu-check: {torch.cuda.get_device_name()} - exporting {model_dir}", flush=True)
    run_export(settings)
    started = time.perf_counter()
    plan = build_for_repository(settings.output, "bge")
    print(f"gpu-check: built {plan.name} in {time.perf_counter() - started:.0f}s", flush=True)
    engine = EngineRunner(plan)

    source = read_source(str(model_dir))
    reference = PooledEncoder(AutoModel.from_pretrained(str(model_dir)), source.pooling).eval().cuda()
    tokenizer = load_tokenizer(settings.output / "bge-tokenizer" / "1" / "tokenizer")

    def feeds(texts: list[str]) -> dict:
        batch = tokenize(tokenizer, texts, 512)
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        return {n: torch.from_numpy(arrays[n]).cuda() for n in engine.names if n in arrays}

    with torch.inference_mode():
        parity_feeds = feeds(list(PARITY_TEXTS))
        expected = reference(**parity_feeds).float().cpu().numpy()
        got = engine(parity_feeds).cpu().numpy()
    cosine = float(np.min(np.sum(expected * got, axis=1)))
    verdict = "PASS" if cosine >= PARITY_MIN_COSINE else "FAIL"
    print(f"gpu-check: TensorRT FP16 vs PyTorch fp32 min cosine {cosine:.6f} (>= {PARITY_MIN_COSINE}) {verdict}")

    half = reference.half()
    print(f"gpu-check: throughput, batch {args.batch}, texts/s")
    print("  tokens  tensorrt-fp16  pytorch-fp16  ratio")
    for length in SEQ_LENGTHS:
        text = "检" * (length - 2)
        batch_feeds = feeds([text] * args.batch)
        with torch.inference_mode():
            t_trt = _time(lambda f=batch_feeds: engine(f))
            t_pt = _time(lambda f=batch_feeds: half(**f))
        print(f"  {length:6d}  {args.batch / t_trt:13.0f}  {args.batch / t_pt:12.0f}  {t_pt / t_trt:5.2f}x")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
