"""``bge-bench``'s one settings model: every flag is also a ``BGE_BENCH_<FLAG>`` variable."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, CliApp, NoDecode, SettingsConfigDict

from bge_deploy.bench.workload import LengthSpec, WorkloadError
from bge_export.settings import Precision
from bge_model_repository.contract import DEFAULT_MODEL, GATEWAY_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT

TARGETS = ("gateway", "triton")
PEER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
DEFAULT_DURATION_S = 10.0


def _comma_separated(value: Any) -> Any:
    """`"1,8,32"` (a flag or a variable) -> `["1", "8", "32"]`; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _length_specs(value: Any) -> Any:
    items = _comma_separated(value)
    try:
        return [LengthSpec.parse(item) if isinstance(item, str) else item for item in items]
    except WorkloadError as exc:
        raise ValueError(str(exc)) from None


def _peers(value: Any) -> Any:
    """`"infinity=http://127.0.0.1:7997,tei=http://127.0.0.1:8080/v1"` -> {"infinity": "http://...", ...}."""
    if isinstance(value, dict):
        return value
    peers: dict[str, str] = {}
    for item in _comma_separated(value):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not url:
            raise ValueError(f"peer '{item}' is not NAME=URL (URL: the OpenAI base URL, e.g. http://127.0.0.1:7997)")
        if not PEER_NAME.match(name) or name in TARGETS:
            raise ValueError(f"peer name '{name}': letters, digits, _ . - (up to 32), and not {' or '.join(TARGETS)}")
        if name in peers:
            raise ValueError(f"peer '{name}' given twice")
        if "://" not in url:
            raise ValueError(f"peer '{name}': '{url}' is not an http(s) URL")
        peers[name] = url
    return peers


PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], NoDecode, BeforeValidator(_comma_separated)]
LengthSpecs = Annotated[list[LengthSpec], NoDecode, BeforeValidator(_length_specs)]
Peers = Annotated[dict[str, str], NoDecode, BeforeValidator(_peers)]


class BenchSettings(BaseSettings):
    """bge-bench: served throughput and latency against the in-process PyTorch baseline."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_BENCH_",
        cli_kebab_case=True,
        cli_prog_name="bge-bench",
        cli_implicit_flags=True,
        protected_namespaces=(),
        extra="ignore",
    )

    # load
    target: Literal["gateway", "triton", "both", "none"] = Field(
        "both", description="which of the project's endpoints to load (none: only the --peers)"
    )
    concurrency: PositiveInts = Field([1, 8, 32], min_length=1, description="requests in flight, e.g. 1,8,32")
    lengths: LengthSpecs = Field(
        [LengthSpec(64, 64)],
        min_length=1,
        description="tokens per text incl. [CLS]/[SEP]: N (fixed) or A-B (uniform), several separated by commas",
    )
    texts_per_request: PositiveInts = Field([1], min_length=1, description="texts in one request, e.g. 1,16")
    duration: float | None = Field(None, gt=0, description=f"seconds per scenario (default {DEFAULT_DURATION_S:g})")
    requests: int | None = Field(None, ge=1, description="requests per scenario (with --duration: the first to end)")
    warmup: int | None = Field(
        None,
        ge=0,
        description="unrecorded requests per scenario (default: the concurrency, at least 2, in round 1 only)",
    )
    rounds: int = Field(
        1,
        ge=1,
        description="measure every scenario this many times, the targets taking turns (A B, B A, A B, ...) so a "
        "machine whose speed drifts moves each alike; the peer tables give medians and the median of the "
        "per-round ratios",
    )
    pool_size: int = Field(512, ge=1, description="distinct texts per length spec")
    seed: int = 0
    encoding_format: Literal["base64", "float"] = Field(
        "base64", description="gateway response format (the openai SDK asks for base64)"
    )
    allow_remote: bool = Field(False, description="allow targets that are not loopback addresses")

    peers: Peers = Field(
        {},
        description="other OpenAI-compatible servers loaded with the same scenarios in the same run, as "
        "NAME=BASE_URL (the openai SDK's base_url: POST BASE_URL/embeddings), comma-separated, e.g. "
        "infinity=http://127.0.0.1:7997",
    )
    peer_model: str | None = Field(None, description="`model` sent to the peers (default: the gateway's)")
    memory: bool = Field(
        True,
        description="after each scenario, the RSS and PSS of the processes listening on each target's ports "
        "and their children (--no-memory skips it)",
    )

    # server
    model_dir: Path = Field(description="HF model dir with weights: tokenizer for the texts, weights for the baseline")
    model_name: str = Field(DEFAULT_MODEL, description="Triton ensemble name")
    gateway_model: str | None = Field(None, description="`model` sent to the gateway (default: --model-name)")
    gateway_url: str = f"http://127.0.0.1:{GATEWAY_PORT}"
    gateway_api_key: str | None = Field(None, description="the gateway's API key (better as BGE_BENCH_GATEWAY_API_KEY)")
    triton_grpc_url: str = f"127.0.0.1:{TRITON_GRPC_PORT}"
    triton_metrics_url: str = f"http://127.0.0.1:{TRITON_METRICS_PORT}/metrics"

    # in-process baseline
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="torch threads of the baseline (and onnxruntime threads with --self-contained)",
    )
    baseline: bool = Field(True, description="measure the in-process baseline (--no-baseline skips it)")
    baseline_seconds: float = Field(20.0, gt=0, description="time bound of each baseline variant")
    sorted_batch_size: int = Field(32, ge=1, description="batch of the offline sorted baseline")

    # --self-contained: export and serve the model in a temporary folder
    self_contained: bool = Field(False, description="export and serve the model in a temporary folder")
    precision: Precision = Field(Precision.FP32, description="--self-contained: export precision")
    max_batch_size: int = Field(64, ge=1, description="--self-contained: the export's max batch size")
    parity: bool = Field(True, description="--self-contained: run the exporter's parity gate")
    keep: bool = Field(False, description="--self-contained: keep the temporary folder (logs, repository)")

    # output
    output_dir: Path = Field(Path("build/bench"), description="where results.json and throughput.png go")
    progress: bool = Field(True, description="a progress bar per scenario (--no-progress hides it)")

    @model_validator(mode="after")
    def _default_duration(self) -> BenchSettings:
        if self.duration is None and self.requests is None:
            self.duration = DEFAULT_DURATION_S
        return self

    @property
    def targets(self) -> tuple[str, ...]:
        """The project's own targets, then the peers, in the order given."""
        own = {"both": TARGETS, "none": ()}.get(self.target, (self.target,))
        return own + tuple(self.peers)

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> BenchSettings:
        return CliApp.run(cls, cli_args=list(sys.argv[1:] if argv is None else argv))
