"""Request and response models of the explanation API (/api/v1/explain/...)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import STRICT_REQUEST

WeightsField = Literal["auto", "pretrained", "untrained"]
CamFormat = Literal["png", "heatmap", "json", "npy"]


class ExplainBase(BaseModel):
    model_config = STRICT_REQUEST

    image_id: str = Field(min_length=1, max_length=128)
    model: str | None = Field(default=None, description="zoo name; the default model when omitted")
    weights: WeightsField = "auto"
    target: int | None = Field(default=None, ge=0, description="class index; the top-1 class when omitted")
    k: int = Field(default=5, ge=1, le=20, description="how many top predictions to return")


class CamRequest(ExplainBase):
    method: str = Field(
        default="gradcam",
        description="gradcam, gradcam++, xgradcam, layercam, hirescam, scorecam, ablationcam, eigencam, random",
    )
    layer: str | None = Field(
        default=None, description="dotted module path; the last conv block when omitted"
    )
    call: int | None = Field(
        default=None,
        ge=-64,
        le=63,
        description="which run of a layer that runs more than once in one forward pass (EfficientNet-Lite0's "
        "_swish runs at the stem and the head): 0 is the first call, negative values count from the end; the "
        "last call when omitted",
    )
    opacity: float = Field(default=0.5, ge=0.0, le=1.0)
    cmap: Literal["viridis", "magma", "inferno", "cividis"] = "viridis"
    normalise: Literal["raw", "normalised"] = "normalised"
    resolution: Literal["feature", "input"] = Field(
        default="input", description="feature: the map's own grid (e.g. 7x7); input: upsampled to the input"
    )
    format: CamFormat = Field(
        default="png",
        description="png: overlay; heatmap: the colour-mapped map; json: numbers; npy: the array",
    )


class PredictionOut(BaseModel):
    index: int
    label: str
    probability: float


class CamOut(BaseModel):
    model: str
    weights: Literal["pretrained", "untrained"]
    untrained: bool
    method: str
    method_name: str
    target: int
    label: str
    target_probability: float
    layer: str
    default_layer: str
    call: int = Field(default=0, description="the 0-based call of the layer the map is of")
    calls: int = Field(default=1, description="how many times the layer runs in one forward pass")
    activation_shape: list[int]
    shape: list[int] = Field(description="shape of the returned map (feature or input resolution)")
    min: float
    max: float
    raw_min: float
    raw_max: float
    normalise: Literal["raw", "normalised"]
    resolution: Literal["feature", "input"]
    input_size: list[int]
    predictions: list[PredictionOut]
    seconds: float


class OcclusionRequest(ExplainBase):
    window: int | None = Field(default=None, ge=1, le=1024, description="side of the hidden square, px")
    stride: int | None = Field(
        default=None, ge=1, le=1024, description="step between windows; window/2 if omitted"
    )
    baseline: Literal["zeros", "mean", "blur"] = "zeros"
    progressive: bool = Field(default=True, description="coarse map first, then refine")


class PatchRequest(ExplainBase):
    y: int = Field(ge=0, description="row of the patch centre in the network's input")
    x: int = Field(ge=0, description="column of the patch centre in the network's input")
    window: int | None = Field(default=None, ge=1, le=1024)
    baseline: Literal["zeros", "mean", "blur"] = "zeros"


class PatchOut(BaseModel):
    model: str
    box: list[int] = Field(description="[y0, x0, y1, x1] of the hidden square")
    target: int
    label: str
    target_before: float
    target_after: float
    before: list[PredictionOut]
    after: list[PredictionOut]


class CompareRequest(ExplainBase):
    methods: list[str] = Field(
        default_factory=lambda: ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"],
        min_length=1,
        max_length=9,
    )
    layer: str | None = None
    steps: int = Field(default=24, ge=4, le=100, description="slices of the deletion/insertion curves")
    cmap: Literal["viridis", "magma", "inferno", "cividis"] = "viridis"
    images: bool = Field(default=False, description="include PNG data URIs of each map")


class MethodScoreOut(BaseModel):
    method: str
    name: str
    kind: str
    shape: list[int]
    raw_min: float
    raw_max: float
    deletion_auc: float = Field(description="lower is better")
    insertion_auc: float = Field(description="higher is better")
    beats_random_deletion: bool
    beats_random_insertion: bool
    deletion_curve: list[float]
    insertion_curve: list[float]
    heatmap_png: str | None = None
    overlay_png: str | None = None


class CompareOut(BaseModel):
    model: str
    weights: Literal["pretrained", "untrained"]
    untrained: bool
    target: int
    label: str
    target_probability: float
    layer: str
    default_layer: str
    scale: dict[str, float | str]
    fractions: list[float]
    steps: int
    methods: list[MethodScoreOut]
    random: MethodScoreOut
    predictions: list[PredictionOut]
    notes: list[str]
    seconds: float


class MethodOut(BaseModel):
    key: str
    name: str
    kind: str
    summary: str
    paper: str
    slow: bool


class LayersOut(BaseModel):
    model: str
    default: str
    why: str
    layers: list[dict[str, str | int | list[int]]] = Field(
        description="name, type, shape (of the last call), calls (how many times it runs) and label (the name, "
        "with '(called N times)' for a layer that runs more than once)"
    )
