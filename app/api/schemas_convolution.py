"""Request and response models of the convolution lab's JSON API (/api/v1/convolve, /filter, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# strict: JSON true and "1" are not numbers (ints still are)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
PaddingName = Literal["none", "zeros", "reflect", "replicate", "circular"]
PoolName = Literal["max", "avg"]


class ConvolveRequest(BaseModel):
    """A small matrix convolved with a small kernel, with every output cell written out."""

    model_config = ConfigDict(extra="forbid")

    input: list[list[FiniteFloat]] = Field(
        ..., description="Input grid, rows of numbers, at most 16x16.", examples=[[[10, 10, 0], [10, 10, 0]]]
    )
    kernel: list[list[FiniteFloat]] = Field(
        ..., description="Kernel, rows of numbers, 1x1 up to 7x7.", examples=[[[1, 0, -1], [1, 0, -1]]]
    )
    padding: PaddingName = Field("none", description="none, zeros, reflect, replicate or circular.")
    amount: int = Field(0, ge=0, le=8, description="Padding width on every side (ignored for 'none').")
    stride: int = Field(1, ge=1, le=8)
    dilation: int = Field(1, ge=1, le=4)
    flip: bool = Field(
        False, description="True: true convolution (kernel flipped); False: cross-correlation."
    )
    steps: bool = Field(True, description="Include the multiply-and-sum of every output cell.")
    relu: bool = False
    pool: PoolName | None = Field(None, description="Pool the (ReLU'd) output with max or avg.")
    pool_size: int = Field(2, ge=1, le=8)
    pool_stride: int | None = Field(None, ge=1, le=8, description="Defaults to pool_size.")


class SizeFormulaOut(BaseModel):
    axis: str
    n: int
    k: int
    padding: int
    stride: int
    dilation: int
    result: int
    symbolic: str
    substituted: str


class StepOut(BaseModel):
    row: int
    col: int
    cells: list[list[int]] = Field(description="[channel, row, col] in the padded input, one per weight.")
    source: list[list[int] | None] = Field(description="[row, col] in the original input; null for padding.")
    values: list[float]
    weights: list[float]
    products: list[float]
    total: float
    text: str = Field(description="e.g. '(4 x 0) + (0 x 0) + ... + (-4 x 2) = -8' (weight x input).")


class PoolWindowOut(BaseModel):
    row: int
    col: int
    rows: list[int]
    cols: list[int]
    value: float
    winner: list[int] | None


class PooledOut(BaseModel):
    kind: str
    size: int
    stride: int
    output: list[list[float]]
    windows: list[PoolWindowOut]


class ConvolveResponse(BaseModel):
    output: list[list[float]]
    shape: list[int]
    padded: list[list[float]]
    kernel_applied: list[list[float]] = Field(
        description="The kernel as slid over the input (flipped if flip)."
    )
    padding: str
    amount: int
    stride: int
    dilation: int
    flip: bool
    flip_sentence: str
    formulas: list[SizeFormulaOut]
    steps: list[StepOut] | None = None
    relu: list[list[float]] | None = None
    pooled: PooledOut | None = None
    flattened: list[float]


class KernelIn(BaseModel):
    """A library kernel by name, or explicit weights (2-D k x k, or 3-D depth x k x k for mode '3d')."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="A library kernel (GET /api/v1/kernels), e.g. 'sobel_x'.")
    weights: list[Any] | None = Field(
        None, description="Rows of numbers (odd size 1..11), or a list of such grids (one per channel)."
    )
    label: str | None = Field(None, max_length=60, description="Display name for explicit weights.")
    channel_weights: list[FiniteFloat] | None = Field(
        None, description="Mode '3d' only: scale a 2-D kernel per channel (e.g. [1, 0, -1] for R minus B)."
    )


class FilterRequest(BaseModel):
    """Filter an uploaded or sample image with one or more kernels (a "layer")."""

    model_config = ConfigDict(extra="forbid")

    image_id: str
    kernels: list[KernelIn] = Field(..., min_length=1, max_length=8)
    mode: Literal["grey", "per_channel", "3d"] = "grey"
    padding: PaddingName = Field(
        "zeros", description="'none' gives valid (smaller) maps; others keep the size."
    )
    stride: int = Field(1, ge=1, le=8)
    flip: bool = False
    relu: bool = False
    pool: PoolName | None = None
    pool_size: int = Field(2, ge=1, le=16)
    pool_stride: int | None = Field(None, ge=1, le=16)
    magnitude: bool = Field(False, description="Show |value| on a sequential colour map.")
    scale: Literal["each", "shared"] = Field(
        "each", description="Colour limits per map or shared by all maps."
    )
    max_side: int | None = Field(
        None, ge=16, le=4096, description="Downscale the image first so its longer side is at most this."
    )
    format: Literal["json", "png", "npy"] = "json"
    index: int | None = Field(None, ge=0, description="Only this feature map (0-based).")


class FeatureMapOut(BaseModel):
    index: int
    label: str
    kernel: str
    channel: str | None
    shape: list[int]
    min: float
    max: float
    mean: float
    vmin: float
    vmax: float
    cmap: str
    values: list[list[float]] | None = None


class FilterResponse(BaseModel):
    image_id: str
    mode: str
    input_shape: list[int]
    original_shape: list[int]
    kernels: list[dict[str, Any]]
    maps: list[FeatureMapOut]
    notes: list[str]


class KernelOut(BaseModel):
    name: str
    title: str
    description: str
    category: str
    size: int
    weights: list[list[float]]
    from_lecture: bool


class PresetOut(BaseModel):
    name: str
    title: str
    slide: str
    description: str
    input: list[list[float]]
    kernel: list[list[float]]
    padding: str
    amount: int
    stride: int
    dilation: int
    flip: bool
    relu: bool
    pool: str | None
    pool_size: int
    flatten: bool
    focus: list[int]
    output: list[list[float]]
    pooled: list[list[float]] | None
    slide_grid: list[list[float]] | None
    slide_is_wrong: bool
    differences: list[dict[str, Any]]
    note: str | None
