"""Encoder inputs -> pooled, L2-normalized vectors with onnxruntime or OpenVINO (CPU / Python backend).

Triton's dynamic batcher only merges requests of equal shape unless inputs allow ragged
batches. The Python-backend encoder allows them and regroups the rows itself: it sorts all
rows of a Triton batch by real length and runs sub-batches bounded by a token budget, so
short and long texts from concurrent requests share work without padding short rows to 512.

One encoder holds one copy of the weights and runs its sub-batches in ``lanes`` at once (threads
calling one onnxruntime session, or one OpenVINO compiled model's streams), so every core works
whatever the mix: one request of 32 texts is cut into a sub-batch per lane, and 8 requests of one
text each, merged by Triton's batcher, are too. Instances would each hold their own weights. The
lanes take sub-batches first come, first served across Triton's batches (`Encoder.submit`), so a
lane that finished its share of one batch starts on the next (where to cut: ``sub_batches``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from bge_model_repository.contract import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from bge_model_repository.sub_batches import SubBatch, plan_sub_batches, spread_over_lanes
from bge_model_repository.tokenization import InputError, TokenBatch


@dataclass
class PaddingStats:
    """Real vs computed tokens: the padding ratio that issue #4 asks to keep low."""

    texts: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0  # tokens computed, padding included


