"""Triton Python backend: encoder inputs -> pooled, normalized ``embedding`` via onnxruntime or OpenVINO.

Used where Triton has only the Python backend (the pip-installed server, CPU). NVIDIA's
container runs the same ONNX file with the native onnxruntime backend instead.
"""

from __future__ import annotations

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
    default_parallelism,
    merge_rows,
    open_encoder,
    validate_inputs,
)
from bge_model_repository.model_args import ModelArgs
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
        pb_utils.Logger.log_info(
            f"'{model.name}': {params.engine} encoder, {parallel.lanes} lane(s) x {parallel.threads} thread(s) "
            f"in each of {params.instance_count} instance(s), one copy of the weights per instance"
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

    def execute(self, requests: list) -> list:
        good: list[int] = []
        feeds: list[dict] = []
        lengths: list = []
        responses: list = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                lengths.append(validate_inputs(feed, self.max_length, self.vocab_size, self.type_vocab_size))
            except (InputError, AttributeError) as exc:
                message = str(exc) if isinstance(exc, InputError) else f"missing input: {exc}"
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            good.append(i)
            feeds.append(feed)
        if feeds:
            merged, counts = merge_rows(feeds)
            vectors, stats = self.encoder.encode(
                merged, np.concatenate(lengths), self.max_batch, self.max_tokens, self.pad_to_multiple_of
            )
            self.metric_real.increment(stats.real_tokens)
            self.metric_padded.increment(stats.padded_tokens)
            self.metric_texts.increment(stats.texts)
            self.metric_runs.increment(stats.batches)
            row = 0
            for i, count in zip(good, counts, strict=True):
                out = pb_utils.Tensor(EMBEDDING, vectors[row : row + count])
                responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                row += count
        return responses

    def finalize(self) -> None:
        self.encoder.close()
