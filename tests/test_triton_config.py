"""Generated config.pbtxt files, checked with Triton's own protobuf schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bge_export.settings import Backend, ExportSettings
from bge_export.triton_config import (
    RepositorySpec,
    encoder_config,
    ensemble_config,
    parse,
    render,
    tokenizer_config,
)
from bge_model_repository.parameters import EnsembleParameters
from bge_model_repository.tokenization import SpecialIds

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def spec(**overrides: object) -> RepositorySpec:
    settings = ExportSettings(**overrides)
    return RepositorySpec(
        name="bge-large-zh-v1.5",
        dim=1024,
        max_length=512,
        vocab_size=21128,
        special_ids=SpecialIds(101, 102),
        pooling="cls",
        input_names=INPUTS,
        settings=settings,
    )


@pytest.mark.parametrize("backend", list(Backend))
def test_every_config_round_trips_through_tritons_schema(backend: Backend) -> None:
    s = spec(backend=backend)
    for build in (tokenizer_config, encoder_config, ensemble_config):
        config = build(s)
        assert parse(render(config)) == config


def test_misspelt_field_is_rejected_by_the_schema() -> None:
    with pytest.raises(text_format.ParseError):
        parse('name: "x"\nmax_batch_sise: 8\n')


def test_cpu_encoder_batches_ragged_inputs_with_a_bounded_queue() -> None:
    config = encoder_config(spec(max_queue_size=32, queue_delay_us=500, max_batch_size=48))
    assert config.backend == "python" and config.max_batch_size == 48
    assert [i.name for i in config.input] == list(INPUTS) and all(i.allow_ragged_batch for i in config.input)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 32
    # one instance (one copy of the weights) whose lanes use the cores; 0 = decided at load from the
    # serving machine's cores
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and config.instance_group[0].count == 1
    assert config.parameters["instance_count"].string_value == "1"
    assert config.parameters["lanes"].string_value == "0"
    assert config.parameters["intra_op_threads"].string_value == "0"
    two = encoder_config(spec(instances=2, lanes=3, intra_op_threads=2))
    assert two.instance_group[0].count == 2 and two.parameters["instance_count"].string_value == "2"
    assert (two.parameters["lanes"].string_value, two.parameters["intra_op_threads"].string_value) == ("3", "2")
    assert config.parameters["onnx_file"].string_value == "model.onnx"
    assert config.model_warmup[0].batch_size == 1
    # Idle onnxruntime threads sleep by default: spinning ones starve the tokenizer and gateway.
    assert config.parameters["intra_op_spinning"].string_value == "0"
    spinning = encoder_config(spec(intra_op_spinning=True))
    assert spinning.parameters["intra_op_spinning"].string_value == "1"


def test_onnxruntime_gpu_encoder_uses_tensorrt_fp16_with_cache() -> None:
    config = encoder_config(spec(backend=Backend.ONNXRUNTIME, trt_cache_dir="/cache/trt"))
    assert config.platform == "onnxruntime_onnx" and not config.backend
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and config.instance_group[0].count == 2
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_engine_cache_path"] == "/cache/trt"
    assert not any(i.allow_ragged_batch for i in config.input)  # native backends batch equal shapes


def test_tensorrt_encoder_is_a_plan_with_n_gpu_instances() -> None:
    config = encoder_config(spec(backend=Backend.TENSORRT, instances=3))
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert config.instance_group[0].count == 3


def test_ensemble_wires_tokenizer_to_encoder() -> None:
    config = ensemble_config(spec())
    tok, enc = config.ensemble_scheduling.step
    assert tok.model_name == "bge-large-zh-v1.5-tokenizer" and enc.model_name == "bge-large-zh-v1.5-encoder"
    assert set(tok.output_map) == {*INPUTS, "num_tokens"} and set(enc.input_map) == set(INPUTS)
    assert [o.name for o in config.output] == ["embedding", "num_tokens"]
    assert config.output[0].dims == [1024]


def test_written_repository_parses(triton) -> None:
    files = sorted(Path(triton.repository).glob("*/config.pbtxt"))
    assert len(files) >= 3
    for file in files:
        config = parse(file.read_text(encoding="utf-8"))
        assert config.name == file.parent.name


def test_engine_build_says_plainly_that_it_needs_a_gpu(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU; the no-GPU message is not reachable")
    result = subprocess.run(
        [sys.executable, "-m", "bge_export.tensorrt_engine", "--repository", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "has no NVIDIA GPU" in result.stderr


def test_the_ensemble_tells_callers_its_limit_instruction_and_token_rows() -> None:
    """What the gateway reads instead of copies of its own: limit, instruction, vocabulary, [CLS]/[SEP] ids."""
    config = ensemble_config(spec(query_instruction="Q: "))
    values = {key: value.string_value for key, value in parse(render(config)).parameters.items()}
    read = EnsembleParameters.from_config(values)
    assert read == EnsembleParameters(
        max_length=512,
        query_instruction="Q: ",
        vocab_size=21128,
        cls_token_id=101,
        sep_token_id=102,
        precision="fp32",
        pooling="cls",
    )
