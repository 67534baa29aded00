"""HF model -> ONNX (pooled, normalized) -> optimized / fp16 / int8 -> parity gate -> Triton repository."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from bge_export.onnx_graph import (
    PooledEncoder,
    export_onnx,
    load_encoder,
    supports_cls_only_last_layer,
    with_cls_only_last_layer,
)
from bge_export.optimize import FusionReport, calibration_feeds, convert_fp16, optimize_bert, quantize_int8
from bge_export.parity import (
    PARITY_TEXTS,
    ParityError,
    ParityResult,
    check_parity,
    onnx_embeddings,
    reference_embeddings,
    self_check_references,
)
from bge_export.repository import describe, write_repository
from bge_export.settings import PARITY_THRESHOLDS, Backend, ExportSettings, Precision
from bge_export.source import ModelSource, Pooling, read_source
from bge_export.tensorrt_engine import EngineBuildError, Profile, build_engine, missing_gpu
from bge_export.triton_config import ENCODER_PLAN, RepositorySpec
from bge_model_repository import published
from bge_model_repository.contract import ENCODER_INPUTS, TOKEN_TYPE_IDS
from bge_model_repository.cpu import CpuFeatures, Int8Target
from bge_model_repository.encoder_runtime import CpuEngine
from bge_model_repository.self_check import References
from bge_model_repository.tokenization import SpecialIds, load_tokenizer

log = logging.getLogger("bge-export")


@dataclass(frozen=True)
class ExportResult:
    spec: RepositorySpec
    onnx_file: Path
    fusions: FusionReport | None
    parity: ParityResult | None


def _torch_reference(source: ModelSource, texts: list[str], max_length: int):
    """Without sentence-transformers files: the PyTorch model with SDPA attention and our pooling."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.directory))
    model = PooledEncoder(AutoModel.from_pretrained(str(source.directory)).eval(), source.pooling)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).numpy()


def _parity(
    settings: ExportSettings, source: ModelSource, onnx_file: Path, tokenizer_dir: Path, max_length: int
) -> tuple[ParityResult | None, References]:
    """The gate's result (None where the engine cannot run here) and the references the server re-checks."""
    texts = list(PARITY_TEXTS)
    threshold = settings.parity_threshold()
    default = PARITY_THRESHOLDS[settings.precision]
    if threshold < default:
        log.warning(
            "PARITY THRESHOLD LOWERED: %s requires %.5f by default, this export accepts %.5f",
            settings.precision.value,
            default,
            threshold,
        )
    if source.has_sentence_transformers:
        reference = reference_embeddings(source.directory, texts, max_length)
    else:
        log.info("no sentence-transformers files: reference is the PyTorch model with %s pooling", source.pooling.value)
        reference = _torch_reference(source, texts, max_length)
    references = self_check_references(tokenizer_dir, reference, max_length)
    try:
        candidate, counts = onnx_embeddings(onnx_file, tokenizer_dir, texts, max_length, settings.engine())
    except Exception as exc:
        if settings.precision is Precision.FP16:
            log.warning(
                "fp16 parity NOT CHECKED: onnxruntime cannot run this fp16 graph on this CPU (%s). "
                "The served encoder re-checks it where it loads; on a GPU: python -m bge_deploy.gpu_check",
                str(exc).splitlines()[0][:200],
            )
            return None, references
        raise
    result = check_parity(reference, candidate, threshold, counts)
    log.info("%s %s", settings.precision.value, result.summary())
    if not result.passed:
        raise ParityError(f"export FAILED the parity gate: {result.summary()}")
    return result, references


def check_engine(settings: ExportSettings) -> None:
    """OpenVINO runs the plain fp32 graph in the Python backend; anything else is refused before any work."""
    if settings.engine() is not CpuEngine.OPENVINO:
        return
    if settings.backend is not Backend.PYTHON or settings.precision is not Precision.FP32:
        raise ValueError(
            f"--cpu-engine openvino serves fp32 on the python backend, not {settings.precision.value} on "
            f"{settings.backend.value}: use --cpu-engine onnxruntime (int8's graph uses onnxruntime's own ops)"
        )


def check_plan_build(settings: ExportSettings) -> None:
    """A TensorRT export builds its plan here, so it needs this machine's GPU: refused before any work."""
    if not settings.builds_plan():
        return
    reason = missing_gpu()
    if reason is not None:
        raise EngineBuildError(
            f"--backend tensorrt builds the TensorRT plan Triton serves, on this machine's GPU, and {reason}: "
            "run the export on a GPU of the serving model, or pass --no-build-engine to write the ONNX only "
            "and run bge-build-engine on the serving GPU (nothing was written)"
        )


def publish_export(settings: ExportSettings) -> ExportResult:
    """``--publish-root``: export into a new version folder, then point CURRENT at it; else write --output."""
    if settings.publish_root is None:
        return run_export(settings)
    check_engine(settings)  # refusals before the volume is touched
    check_plan_build(settings)
    with published.new_version(settings.publish_root) as staging:
        result = run_export(settings.model_copy(update={"output": staging}))
    version = published.current(settings.publish_root)
    log.info(
        "published version %s under %s (%s now names it; older versions pruned to %d)",
        version.name,
        settings.publish_root,
        published.CURRENT,
        published.KEEP_VERSIONS,
    )
    return result


