"""text-embeddings-inference's native wire shapes (`POST /embed`, `GET /info`), for clients written for TEI.

Field names, defaults and error bodies follow TEI (router/src/http/types.rs, router/src/lib.rs). Where
this server cannot do what a field asks (`normalize: false`: normalization is inside the exported
graph; `prompt_name`: the model has no prompts) it says so with a 400 instead of ignoring the field.
Status codes are this gateway's own table (400 for bad input), not TEI's (413 for validation).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from bge_model_repository.contract import Truncate

NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]


class EmbedRequest(BaseModel):
    """`POST /embed`: one text or a list of texts; the answer is a list of vectors."""

    model_config = ConfigDict(strict=True, extra="ignore")

    inputs: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] = Field(
        description="A text or a list of texts."
    )
    normalize: StrictBool = Field(True, description="Vectors are always L2-normalized; false is refused.")
    truncate: StrictBool | None = Field(
        None, description="Cut over-long inputs (true) or refuse them (false / unset), as TEI without --auto-truncate."
    )
    truncation_direction: Annotated[
        Literal["Right", "Left"], BeforeValidator(lambda v: v.capitalize() if isinstance(v, str) else v)
    ] = Field("Right", description="Which end a cut removes: Right keeps the start, Left the end (any case).")
    prompt_name: StrictStr | None = Field(None, description="Not supported (the model defines no prompts).")
    dimensions: Annotated[StrictInt, Field(gt=0)] | None = Field(None, description="As for /v1/embeddings.")

    @model_validator(mode="before")
    @classmethod
    def _flatten_parameters(cls, body: Any) -> Any:
        """huggingface_hub's `InferenceClient.feature_extraction` nests the options in `parameters`."""
        if isinstance(body, dict) and isinstance(body.get("parameters"), dict):
            options = {k: v for k, v in body["parameters"].items() if v is not None}
            body = {**options, **{k: v for k, v in body.items() if k != "parameters"}}
        return body

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    def truncation(self) -> Truncate:
        if not self.truncate:
            return Truncate.NONE
        return Truncate.END if self.truncation_direction == "Right" else Truncate.START


class EmbeddingModel(BaseModel):
    pooling: str


class ModelType(BaseModel):
    embedding: EmbeddingModel


class Info(BaseModel):
    """`GET /info`, TEI's fields; what Triton does not say (sha, tokenization workers) is null."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: ModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int | None = None
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool = False
    tokenization_workers: int | None = None
    version: str
    sha: str | None = None
    docker_label: str | None = None


TeiErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Unauthorized", "NotFound"]


class TeiError(BaseModel):
    """TEI's error body: `{"error": message, "error_type": kind}`."""

    error: str
    error_type: TeiErrorType


def dtype_name(precision: str | None) -> str:
    """TEI names dtypes float32 / float16; int8 stays int8."""
    return {"fp32": "float32", "fp16": "float16"}.get(precision or "", precision or "unknown")