def merge_rows(batches: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Stack the inputs of several requests (each [n_i, L_i]) into one [sum n_i, max L_i]."""
    width = max(b[INPUT_IDS].shape[1] for b in batches)
    counts = [int(b[INPUT_IDS].shape[0]) for b in batches]
    merged: dict[str, np.ndarray] = {}
    for name in batches[0]:
        out = np.zeros((sum(counts), width), dtype=np.int64)
        row = 0
        for b, count in zip(batches, counts, strict=True):
            out[row : row + count, : b[name].shape[1]] = b[name]
            row += count
        merged[name] = out
    return merged, counts


def validate_inputs(
    inputs: dict[str, np.ndarray], max_length: int, vocab_size: int, type_vocab_size: int = 2
) -> np.ndarray:
    """Real lengths per row; raise InputError for what would crash the graph or silently give a wrong vector
    (segment ids outside the model's table, a mask that is not 1s then 0s: rows are cut by their mask's sum)."""
    ids = inputs[INPUT_IDS]
    mask = inputs[ATTENTION_MASK]
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise InputError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes")
    for name, tensor in inputs.items():
        if tensor.shape != ids.shape:
            raise InputError(f"{name} has shape {tensor.shape}, expected {ids.shape}")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise InputError("attention_mask values must be 0 or 1")
    if mask.shape[1] > 1 and (np.diff(mask, axis=1) > 0).any():
        raise InputError("attention_mask rows must be 1s then 0s (right padding): a 0 comes before a 1")
    types = inputs.get(TOKEN_TYPE_IDS)
    if types is not None and types.size and (types.min() < 0 or types.max() >= type_vocab_size):
        raise InputError(f"token_type_ids must be in [0, {type_vocab_size}), got [{types.min()}, {types.max()}]")
    lengths = mask.sum(axis=1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise InputError(f"token ids must be in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    if lengths.size and lengths.min() < 1:
        raise InputError("every row needs at least one token with attention_mask = 1")
    if lengths.size and lengths.max() > max_length:
        raise InputError(f"a row has {int(lengths.max())} tokens, over the model's limit of {max_length}")
    return lengths


MAX_DEFAULT_LANES = 4
"""More lanes of fewer threads each help throughput less than they cost a lone request's latency."""


@dataclass(frozen=True)
class Parallelism:
    """How an encoder instance uses its cores: `lanes` sub-batches at once, `threads` each."""

    lanes: int
    threads: int


def default_parallelism(instances: int, lanes: int = 0, threads: int = 0, cpus: int | None = None) -> Parallelism:
    """The serving machine's cores (its CPU affinity) shared among the instances, then among each one's lanes.

    Decided where the model loads, not at export: the exporting machine's core count says nothing
    about the server's. Unset lanes: the largest divisor of the instance's cores up to
    MAX_DEFAULT_LANES (2 cores: 2 lanes x 1 thread; 16 cores: 4 lanes x 4 threads). Unset threads: the
    instance's cores / lanes. Instances x lanes x threads never exceeds the cores, so nothing fights.
    """
    available = cpus if cpus is not None else len(os.sched_getaffinity(0))
    cores = max(1, available // max(1, instances))
    if not lanes:
        lanes = cores // threads if threads else max(d for d in range(1, MAX_DEFAULT_LANES + 1) if cores % d == 0)
    lanes = max(1, lanes)
    return Parallelism(lanes=lanes, threads=threads or max(1, cores // lanes))


class CpuEngine(str, Enum):
    """Which library runs the encoder graph inside Triton's Python backend."""

    ONNXRUNTIME = "onnxruntime"  # every precision (the int8 default); the optimized (fused) graph
    OPENVINO = "openvino"  # fp32 only (its default), the plain graph; faster fp32 GEMMs on x86 (BENCHMARKS.md)


class _Job:
    """One submitted batch: its output rows, filled by whichever lanes run its `stats.batches` sub-batches."""

    def __init__(self, out: np.ndarray, stats: PaddingStats) -> None:
        self.out = out
        self.stats = stats
        self.future: Future[tuple[np.ndarray, PaddingStats]] = Future()
        self._left = stats.batches
        self._lock = threading.Lock()
        if self._left == 0:  # no rows: nothing will run
            self.future.set_result((out, stats))

    def fill(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self.out[rows] = vectors
        self._one_done()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if not self.future.done():
                self.future.set_exception(exc)
        self._one_done()

    def _one_done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0 and not self.future.done():
                self.future.set_result((self.out, self.stats))


class Encoder:
    """An engine's `run` on one padded batch, and the length-sorted sub-batching every engine shares.

    `run` may be called from `lanes` threads at once; engines make that safe (an onnxruntime session is,
    OpenVINO hands each caller its own infer request).
    """

    input_names: list[str]
    dim: int
    lanes: int = 1
    _pool: ThreadPoolExecutor | None = None

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's own inputs, contiguous (sub-batches are slices of the merged batch)."""
        return {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}

    def _start_lanes(self, lanes: int) -> None:
        self.lanes = max(1, lanes)
        if self.lanes > 1:
            self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="encoder-lane")

    def encode(
        self,
        inputs: dict[str, np.ndarray],
        lengths: np.ndarray,
        max_batch: int,
        max_tokens: int,
        pad_to_multiple_of: int = 8,
    ) -> tuple[np.ndarray, PaddingStats]:
        """Run length-sorted sub-batches, `lanes` at a time; rows come back in input order."""
        return self.submit(inputs, lengths, max_batch, max_tokens, pad_to_multiple_of).result()

    def submit(
        self,
        inputs: dict[str, np.ndarray],
        lengths: np.ndarray,
        max_batch: int,
        max_tokens: int,
        pad_to_multiple_of: int = 8,
    ) -> Future[tuple[np.ndarray, PaddingStats]]:
        """Queue one batch's sub-batches behind those already queued; the future holds its vectors in input order.

        The lanes take queued sub-batches first come, first served, so a lane that has finished its share of
        one batch starts on the next batch's while the other lanes finish theirs (work-conserving across
        batches; `inputs` must stay untouched until the future is done). Without lanes the batch runs here.
        """
        plans = plan_sub_batches(lengths, max_batch, max_tokens, pad_to_multiple_of)
        if self.lanes > 1:
            plans = spread_over_lanes(plans, self.lanes, lengths, pad_to_multiple_of)
        columns = inputs[INPUT_IDS].shape[1]
        stats = PaddingStats(
            texts=len(lengths),
            batches=len(plans),
            real_tokens=int(lengths.sum()),
            padded_tokens=sum(min(plan.width, columns) * len(plan.rows) for plan in plans),
        )
        job = _Job(np.empty((len(lengths), self.dim), dtype=np.float32), stats)

        def one(plan: SubBatch) -> None:
            width = min(plan.width, columns)
            try:
                vectors = self.run({name: inputs[name][plan.rows, :width] for name in self.input_names})
            except BaseException as exc:  # the batch's future carries it to whoever answers the requests
                job.fail(exc)
            else:
                job.fill(plan.rows, vectors)

        if self._pool is None:
            for plan in plans:
                one(plan)
        else:
            for plan in plans:
                self._pool.submit(one, plan)
        return job.future

    def close(self) -> None:
        """Stop the lane threads (Triton's finalize)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class OnnxEncoder(Encoder):
    """One onnxruntime session (one copy of the weights) that `lanes` threads call at once, each run on
    `intra_op_threads` threads; the graph already pools and normalizes."""

    def __init__(self, model_path: Path, intra_op_threads: int = 0, spinning: bool = False, lanes: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Spinning workers busy-wait between ops; on a box shared with the tokenizer stub, Triton
        # and the gateway that steals their CPU (see BENCHMARKS.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._start_lanes(lanes)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, self.feed(inputs))[0].astype(np.float32, copy=False)


OPENVINO_SHAPE_CACHE = 1000
"""Entries of OpenVINO's per-shape kernel cache: bounds the encoder's memory under varied traffic."""


class OpenVinoEncoder(Encoder):
    """OpenVINO's CPU plugin on the plain ONNX graph, held to fp32 (it would pick bf16 on CPUs that have it).

    One compiled model with a stream per lane (`threads` each) and an infer request per lane; no core
    pinning, which would fight with the tokenizer, Triton and the gateway on the same cores. OpenVINO
    holds about twice the weights' size (its compiled copy beside the model's constants, BENCHMARKS.md).

    OpenVINO prepares kernels for every new input shape (about 2 ms) and keeps them, about 0.3 MiB per
    shape, up to its runtime cache's capacity (default 5,000 entries). A server sees up to max batch x
    length buckets shapes (64 x 64 for bge), which at the default adds over 0.5 GiB per instance and
    keeps growing; a capacity of 1,000 levels off near 0.25 GiB (BENCHMARKS.md).
    """

    def __init__(
        self, model_path: Path, threads: int = 0, shape_cache: int = OPENVINO_SHAPE_CACHE, lanes: int = 1
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError(
                f"this encoder runs on OpenVINO (the fp32 default) but Triton's Python cannot import it ({exc}): "
                "pip install 'openvino>=2025.0' where tritonserver runs, or re-export with --cpu-engine onnxruntime"
            ) from exc

        core = ov.Core()
        model = core.read_model(str(model_path))
        lanes = max(1, lanes)
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY" if lanes == 1 else "THROUGHPUT",
            "NUM_STREAMS": str(lanes),
            "ENABLE_CPU_PINNING": "NO",
            "CPU_RUNTIME_CACHE_CAPACITY": str(shape_cache),
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads * lanes)
        self.config = config
        compiled = core.compile_model(model, "CPU", config)
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.dim = int(model.outputs[0].get_partial_shape()[-1].get_length())
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(lanes):
            self._requests.put(compiled.create_infer_request())
        self._start_lanes(lanes)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        request = self._requests.get()  # one per lane: a request is not to be shared by two threads
        try:
            # the request reuses its output buffer on the next call: copy
            return np.array(request.infer(self.feed(inputs))[0], dtype=np.float32, copy=True)
        finally:
            self._requests.put(request)


def open_encoder(
    engine: CpuEngine, model_path: Path, threads: int = 0, spinning: bool = False, lanes: int = 1
) -> Encoder:
    """The encoder for a repository's ``engine`` parameter: `lanes` runs at once, `threads` each."""
    if engine is CpuEngine.OPENVINO:
        return OpenVinoEncoder(model_path, threads, lanes=lanes)
    return OnnxEncoder(model_path, threads, spinning, lanes=lanes)


def token_batch_inputs(batch: TokenBatch) -> dict[str, np.ndarray]:
    return {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask, TOKEN_TYPE_IDS: batch.token_type_ids}
