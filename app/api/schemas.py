"""Response and request models shared by the foundation's JSON routes (models, predictions, jobs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.core.zoo import ModelSpec


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
    gflops: float | None
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


class PredictRequest(BaseModel):
    image_id: str = Field(min_length=1, max_length=128)
    model: str | None = Field(default=None, description="zoo name; the default model when omitted")
    weights: Literal["auto", "pretrained", "untrained"] = "auto"
    k: int = Field(default=5, ge=1, le=20)


class PredictionOut(BaseModel):
    index: int
    label: str
    probability: float


class PreprocessingOut(BaseModel):
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


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    result: dict[str, Any] | None
    error: str | None
    partial: dict[str, Any] | None
    artifacts: list[str]
