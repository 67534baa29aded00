"""Every ``config.pbtxt`` built from one typed spec, as Triton's own protobuf messages.

Building ``model_config_pb2.ModelConfig`` objects (not strings) means a misspelt field is an
error here, at export time, rather than a model that fails to load in production.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bge_export.settings import Backend, ExportSettings
from bge_model_repository.contract import EMBEDDING, NUM_TOKENS, TEXT, encoder_model, tokenizer_model
from bge_model_repository.cpu import Int8Target
from bge_model_repository.parameters import (
    ConfigParameters,
    CpuEncoderParameters,
    EnsembleParameters,
    SelfCheckParameters,
    TokenizerParameters,
)
from bge_model_repository.self_check import SELF_CHECK_FILE
from bge_model_repository.tokenization import SpecialIds

ENCODER_ONNX = "model.onnx"
ENCODER_ONNX_DATA = "model.onnx.data"
"""The CPU encoder's weights, beside its graph (ONNX external data): onnxruntime reads them straight into
its tensors, where a single-file model is parsed whole first and leaves ~0.5 GB (bge-large) behind."""
ENCODER_PLAN = "model.plan"
TOKENIZER_DIR = "tokenizer"
WARMUP_TOKENS = 16


@dataclass(frozen=True)
class RepositorySpec:
    """What the three models need to agree on."""

    name: str
    dim: int
    max_length: int
    vocab_size: int
    special_ids: SpecialIds  # what the model's own token-id rows start and end with
    pooling: str  # "cls" / "mean", from the model's sentence-transformers files
    input_names: tuple[str, ...]  # encoder inputs, in graph order
    settings: ExportSettings
    self_check_min_cosine: float | None = None
    """The gate's threshold, re-checked where the encoder loads; None: no references stored (--no-parity)."""
    int8_target: Int8Target | None = None
    """The CPU an int8 encoder was made for."""
    type_vocab_size: int = 2
    """Segment ids the model has (BERT: 2); the CPU encoder refuses others."""

    @property
    def encoder_instances(self) -> int:
        return self.settings.encoder_instances()

    @property
    def tokenizer_name(self) -> str:
        return tokenizer_model(self.name)

    @property
    def encoder_name(self) -> str:
        return encoder_model(self.name)

    @property
    def on_gpu(self) -> bool:
        return self.settings.backend is not Backend.PYTHON


def _set_params(config: mc.ModelConfig, *parameters: ConfigParameters) -> None:
    # protobuf message maps can't be assigned whole; fill them entry by entry
    for group in parameters:
        for key, value in group.to_config().items():
            config.parameters[key].string_value = value


def _token_tensor(name: str, ragged: bool = False) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=ragged)


def _queue_policy(spec: RepositorySpec) -> mc.ModelQueuePolicy:
    return mc.ModelQueuePolicy(max_queue_size=spec.settings.max_queue_size, timeout_action=mc.ModelQueuePolicy.REJECT)


def tokenizer_config(spec: RepositorySpec) -> mc.ModelConfig:
    s = spec.settings
    config = mc.ModelConfig(
        name=spec.tokenizer_name,
        backend="python",
        max_batch_size=s.max_batch_size,
        input=[mc.ModelInput(name=TEXT, data_type=mc.TYPE_STRING, dims=[1])],
        output=[mc.ModelOutput(name=n, data_type=mc.TYPE_INT64, dims=[-1]) for n in spec.input_names]
        + [mc.ModelOutput(name=NUM_TOKENS, data_type=mc.TYPE_INT32, dims=[1])],
        # A short wait lets concurrent requests share one padded width (see tokenizer/model.py).
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=100),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=s.tokenizer_instances)],
    )
    _set_params(
        config,
        TokenizerParameters(
            tokenizer_dir=TOKENIZER_DIR, max_length=spec.max_length, pad_to_multiple_of=s.pad_to_multiple_of
        ),
    )
    return config


def _warmup(spec: RepositorySpec) -> list[mc.ModelWarmup]:
    """One short text, so a pod turns ready only once the encoder has really run."""
    warmup = mc.ModelWarmup(name="short_text", batch_size=1)
    for name in spec.input_names:
        warmup.inputs[name].CopyFrom(
            mc.ModelWarmup.Input(data_type=mc.TYPE_INT64, dims=[WARMUP_TOKENS], input_data_file=name)
        )
    return [warmup]


