"""Write the Triton model repository: ensemble, tokenizer and encoder folders."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from bge_export.triton_config import (
    ENCODER_ONNX,
    ENCODER_ONNX_DATA,
    ENCODER_PLAN,
    TOKENIZER_DIR,
    WARMUP_TOKENS,
    RepositorySpec,
    encoder_config,
    ensemble_config,
    render,
    tokenizer_config,
)
from bge_model_repository.encoder_runtime import token_batch_inputs
from bge_model_repository.self_check import SELF_CHECK_FILE, References
from bge_model_repository.tokenization import encode, load_tokenizer, pad

WARMUP_TEXT = "今天天气怎么样"


def _model_py(role: str) -> str:
    """The thin Triton entry point shipped in bge_model_repository/<role>/model.py."""
    return resources.files("bge_model_repository").joinpath(role, "model.py").read_text(encoding="utf-8")


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    return folder


def write_encoder_onnx(source: Path, target: Path, external_data: bool) -> None:
    """The encoder graph as served: one file (the GPU backends and TensorRT builds read it so), or with its
    weights in ENCODER_ONNX_DATA beside it (the CPU encoder: one copy of the weights in memory, BENCHMARKS.md)."""
    if not external_data:
        shutil.copyfile(source, target)
        return
    import onnx

    model = onnx.load(str(source))
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ENCODER_ONNX_DATA,
        size_threshold=1024,
    )
    # onnx writes the weights owner-only; Triton often runs as another user than the export (pods, images)
    (target.parent / ENCODER_ONNX_DATA).chmod(target.stat().st_mode & 0o777)


def encoder_files(version: Path) -> list[Path]:
    """The encoder's ONNX files in a version folder: the graph, and its weights where they are apart."""
    return [path for path in (version / ENCODER_ONNX, version / ENCODER_ONNX_DATA) if path.is_file()]


def _write_warmup(folder: Path, spec: RepositorySpec, tokenizer_dir: Path) -> None:
    """Raw little-endian int64 tensors, as Triton's ``input_data_file`` warm-up expects."""
    encodings = encode(load_tokenizer(tokenizer_dir), [WARMUP_TEXT], WARMUP_TOKENS)
    inputs = token_batch_inputs(pad(encodings, WARMUP_TOKENS))
    (folder / "warmup").mkdir()
    for name in spec.input_names:
        (folder / "warmup" / name).write_bytes(inputs[name][0].astype("<i8").tobytes())


def write_repository(
    spec: RepositorySpec,
    onnx_file: Path,
    tokenizer_dir: Path,
    references: References | None = None,
    plan_file: Path | None = None,
) -> Path:
    """(Re)write this model's three folders; other models in the repository are left alone.

    ``references`` (the parity gate's) go beside the encoder for the serving machine's self-check;
    ``plan_file`` (a TensorRT plan built here) beside its ONNX, which stays for rebuilding on another GPU.
    """
    out = spec.settings.output
    out.mkdir(parents=True, exist_ok=True)

    tok = _fresh(out / spec.tokenizer_name)
    (tok / "config.pbtxt").write_text(render(tokenizer_config(spec)), encoding="utf-8")
    (tok / "1" / "model.py").write_text(_model_py("tokenizer"), encoding="utf-8")
    shutil.copytree(tokenizer_dir, tok / "1" / TOKENIZER_DIR)

    enc = _fresh(out / spec.encoder_name)
    (enc / "config.pbtxt").write_text(render(encoder_config(spec)), encoding="utf-8")
    write_encoder_onnx(onnx_file, enc / "1" / ENCODER_ONNX, external_data=not spec.on_gpu)
    if plan_file is not None:
        shutil.copyfile(plan_file, enc / "1" / ENCODER_PLAN)
    if not spec.on_gpu:
        (enc / "1" / "model.py").write_text(_model_py("encoder"), encoding="utf-8")
    _write_warmup(enc, spec, tokenizer_dir)
    if references is not None:
        references.save(enc / "1" / SELF_CHECK_FILE)

    ens = _fresh(out / spec.name)
    (ens / "config.pbtxt").write_text(render(ensemble_config(spec)), encoding="utf-8")
    return out


def describe(spec: RepositorySpec) -> str:
    size = sum(path.stat().st_size for path in encoder_files(spec.settings.output / spec.encoder_name / "1"))
    return (
        f"wrote {spec.settings.output}: '{spec.name}' (ensemble: text -> embedding[{spec.dim}] + num_tokens), "
        f"'{spec.tokenizer_name}', '{spec.encoder_name}' ({spec.settings.backend.value} backend, "
        f"{spec.settings.precision.value}, {size / 2**20:.1f} MiB ONNX)"
    )
