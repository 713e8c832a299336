"""Request and response models of the convolution lab's JSON API (/api/v1/convolve, /filter, ...)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from app.core.convolution.arithmetic import FLIP_SENTENCE
from app.core.convolution.fc_cost import CostComparison
from app.services import convolution as svc

# strict: JSON true and "1" are not numbers (ints still are)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
PaddingName = Literal["none", "zeros", "reflect", "replicate", "circular"]
PoolName = Literal["max", "avg"]

# Matrix limits live in the schema, so a 5000x5000 body is refused by the first list's length (pydantic
# stops there) and the OpenAPI schema states them. The service checks the same numbers again (odd sizes,
# equal rows) with messages that name the cell.
MAX_GRID = 16
MAX_PLAYGROUND_KERNEL = 7
MAX_FILTER_KERNEL = 11
MAX_KERNEL_DEPTH = 3


def _at_most(n: int) -> BeforeValidator:
    """Refuse a list longer than ``n`` before its items are validated.

    pydantic checks ``max_length`` only after validating every item ("at most 16 items after validation"),
    which for a 5000x5000 body means 25 M numbers (about 20 s); this looks at the length first.
    """

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > n:
            raise PydanticCustomError(
                "too_long",
                "List should have at most {max_length} items, not {actual_length}",
                {"max_length": n, "actual_length": len(value)},
            )
        return value

    return BeforeValidator(check)


# Rows of numbers: 1..N rows of 1..N numbers each (written out, so type checkers see real types).
PlaygroundRow = Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_GRID), _at_most(MAX_GRID)]
PlaygroundGrid = Annotated[list[PlaygroundRow], Field(min_length=1, max_length=MAX_GRID), _at_most(MAX_GRID)]
PlaygroundKernelRow = Annotated[
    list[FiniteFloat], Field(min_length=1, max_length=MAX_PLAYGROUND_KERNEL), _at_most(MAX_PLAYGROUND_KERNEL)
]
PlaygroundKernel = Annotated[
    list[PlaygroundKernelRow],
    Field(min_length=1, max_length=MAX_PLAYGROUND_KERNEL),
    _at_most(MAX_PLAYGROUND_KERNEL),
]
FilterKernelRow = Annotated[
    list[FiniteFloat], Field(min_length=1, max_length=MAX_FILTER_KERNEL), _at_most(MAX_FILTER_KERNEL)
]
FilterKernel2D = Annotated[
    list[FilterKernelRow], Field(min_length=1, max_length=MAX_FILTER_KERNEL), _at_most(MAX_FILTER_KERNEL)
]
FilterKernel3D = Annotated[
    list[FilterKernel2D], Field(min_length=1, max_length=MAX_KERNEL_DEPTH), _at_most(MAX_KERNEL_DEPTH)
]


_KERNEL_2D = TypeAdapter(FilterKernel2D)
_KERNEL_3D = TypeAdapter(FilterKernel3D)
# Validation context of a page's form: its fields are text, validated laxly ("0.25" is a number there).
FORM_CONTEXT = {"form": True}


def _kernel_weights(value: Any, handler: Any, info: ValidationInfo) -> Any:
    """A grid of numbers (2-D) or a list of grids (3-D): only the matching shape is validated, so an error
    names one path in the request's own terms (kernels.0.weights.1.0), never a union member's tag."""
    deep = isinstance(value, list) and value and isinstance(value[0], list) and value[0]
    adapter = _KERNEL_3D if deep and isinstance(value[0][0], list) else _KERNEL_2D
    lax = bool(info.context and info.context.get("form"))
    return adapter.validate_python(value, strict=False if lax else None)


KernelWeights = Annotated[FilterKernel2D | FilterKernel3D, WrapValidator(_kernel_weights)]


def _plain_integer(value: Any) -> Any:
    """Query strings are text: strict here means plain decimal digits ("2", "-1"), not "2.0", " 2", "1_000"
    or "+2", which int() and pydantic's lax mode would take."""
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,12}", value):
        raise PydanticCustomError("int_parsing", "Input should be a whole number written with digits only")
    return value


# An integer query parameter, strictly written (see _plain_integer).
QueryInt = Annotated[int, BeforeValidator(_plain_integer)]


def _empty_is_none(value: Any) -> Any:
    """An empty query or form field means "the default" (a form always sends its inputs, typed or not)."""
    return None if isinstance(value, str) and value.strip() == "" else value


