"""The GPU check's one settings model: every flag is also a ``BGE_GPU_CHECK_<FLAG>`` variable; what is left
unset, the mode (GPU or ``--cpu-dry-run``) decides."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bge_deploy.bench.workload import LengthSpec, WorkloadError
from bge_deploy.gpu.modes import CPU_DRY_RUN, GPU, Mode


class GpuCheckSettings(BaseSettings):
    """python -m bge_deploy.gpu.check: the GPU serving path end to end (or its CPU dry run)."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_GPU_CHECK_",
        cli_kebab_case=True,
        cli_prog_name="python -m bge_deploy.gpu.check",
        cli_implicit_flags=True,
        protected_namespaces=(),
        extra="ignore",
    )

    model_dir: Path | None = Field(None, description="model with weights (default: random weights of --config)")
    config: Path = Field(Path("../shared/models/bge-large-zh-v1.5"), description="config + tokenizer folder")
    cpu_dry_run: bool = Field(False, description="the same steps on CPU: python-backend export, no engine, pip Triton")
    lengths: str | None = Field(None, description="tokens per text incl. [CLS]/[SEP] (default: the mode's)")
    batch: int | None = Field(None, ge=1, description="texts per in-process batch (default: the mode's)")
    max_batch_size: int | None = Field(None, ge=1, description="the export's max_batch_size (default: the mode's)")
    concurrency: int | None = Field(None, ge=1, description="served: requests in flight (default: the mode's)")
    texts_per_request: int = Field(1, ge=1, description="served: texts in one request")
    duration: float | None = Field(None, description="served: seconds of load per length (default: the mode's)")
    requests: int | None = Field(None, description="served: at most this many requests per length")
    repeats: int | None = Field(None, ge=1, description="in process: timed batches per length (default: the mode's)")
    triton_home: Path | None = Field(None, description="a system Triton install to serve with (see bge-triton)")
    ready_timeout: float = Field(600.0, description="seconds bge-triton may take to be ready")
    keep: bool = Field(False, description="keep the work folder (model, repository, engine)")

    @property
    def mode(self) -> Mode:
        return CPU_DRY_RUN if self.cpu_dry_run else GPU

    @property
    def length_values(self) -> tuple[int, ...]:
        return self.mode.lengths if self.lengths is None else parse_lengths(self.lengths)

    def resolved(self) -> GpuCheckSettings:
        """Every field the mode decides (GPU: 64/128/512 tokens, batch 32, ...; dry run: small) filled in."""
        mode = self.mode
        filled = {
            "batch": self.batch or mode.batch,
            "max_batch_size": self.max_batch_size or mode.max_batch_size,
            "concurrency": self.concurrency or mode.concurrency,
            "duration": self.duration if self.duration is not None else mode.duration_s,
            "repeats": self.repeats or mode.repeats,
        }
        if self.texts_per_request > filled["max_batch_size"]:
            raise ValueError("--texts-per-request must not exceed --max-batch-size")
        return self.model_copy(update=filled)


def parse_lengths(text: str) -> tuple[int, ...]:
    try:
        specs = [LengthSpec.parse(part) for part in text.split(",") if part.strip()]
    except WorkloadError as exc:
        raise ValueError(str(exc)) from None
    if not specs or any(spec.low != spec.high for spec in specs):
        raise ValueError(f"'{text}' must be fixed token counts separated by commas, e.g. 64,128,512")
    return tuple(spec.low for spec in specs)