def run_export(settings: ExportSettings) -> ExportResult:
    from transformers import AutoConfig, AutoTokenizer

    check_engine(settings)
    check_plan_build(settings)
    source = read_source(settings.model)
    name = settings.served_name()
    config = AutoConfig.from_pretrained(str(source.directory))
    tokenizer = AutoTokenizer.from_pretrained(str(source.directory), use_fast=True)
    input_names = list(ENCODER_INPUTS[:2])
    if TOKEN_TYPE_IDS in tokenizer.model_input_names:
        input_names.append(TOKEN_TYPE_IDS)
    max_length = settings.max_length or source.max_length
    log.info(
        "exporting %s as '%s': %s pooling + L2 normalize, %d layers, hidden %d, limit %d tokens, inputs %s",
        source.directory,
        name,
        source.pooling.value,
        config.num_hidden_layers,
        config.hidden_size,
        max_length,
        ", ".join(input_names),
    )

    work = settings.workdir / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tokenizer_dir = work / "tokenizer"
    tokenizer.save_pretrained(str(tokenizer_dir))

    plain = work / "plain.onnx"
    encoder = load_encoder(source.directory)
    cls_last_layer = (
        settings.cls_last_layer_only and source.pooling is Pooling.CLS and supports_cls_only_last_layer(encoder)
    )
    if cls_last_layer:
        encoder = with_cls_only_last_layer(encoder)
        log.info("CLS pooling: the last layer is computed for the [CLS] row only")
    export_onnx(PooledEncoder(encoder, source.pooling), input_names, plain, settings.opset)
    current, fusions, int8_target = plain, None, None
    fp16 = settings.precision is Precision.FP16
    openvino = settings.engine() is CpuEngine.OPENVINO
    optimize = settings.optimize and settings.backend is Backend.PYTHON and not openvino
    if openvino:
        log.info("OpenVINO engine: the plain graph, which OpenVINO reads and fuses itself (fp32)")
    elif settings.optimize and not optimize:
        # onnxruntime's fused ops (com.microsoft Attention, ...) are unknown to TensorRT, which
        # fuses the plain graph itself; feeding it fused ops would split the engine.
        log.info("%s backend: keeping the plain graph for TensorRT to fuse", settings.backend.value)
    if optimize:
        current = work / "optimized.onnx"
        fusions = optimize_bert(
            plain,
            current,
            config.num_attention_heads,
            config.hidden_size,
            # the [CLS]-only last layer has a one-row query, a pattern the fused Attention op does not take
            config.num_hidden_layers - int(cls_last_layer),
            fp16=fp16,
        )
        log.info("onnxruntime optimizer %s", fusions.summary())
        if not fusions.attention_fused:
            log.warning(
                "ATTENTION NOT FUSED (%d of %d layers): long inputs will be slow",
                fusions.counts.get("Attention", 0),
                config.num_hidden_layers,
            )
    elif fp16:
        current = work / "fp16.onnx"
        convert_fp16(plain, current)
    if settings.precision is Precision.INT8:
        quantized = work / "int8.onnx"
        feeds = calibration_feeds(tokenizer_dir, max_length)
        cpu = int8_target = settings.int8_cpu()
        chosen = "--int8-target" if settings.int8_target is not None else f"this CPU: {CpuFeatures.read().describe()}"
        finer = quantize_int8(
            current, quantized, feeds, cpu, full=settings.int8_full, smooth_alpha=settings.int8_smooth_alpha
        )
        current = quantized
        weights = "full-range 8-bit weights" if cpu is Int8Target.VNNI else "7-bit weights (no int16 saturation)"
        down = "in 32-wide blocks" if cpu is Int8Target.VNNI else "per token, u8 x u8"
        scope = (
            f"every MatMul and attention, per tensor, {weights}"
            if settings.int8_full
            else f"attention and MatMuls per tensor with {weights}, FFN down-projections {down}"
        )
        smoothing = (
            f"SmoothQuant alpha {settings.int8_smooth_alpha} on {len(feeds)} calibration texts"
            if settings.int8_smooth_alpha is not None
            else "no smoothing"
        )
        log.info("int8 for %s CPUs (%s)", cpu.value, chosen)
        log.info("int8: dynamic quantization of %s (%d finer-grained), %s", scope, len(finer), smoothing)

    parity, references = None, None
    if settings.parity:
        parity, references = _parity(settings, source, current, tokenizer_dir, max_length)
    else:
        log.warning("parity gate SKIPPED (--no-parity): this export is unchecked, and so is the served encoder")

    spec = RepositorySpec(
        name=name,
        dim=int(config.hidden_size),
        max_length=max_length,
        vocab_size=int(config.vocab_size),
        special_ids=SpecialIds.of(load_tokenizer(tokenizer_dir)),
        pooling=source.pooling.value,
        type_vocab_size=int(getattr(config, "type_vocab_size", 2) or 2),
        input_names=tuple(input_names),
        settings=settings,
        self_check_min_cosine=settings.parity_threshold() if references is not None else None,
        int8_target=int8_target,
    )
    plan = None
    if settings.builds_plan():
        plan = build_engine(current, work / ENCODER_PLAN, Profile(settings.max_batch_size, max_length))
        log.info("TensorRT plan built on this GPU (%.0f MiB)", plan.stat().st_size / 2**20)
    write_repository(spec, current, tokenizer_dir, references, plan)
    log.info(describe(spec))
    if settings.backend is Backend.TENSORRT and plan is None:
        log.warning(
            "NOT SERVABLE YET (--no-build-engine): on the serving GPU run bge-build-engine --repository %s --name %s",
            settings.output,
            name,
        )
    return ExportResult(spec=spec, onnx_file=current, fusions=fusions, parity=parity)


__all__ = ["ExportResult", "ParityError", "publish_export", "run_export"]
