"""``bge-build-engine``: the encoder's ONNX -> TensorRT FP16 plan, on the GPU that will serve it.

A TensorRT engine is specific to the GPU model and TensorRT version, so it is built as a
separate step (a Kubernetes Job before Triton starts), never at export time on a CPU box.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bge_export.triton_config import ENCODER_ONNX, ENCODER_PLAN, parse
from bge_model_repository.contract import DEFAULT_MODEL, DEFAULT_REPOSITORY, encoder_model, tokenizer_model
from bge_model_repository.logs import configure_logging
from bge_model_repository.parameters import TokenizerParameters

log = logging.getLogger("bge-build-engine")


class EngineBuildError(RuntimeError):
    """Why no engine could be built, in words an operator can act on."""


@dataclass(frozen=True)
class Profile:
    """Shapes TensorRT optimizes for: batch 1..max, sequence 1..max_length."""

    max_batch: int
    max_length: int
    opt_batch: int = 16
    opt_length: int = 128

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        opt = (min(self.opt_batch, self.max_batch), min(self.opt_length, self.max_length))
        return (1, 1), opt, (self.max_batch, self.max_length)


def missing_gpu() -> str | None:
    """Why no plan can be built on this machine, or None where it can (a GPU and TensorRT's Python package)."""
    if shutil.which("nvidia-smi") is None:
        return "this machine has no NVIDIA GPU (nvidia-smi not found)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the 'tensorrt' Python package is missing (pip install tensorrt, or NVIDIA's TensorRT image)"
    return None


def require_gpu() -> None:
    reason = missing_gpu()
    if reason is not None:
        raise EngineBuildError(f"cannot build a TensorRT plan: {reason}; build it on the serving GPU")


def build_engine(onnx_file: Path, plan_file: Path, profile: Profile, workspace_gib: int = 4) -> Path:
    require_gpu()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (TensorRT 10 default)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    for i in range(network.num_inputs):
        opt_profile.set_shape(network.get_input(i).name, low, opt, high)
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("TensorRT failed to build the engine (see its log above)")
    plan_file.write_bytes(bytes(serialized))
    return plan_file


def build_for_repository(repository: Path, name: str, workspace_gib: int = 4) -> Path:
    """Read batch and length limits from the generated configs; write model.plan beside model.onnx."""
    require_gpu()  # first: no point reading configs on a machine that cannot build
    encoder_dir = repository / encoder_model(name)
    config = parse((encoder_dir / "config.pbtxt").read_text(encoding="utf-8"))
    if config.platform != "tensorrt_plan":
        raise EngineBuildError(
            f"{encoder_dir} was exported for '{config.platform or config.backend}', "
            "not tensorrt: re-export with --backend tensorrt"
        )
    tokenizer = parse((repository / tokenizer_model(name) / "config.pbtxt").read_text(encoding="utf-8"))
    values = {key: value.string_value for key, value in tokenizer.parameters.items()}
    max_length = TokenizerParameters.from_config(values, tokenizer.name).max_length
    profile = Profile(max_batch=config.max_batch_size, max_length=max_length)
    version = encoder_dir / "1"
    return build_engine(version / ENCODER_ONNX, version / ENCODER_PLAN, profile, workspace_gib)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bge-build-engine", description=__doc__)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--name", default=DEFAULT_MODEL)
    parser.add_argument("--workspace-gib", type=int, default=4)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        plan = build_for_repository(args.repository, args.name, args.workspace_gib)
    except (EngineBuildError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s (%.0f MiB)", plan, plan.stat().st_size / 2**20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
