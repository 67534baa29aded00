"""The encoder run in this process for the GPU check: PyTorch, a TensorRT engine, or onnxruntime (dry run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bge_model_repository.encoder_runtime import token_batch_inputs
from bge_model_repository.tokenization import TokenBatch


class Runner(Protocol):
    """An encoder run in this process: PyTorch, the TensorRT engine, or onnxruntime."""

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        """Put a batch's inputs on the device once; the returned call runs the model on them."""
        ...


class TorchRunner:
    """The PyTorch model with the export's pooling (`PooledEncoder`), in the precision it was given."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        import torch

        feeds = {name: torch.from_numpy(array).to(self.device) for name, array in token_batch_inputs(batch).items()}

        def run() -> Any:
            with torch.inference_mode():
                return self.model(**feeds)

        return run


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

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        import torch

        arrays = token_batch_inputs(batch)
        feeds = {name: torch.from_numpy(arrays[name]).cuda() for name in self.names if name in arrays}
        return lambda: self(feeds)


class OnnxRunner:
    """onnxruntime on the exported graph: what the dry run's Triton runs in its Python backend."""

    def __init__(self, onnx_file: Path, intra_op_threads: int) -> None:
        from bge_model_repository.encoder_runtime import OnnxEncoder

        self.encoder = OnnxEncoder(onnx_file, intra_op_threads)

    def bind(self, batch: TokenBatch) -> Callable[[], Any]:
        inputs = token_batch_inputs(batch)
        return lambda: self.encoder.run(inputs)


def to_numpy(vectors: Any) -> np.ndarray:
    """float32 numpy from a runner's output (numpy, or a torch tensor on any device and dtype)."""
    if isinstance(vectors, np.ndarray):
        return vectors.astype(np.float32, copy=False)
    return vectors.detach().float().cpu().numpy()


def seconds_per_call(call: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    """Mean seconds of `call` over `repeats` runs, after a few unrecorded ones."""
    for _ in range(min(3, repeats)):
        call()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    sync()
    return (time.perf_counter() - start) / repeats
