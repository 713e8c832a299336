"""Response and request models shared by the foundation's JSON routes (models, predictions, jobs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.imaging.preprocess import Fit
from app.core.models.zoo import ModelSpec

# Request bodies are strict: JSON false is not 0, 0 is not false, "2" is not 2, 2.0 is not 2 (floats still
# take integers). NaN and Infinity, which json.loads lets through, are refused. Shared by every request model.
STRICT_REQUEST = ConfigDict(strict=True, allow_inf_nan=False)


class ErrorOut(BaseModel):
    """What went wrong: a stable code, a sentence for people, and the request field it is about."""

    # Errors may carry extra fields (limit/estimate/maximum, retry_after, choices, details, ...): allowed.
    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="not_found, invalid_input, over_limit, too_large, unsupported_media, weights_unavailable, "
        "conflict, busy, storage_failed, unauthorized, forbidden, bad_request, http_error"
    )
    message: str
    field: str | None = Field(
        description="the request field at fault; null when it is the request as a whole"
    )
    limit: str | None = Field(default=None, description="over_limit: the Settings name of the limit")
    estimate: float | str | None = Field(default=None, description="over_limit: what the request would cost")
    maximum: float | str | None = Field(default=None, description="over_limit: the most that is allowed")
    retry_after: int | None = Field(default=None, description="busy: seconds to wait (also in Retry-After)")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="invalid_input from validation: every field that failed"
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer of /api/v1."""

    error: ErrorOut


class ModelInfo(BaseModel):
    name: str
    display_name: str
    family: str
    year: int | None
    key_idea: str
    source: Literal["torchvision", "pypi", "convscope", "custom"]
    params: int | None
    depth: int | None
    input_size: tuple[int, int]
    in_channels: int
    num_classes: int
    top1: float | None = Field(
        description="ImageNet-1k top-1 % from the weights' metadata (held-out accuracy % for built-ins)"
    )
    top5: float | None
    gflops: float | None = Field(
        description="GMACs of one forward (torchvision's published figure; for uploaded models our count): "
        "convolutions, linear layers and attention's matrix products, without normalisation, pooling or "
        "activations"
    )
    milestone: bool
    builtin: bool
    weights_file: str | None
    pretrained_available: bool
    available: bool = Field(
        description="False when this server lists the model but will not run it (see unavailable_reason)"
    )
    unavailable_reason: str | None = Field(
        description="why the model is unavailable, naming the limit (e.g. max_zoo_parameters); null if available"
    )

    @classmethod
    def from_spec(cls, spec: ModelSpec, available: bool) -> ModelInfo:
        assert spec.preprocessing is not None
        return cls(
            name=spec.name,
            display_name=spec.display_name,
            family=spec.family,
            year=spec.year,
            key_idea=spec.key_idea,
            source=spec.source,  # type: ignore[arg-type]
            params=spec.params,
            depth=spec.depth,
            input_size=spec.input_size,
            in_channels=spec.preprocessing.in_channels,
            num_classes=spec.num_classes,
            top1=spec.top1,
            top5=spec.top5,
            gflops=spec.gflops,
            milestone=spec.milestone,
            builtin=spec.builtin,
            weights_file=spec.weights_file,
            pretrained_available=available,
            available=spec.unavailable_reason is None,
            unavailable_reason=spec.unavailable_reason,
        )


MAX_TOP_K = 20
# `k` everywhere (predict, every explanation): one name, one default, one range.
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="how many classes, most probable first")]
DEFAULT_TOP_K = 5
FIT_DESCRIPTION = (
    "crop: the model's own transform (torchvision: shorter side resized, centre cropped, so a wide image "
    "loses its sides); fit: the whole image resized to fit the input, aspect ratio kept, zero-padded"
)


class PredictFields(BaseModel):
    """The fields of a prediction, defined once for the JSON route and the page (one name, default, check)."""

    model: str | None = Field(default=None, description="zoo name; the default model when omitted")
    weights: Literal["auto", "pretrained", "untrained"] = "auto"
    k: TopK = DEFAULT_TOP_K
    fit: Fit = Field(default="crop", description=FIT_DESCRIPTION)


class PredictRequest(PredictFields):
    """POST /api/v1/predict: a strict JSON body."""

    model_config = STRICT_REQUEST

    image_id: str = Field(min_length=1, max_length=128)


class PredictQuery(PredictFields):
    """GET /predict: the same fields from the query string (the page's state in the URL); no image yet is fine."""

    image_id: str | None = Field(default=None, max_length=128)


class PredictionOut(BaseModel):
    index: int
    label: str
    probability: float


class PreprocessingOut(BaseModel):
    fit: Fit = Field(description="which geometry made the tensor: " + FIT_DESCRIPTION)
    steps: list[str]
    input_shape: list[int]
    mean: list[float]
    std: list[float]


class PredictResponse(BaseModel):
    model: str
    display_name: str
    weights: Literal["pretrained", "untrained"]
    weights_note: str | None
    image_id: str
    predictions: list[PredictionOut]
    preprocessing: PreprocessingOut


class JobCreated(BaseModel):
    job_id: str
    status_url: str


class JobAccepted(JobCreated):
    """202 for a job of forward passes: the estimate comes before the work."""

    estimated_seconds: float | None
    forward_passes: int
    macs: int
    batch_size: int
    time_limit_seconds: float | None = Field(
        description="the job stops (failed) after this (max_job_seconds)"
    )


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    result: dict[str, Any] | None
    error: str | None
    partial: dict[str, Any] | None
    artifacts: list[str]
    # The estimate made before queueing (estimated_seconds, forward_passes, macs, batch_size, ...).
    estimate: dict[str, Any] | None = None
    time_limit_seconds: float | None = None


class ArtifactStats(BaseModel):
    """format=json of a job artifact: its shape and value range, not the values."""

    name: str
    shape: list[int]
    dtype: str
    min: float
    max: float