# An optional integer query parameter: absent or empty means None.
OptionalQueryInt = Annotated[QueryInt | None, BeforeValidator(_empty_is_none)]


class ConvolveRequest(BaseModel):
    """A small matrix convolved with a small kernel, with every output cell written out."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: PlaygroundGrid = Field(
        ...,
        description=f"Input grid, rows of numbers, at most {MAX_GRID}x{MAX_GRID}.",
        examples=[[[10, 10, 0], [10, 10, 0]]],
    )
    kernel: PlaygroundKernel = Field(
        ...,
        description=f"Kernel, rows of numbers, 1x1 up to {MAX_PLAYGROUND_KERNEL}x{MAX_PLAYGROUND_KERNEL}.",
        examples=[[[1, 0, -1], [1, 0, -1]]],
    )
    padding: PaddingName = Field("none", description="none, zeros, reflect, replicate or circular.")
    amount: StrictInt = Field(0, ge=0, le=8, description="Padding width on every side (ignored for 'none').")
    stride: StrictInt = Field(1, ge=1, le=8)
    dilation: StrictInt = Field(1, ge=1, le=4)
    flip: StrictBool = Field(
        False, description="True: true convolution (kernel flipped); False: cross-correlation."
    )
    steps: StrictBool = Field(True, description="Include the multiply-and-sum of every output cell.")
    relu: StrictBool = False
    pool: PoolName | None = Field(None, description="Pool the (ReLU'd) output with max or avg.")
    pool_size: StrictInt = Field(2, ge=1, le=8)
    pool_stride: StrictInt | None = Field(None, ge=1, le=8, description="Defaults to pool_size.")

    def params(self) -> svc.PlaygroundParams:
        """The service's parameters; the grids are checked there for equal row lengths (naming the row)."""
        return svc.PlaygroundParams(
            svc.to_matrix(self.input, "input", max_rows=MAX_GRID, max_cols=MAX_GRID),
            svc.to_matrix(
                self.kernel, "kernel", max_rows=MAX_PLAYGROUND_KERNEL, max_cols=MAX_PLAYGROUND_KERNEL
            ),
            self.padding,
            self.amount,
            self.stride,
            self.dilation,
            self.flip,
            self.relu,
            self.pool,
            self.pool_size,
            self.pool_stride,
        )


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

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(
        None, max_length=40, description="A library kernel (GET /api/v1/kernels), e.g. 'sobel_x'."
    )
    weights: KernelWeights | None = Field(
        None,
        description=(
            f"Rows of numbers (odd size 1..{MAX_FILTER_KERNEL}), or a list of such grids, one per image "
            f"channel (at most {MAX_KERNEL_DEPTH}), for mode '3d'."
        ),
    )
    label: str | None = Field(None, max_length=60, description="Display name for explicit weights.")
    channel_weights: list[FiniteFloat] | None = Field(
        None,
        min_length=1,
        max_length=MAX_KERNEL_DEPTH,
        description="Mode '3d' only: scale a 2-D kernel per channel (e.g. [1, 0, -1] for R minus B).",
    )


