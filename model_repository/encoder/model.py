"""Triton Python backend: encoder inputs -> pooled, normalized ``embedding`` via onnxruntime or OpenVINO.

Used where Triton has only the Python backend (the pip-installed server, CPU). NVIDIA's
container runs the same ONNX file with the native onnxruntime backend instead.

Each request is answered through its response sender (one final response, Triton's default mode),
from the lane that finishes its batch, and ``execute`` returns once the batch before this one is
done, so the lanes go straight on to the next batch (``bge_model_repository.overlap``).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from bge_model_repository.contract import (
    COMPUTED_TOKENS_METRIC,
    EMBEDDING,
    ENCODER_INPUTS,
    REAL_TOKENS_METRIC,
    RUNS_METRIC,
    TEXTS_METRIC,
)
from bge_model_repository.encoder_runtime import (
    CpuEngine,
    PaddingStats,
    default_parallelism,
    merge_rows,
    open_encoder,
    validate_inputs,
)
from bge_model_repository.model_args import ModelArgs
from bge_model_repository.overlap import InFlightWindow, overlap_depth
from bge_model_repository.parameters import CpuEncoderParameters, SelfCheckParameters
from bge_model_repository.self_check import References, SelfCheckError, run_self_check
from bge_model_repository.tokenization import InputError


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        params = model.parameters(CpuEncoderParameters)
        parallel = default_parallelism(params.instance_count, params.lanes, params.intra_op_threads)
        self.encoder = open_encoder(
            CpuEngine(params.engine),
            model.path(params.onnx_file),
            parallel.threads,
            spinning=params.intra_op_spinning,
            lanes=parallel.lanes,
        )
        self.window = InFlightWindow(overlap_depth(parallel.lanes))
        # One thread sends at a time: Triton 2.51's Python backend crashes tritonserver (SIGSEGV in
        # libtriton_python.so) when two threads of a stub send responses and metrics at once, which two lanes
        # finishing batches of their own did (tests/reliability: 5 crashes in 20 s of 32 clients without it).
        self._answering = threading.Lock()
        pb_utils.Logger.log_info(
            f"'{model.name}': {params.engine} encoder, {parallel.lanes} lane(s) x {parallel.threads} thread(s) "
            f"in each of {params.instance_count} instance(s), one copy of the weights per instance, "
            f"{self.window.depth} batch(es) at once"
        )
        self.input_names = [n for n in ENCODER_INPUTS if n in self.encoder.input_names]
        self.max_length = params.max_length
        self.vocab_size = params.vocab_size
        self.type_vocab_size = params.type_vocab_size
        self.max_batch = max(model.max_batch_size, 1)
        self.max_tokens = params.max_batch_tokens
        self.pad_to_multiple_of = params.pad_to_multiple_of
        labels = {"model": model.name}

        def counter(name: str, description: str) -> Any:
            family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
            self._families.append(family)  # families must outlive their metrics
            return family.Metric(labels=labels)

        self._families: list[Any] = []
        self.metric_real = counter(REAL_TOKENS_METRIC, "Tokens through the encoder with attention_mask = 1")
        self.metric_padded = counter(COMPUTED_TOKENS_METRIC, "Tokens the encoder computed, padding included")
        self.metric_texts = counter(TEXTS_METRIC, "Texts (rows) through the encoder")
        self.metric_runs = counter(RUNS_METRIC, "Engine sub-batch runs of the encoder (mean batch = texts / runs)")
        self._self_check(model)

    def _self_check(self, model: ModelArgs) -> None:
        """Re-embed the export's references with this engine on this CPU; below the gate, refuse to load."""
        spec = model.parameters(SelfCheckParameters)
        if spec.self_check_file is None:
            pb_utils.Logger.log_warn(f"'{model.name}': no stored references (exported with --no-parity): unchecked")
            return
        result = run_self_check(
            lambda inputs, lengths: self.encoder.encode(
                inputs, lengths, self.max_batch, self.max_tokens, self.pad_to_multiple_of
            )[0],
            References.load(model.path(spec.self_check_file)),
            spec,
            model.name,
        )
        if not result.passed:
            pb_utils.Logger.log_error(result.line())
            raise SelfCheckError(result.line())
        pb_utils.Logger.log_info(result.line())

    def execute(self, requests: list) -> None:
        senders: list[Any] = []  # of the valid requests, in row order
        feeds: list[dict] = []
        lengths: list = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                lengths.append(validate_inputs(feed, self.max_length, self.vocab_size, self.type_vocab_size))
            except (InputError, AttributeError) as exc:
                message = str(exc) if isinstance(exc, InputError) else f"missing input: {exc}"
                with self._answering:  # a lane may be answering its batch meanwhile
                    self._send(sender, error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
                continue
            senders.append(sender)
            feeds.append(feed)
        if not feeds:
            return None
        merged, counts = merge_rows(feeds)  # a copy: Triton frees the requests' tensors once execute returns
        batch = self.encoder.submit(
            merged, np.concatenate(lengths), self.max_batch, self.max_tokens, self.pad_to_multiple_of
        )
        batch.add_done_callback(lambda done: self._answer(done, senders, counts))
        self.window.admit(batch)
        return None

    def _answer(self, batch: Future[tuple[np.ndarray, PaddingStats]], senders: list[Any], counts: list[int]) -> None:
        """Send each request its rows (or the engine's error); runs on the lane that finished the batch."""
        with self._answering:
            try:
                vectors, stats = batch.result()
            except Exception as exc:  # every request still gets its one response
                error = pb_utils.TritonError(f"encoder failed: {exc}", pb_utils.TritonError.INTERNAL)
                for sender in senders:
                    self._send(sender, error=error)
                return
            try:  # counted before the answers go out, so a client that has its answer sees it counted
                self.metric_real.increment(stats.real_tokens)
                self.metric_padded.increment(stats.padded_tokens)
                self.metric_texts.increment(stats.texts)
                self.metric_runs.increment(stats.batches)
            except Exception as exc:  # a lost count is only logged; the answers still go out
                pb_utils.Logger.log_warn(f"could not count an encoder batch: {exc}")
            row = 0
            for sender, count in zip(senders, counts, strict=True):
                self._send(sender, tensors=[pb_utils.Tensor(EMBEDDING, vectors[row : row + count])])
                row += count

    @staticmethod
    def _send(sender: Any, tensors: list | None = None, error: Any = None) -> None:
        try:
            response = pb_utils.InferenceResponse(output_tensors=tensors or [], error=error)
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # e.g. the request was cancelled meanwhile: log, keep serving the others
            pb_utils.Logger.log_warn(f"could not send an encoder response: {exc}")

    def finalize(self) -> None:
        self.window.drain()
        self.encoder.close()