def _self_check_params(spec: RepositorySpec) -> SelfCheckParameters:
    """What the serving side needs to re-check the stored references (every backend: the launcher reads them
    from Triton's config API for the native GPU platforms)."""
    checked = spec.self_check_min_cosine is not None
    return SelfCheckParameters(
        precision=spec.settings.precision.value,
        self_check_file=SELF_CHECK_FILE if checked else None,
        self_check_min_cosine=spec.self_check_min_cosine,
        int8_target=spec.int8_target.value if spec.int8_target is not None else None,
    )


def encoder_config(spec: RepositorySpec) -> mc.ModelConfig:
    s = spec.settings
    config = mc.ModelConfig(
        name=spec.encoder_name,
        max_batch_size=s.max_batch_size,
        output=[mc.ModelOutput(name=EMBEDDING, data_type=mc.TYPE_FP32, dims=[spec.dim])],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=s.queue_delay_us,
            default_queue_policy=_queue_policy(spec),
        ),
        model_warmup=_warmup(spec),
    )
    if s.backend is Backend.PYTHON:
        config.backend = "python"
        # Ragged: requests of different lengths join one batch; the model regroups rows by length.
        config.input.extend(_token_tensor(n, ragged=True) for n in spec.input_names)
        config.instance_group.append(
            mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.encoder_instances)
        )
        encoder = CpuEncoderParameters(
            onnx_file=ENCODER_ONNX,
            vocab_size=spec.vocab_size,
            max_batch_tokens=s.max_batch_tokens,
            engine=s.engine().value,
            intra_op_threads=s.intra_op_threads,
            lanes=s.lanes,
            instance_count=spec.encoder_instances,
            intra_op_spinning=s.intra_op_spinning,
            max_length=spec.max_length,
            pad_to_multiple_of=s.pad_to_multiple_of,
            type_vocab_size=spec.type_vocab_size,
        )
        _set_params(config, encoder, _self_check_params(spec))
        return config
    _set_params(config, _self_check_params(spec))
    config.input.extend(_token_tensor(n) for n in spec.input_names)
    config.instance_group.append(
        mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.encoder_instances)
    )
    if s.backend is Backend.ONNXRUNTIME:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = ENCODER_ONNX
        trt = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt")
        trt.parameters.update(
            {
                "precision_mode": "FP16",
                "max_workspace_size_bytes": str(4 << 30),
                "trt_engine_cache_enable": "true",
                "trt_engine_cache_path": s.trt_cache_dir,
            }
        )
        config.optimization.execution_accelerators.gpu_execution_accelerator.append(trt)
    else:
        config.platform = "tensorrt_plan"
        config.default_model_filename = ENCODER_PLAN
    return config


def ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    step_tok = mc.ModelEnsembling.Step(
        model_name=spec.tokenizer_name,
        model_version=-1,
        input_map={TEXT: TEXT},
        output_map={**{n: n for n in spec.input_names}, NUM_TOKENS: NUM_TOKENS},
    )
    step_enc = mc.ModelEnsembling.Step(
        model_name=spec.encoder_name,
        model_version=-1,
        input_map={n: n for n in spec.input_names},
        output_map={EMBEDDING: EMBEDDING},
    )
    config = mc.ModelConfig(
        name=spec.name,
        platform="ensemble",
        max_batch_size=spec.settings.max_batch_size,
        input=[mc.ModelInput(name=TEXT, data_type=mc.TYPE_STRING, dims=[1])],
        output=[
            mc.ModelOutput(name=EMBEDDING, data_type=mc.TYPE_FP32, dims=[spec.dim]),
            mc.ModelOutput(name=NUM_TOKENS, data_type=mc.TYPE_INT32, dims=[1]),
        ],
        ensemble_scheduling=mc.ModelEnsembling(step=[step_tok, step_enc]),
    )
    # what callers (the gateway) read instead of keeping their own copies
    _set_params(
        config,
        EnsembleParameters(
            max_length=spec.max_length,
            query_instruction=spec.settings.query_instruction,
            vocab_size=spec.vocab_size,
            cls_token_id=spec.special_ids.first,
            sep_token_id=spec.special_ids.last,
            precision=spec.settings.precision.value,
            pooling=spec.pooling,
        ),
    )
    return config


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config, as_utf8=True)


def parse(text: str) -> mc.ModelConfig:
    """Parse with Triton's schema; raises on any unknown field."""
    return text_format.Parse(text, mc.ModelConfig())
