"""The gateway's one settings object: every field is an env var (`BGE_GATEWAY_<FIELD>`) and a CLI flag."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bge_model_repository.contract import DEFAULT_GRPC_URL, DEFAULT_MODEL, GATEWAY_PORT

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class CancelMode(str, Enum):
    """Whether abandoned requests cancel their Triton calls: decided from Triton's version, or forced."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"

    @classmethod
    def _missing_(cls, value: object) -> CancelMode | None:
        aliases = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}
        text = str(value).strip().lower()
        return cls.__members__.get(aliases.get(text, text).upper())


class GatewaySettings(BaseSettings):
    """How the OpenAI-compatible gateway serves one Triton embedding model."""

    model_config = SettingsConfigDict(
        env_prefix="BGE_GATEWAY_",
        cli_prog_name="bge-gateway",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="ignore",
        frozen=True,
    )

    triton_url: str = Field(DEFAULT_GRPC_URL, description="Triton gRPC endpoint host:port (one long-lived channel).")
    model_name: str = Field(DEFAULT_MODEL, description="Triton ensemble to call (text in, embedding out).")
    served_model_name: str | None = Field(None, description="Name clients pass as `model`; defaults to model_name.")
    host: str = Field("0.0.0.0", description="Interface to bind; 127.0.0.1 keeps it off the network.")
    port: int = Field(GATEWAY_PORT, ge=0, le=65535, description="HTTP port.")
    api_key: SecretStr | None = Field(
        None,
        description="If set, every route but /health needs `Authorization: Bearer <key>`. From the environment "
        "only (BGE_GATEWAY_API_KEY) or api_key_file: a key on the command line is readable by every local "
        "user in /proc/<pid>/cmdline, so --api-key is refused.",
    )
    api_key_file: Path | None = Field(
        None, description="File holding the API key (a mounted Secret); surrounding whitespace is ignored."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="Largest request body; bigger ones get 413 before parsing (2048 long texts fit).",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Deadline of each embedding request; every Triton call it makes carries the time left as "
        "its gRPC deadline, so Triton drops the work too. Past it the client gets 504.",
    )
    max_inputs: int = Field(2048, gt=0, description="Most inputs in one request (OpenAI's limit is 2048).")
    max_input_chars: int = Field(
        100_000,
        gt=0,
        description="Longest text, in characters; longer ones get 400 at once. The model reads 512 tokens "
        "(1,000-2,500 characters), so a longer text is a document to split, not to embed whole.",
    )
    max_concurrent_requests: int = Field(
        256,
        gt=0,
        description="Embedding requests in flight at once; more get 429 at once instead of queueing "
        "(bounds memory; Triton's own queue bounds GPU work).",
    )
    chunk_concurrency: int = Field(
        8,
        gt=0,
        description="Triton requests one API request keeps in flight; more overlaps better, fewer leaves "
        "room in Triton's queue for other callers (a 2048-input request is 32 chunks of 64).",
    )
    max_inflight_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens of calls (an upper bound counted from characters) the gateway lets into Triton at "
        "once; other chunks wait in the gateway, the request with the fewest tokens in flight first, so one "
        "huge request cannot starve small ones and an abandoned request's waiting chunks are never sent. "
        "Unset: two full batches of the longest texts (2 x max batch x max length).",
    )
    backlog_unready_s: float | None = Field(
        None,
        gt=0,
        description="/health answers 503 (not ready) while a chunk has waited this long in the gateway for "
        "room in Triton, so a load balancer sends new requests elsewhere until the backlog drains. Unset: "
        "half of request_timeout_s.",
    )
    cancel_triton_calls: CancelMode = Field(
        CancelMode.AUTO,
        description="Cancel a request's Triton calls already in flight when its client disconnects, its "
        "deadline passes or another of its chunks fails (no further call is sent either way). "
        "auto: on when Triton reports version >= 2.53 (release 24.12, which fixed a SIGSEGV on "
        "gRPC cancellations, triton-inference-server/server#7368), off for older ones such as "
        "the nvidia-pytriton 0.7 wheel's 2.51. true/false force it.",
    )
    query_instruction: str | None = Field(
        None,
        description="Prepended to inputs sent with input_type=query; unset: the served model's own (its "
        "export's --query-instruction, BGE's retrieval instruction by default). The token "
        "limit applied to token-id input is the model's too (its max_length).",
    )
    raw_token_ids: bool = Field(
        False,
        description="Accept token-id input rows as given. Off: a row must look like the model's own ids "
        "([CLS] first, [SEP] last, ids in its vocabulary), because other tokenizers' ids (LangChain sends "
        "tiktoken's by default) would otherwise be embedded into wrong vectors; such rows get a 400 naming "
        "the fix.",
    )
    matryoshka_dims: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Dimensions the model was trained to be cut to (e.g. 256,512); `dimensions` may "
        "only differ from the native size when it is one of these. Empty: native only.",
    )
    shutdown_timeout_s: int = Field(
        20,
        gt=0,
        description="On SIGTERM the gateway stops accepting connections and lets requests in flight finish "
        "for up to this long, then exits. Keep it under the pod's terminationGracePeriodSeconds "
        "minus its preStop sleep.",
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request, headers and body, must arrive within this long of its connection opening (or "
        "of the previous answer on it); otherwise the connection is closed. Frees what idle and slowloris "
        "connections hold.",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="A keep-alive connection idle this long after an answer is closed."
    )
    max_header_bytes: int = Field(
        32 * 1024,
        gt=0,
        description="Largest request line plus headers, in bytes (this bounds their count too); more gets 431.",
    )
    max_connections: int = Field(
        1024,
        gt=0,
        description="Connections served at once; past it a request gets 503 at once. Keep it under the "
        "process's open-file limit.",
    )
    log_level: LogLevel = Field("info", description="Logging level of the gateway and uvicorn.")

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, values: Any) -> Any:
        if not isinstance(values, dict) or not values.get("api_key_file"):
            return values
        if values.get("api_key"):
            raise ValueError("set the API key once: api_key or api_key_file, not both")
        path = Path(values["api_key_file"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"api_key_file {path} cannot be read: {exc.strerror}") from None
        if not key:
            raise ValueError(f"api_key_file {path} is empty")
        return {**values, "api_key": key}

    @field_validator("matryoshka_dims", mode="before")
    @classmethod
    def _parse_dims(cls, value: Any) -> Any:
        """Accept "256,512" and "[256, 512]" from env/CLI as well as a list."""
        if isinstance(value, str):
            return [int(part) for part in value.strip("[] ").split(",") if part.strip()]
        return value

    @field_validator("matryoshka_dims")
    @classmethod
    def _positive_dims(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError("matryoshka dims must be positive")
        return sorted(set(value))

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def public_model_name(self) -> str:
        """The `model` clients must send and the gateway reports."""
        return self.served_model_name or self.model_name

    def describe(self) -> str:
        """One line for the start-up log; the API key is only said to be set, never shown."""
        fields = self.model_dump()
        fields["api_key"] = "set (redacted)" if self.api_key else "none"
        return ", ".join(f"{name}={value}" for name, value in fields.items())