class FilterRequest(BaseModel):
    """Filter an uploaded or sample image with one or more kernels (a "layer")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: str = Field(..., max_length=64, description="An image id (POST /api/v1/images).")
    kernels: list[KernelIn] = Field(..., min_length=1, max_length=8)
    mode: Literal["grey", "per_channel", "3d"] = Field(
        "grey", description="per_channel gives one map per kernel and channel (3 for colour images)."
    )
    padding: PaddingName = Field(
        "reflect",
        description=(
            "'none' gives valid (smaller) maps; others keep the size. reflect (the default) mirrors the image "
            "at its edges: zeros would draw a bright frame wherever the image is not dark at its border."
        ),
    )
    stride: StrictInt = Field(1, ge=1, le=8)
    flip: StrictBool = False
    relu: StrictBool = False
    pool: PoolName | None = None
    pool_size: StrictInt = Field(2, ge=1, le=16)
    pool_stride: StrictInt | None = Field(None, ge=1, le=16)
    magnitude: StrictBool = Field(False, description="Show |value| on a sequential colour map.")
    scale: Literal["each", "shared"] = Field(
        "each",
        description="Colour limits per map, or one scale shared by all maps (to compare their strength).",
    )
    limits: Literal["robust", "full"] = Field(
        "robust",
        description=(
            "robust: colour limits at the 99th percentile of |value| (of value after ReLU or magnitude), so a "
            "few extreme pixels do not wash out the rest; full: the map's whole range (min-max)."
        ),
    )
    max_side: StrictInt | None = Field(
        None,
        ge=16,
        le=4096,
        description=(
            "Downscale the image first so its longer side is at most this. Without it, images larger than "
            "filter_display_side (1024 px by default) are downscaled to that, and a note says so."
        ),
    )
    format: Literal["json", "png", "npy"] = Field(
        "json",
        description=(
            "json: numbers (at most max_json_values, 2,000,000 by default); png: the maps in a grid "
            "(image/png); npy: float32 (N, H, W) (application/octet-stream)."
        ),
    )
    index: StrictInt | None = Field(None, ge=0, description="Only this feature map (0-based).")

    def params(self, answer: str | None = None) -> svc.FilterParams:
        """The service's parameters; `answer` overrides the encoding the limits count ("page" for the lab)."""
        return svc.FilterParams(
            image_id=self.image_id,
            kernels=[svc.KernelRequest(k.name, k.weights, k.label, k.channel_weights) for k in self.kernels],
            mode=self.mode,
            padding=self.padding,
            stride=self.stride,
            flip=self.flip,
            relu=self.relu,
            pool=self.pool,
            pool_size=self.pool_size,
            pool_stride=self.pool_stride,
            magnitude=self.magnitude,
            scale=self.scale,
            limits=self.limits,
            max_side=self.max_side,
            format=answer or self.format,
            index=self.index,
        )


def convolve_response(outcome: svc.PlaygroundOutcome, with_steps: bool = True) -> dict[str, Any]:
    """The API twin's body (see ConvolveResponse)."""
    res = outcome.result
    pooled: dict[str, Any] | None = None
    if outcome.pooled is not None:
        pooled = {
            "kind": outcome.pooled.kind,
            "size": outcome.pooled.size,
            "stride": outcome.pooled.stride,
            "output": outcome.pooled.output.tolist(),
            "windows": [w.as_dict() for w in outcome.windows],
        }
    return {
        "output": res.output.tolist(),
        "shape": list(res.output.shape),
        "padded": res.padded.tolist(),
        "kernel_applied": res.kernel.tolist(),
        "padding": res.padding,
        "amount": res.amount,
        "stride": res.stride,
        "dilation": res.dilation,
        "flip": res.flip,
        "flip_sentence": FLIP_SENTENCE,
        "formulas": [f.as_dict() for f in res.formulas],
        "steps": [s.as_dict() for s in outcome.steps] if with_steps else None,
        "relu": outcome.relu_output.tolist() if outcome.relu_output is not None else None,
        "pooled": pooled,
        "flattened": outcome.flattened.tolist(),
    }


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
    padding: str = Field(description="The padding used (reflect unless asked otherwise).")
    scale: str
    limits: str
    input_shape: list[int]
    original_shape: list[int]
    kernels: list[dict[str, Any]]
    maps: list[FeatureMapOut]
    notes: list[str]


class CostQuery(BaseModel):
    """The FC-vs-conv calculator's inputs, as query parameters of GET /api/v1/cost and of the /cost page."""

    height: QueryInt = Field(256, ge=1, le=100_000, description="Image height in pixels.")
    width: QueryInt = Field(256, ge=1, le=100_000, description="Image width in pixels.")
    channels: QueryInt = Field(1, ge=1, le=10_000)
    fc_outputs: OptionalQueryInt = Field(
        None, ge=1, le=10_000_000_000, description="Neurons of the FC layer; absent or empty: height x width."
    )
    filters: QueryInt = Field(1, ge=1, le=100_000, description="Convolution filters.")
    kernel: QueryInt = Field(3, ge=1, le=1_000, description="Kernel size k (k x k).")
    stride: QueryInt = Field(1, ge=1, le=1_000)
    padding: OptionalQueryInt = Field(
        None, ge=0, le=1_000, description="Absent or empty: kernel // 2 ('same')."
    )

    def compare(self) -> CostComparison:
        return svc.cost(
            self.height, self.width, self.channels, self.fc_outputs, self.filters, self.kernel, self.stride,
            self.padding,
        )  # fmt: skip


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
