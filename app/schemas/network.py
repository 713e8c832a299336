"""Request and response models of the inside-the-network API (summary, layers, features, filters, RF)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import STRICT_REQUEST
from app.services.network import Structure

Weights = Literal["auto", "pretrained", "untrained"]
Cmap = Literal["viridis", "magma", "inferno", "cividis", "gray", "rdbu"]

MACS_DESCRIPTION = (
    "multiply-accumulates per sample of convolutions, linear layers and matrix products (attention's "
    "projections, Q·Kᵀ and softmax·V): the figure torchvision's GFLOPS, fvcore and ptflops report"
)
OTHER_OPS_DESCRIPTION = (
    "the other arithmetic per sample, not included in macs: normalisation (one per output element), pooling "
    "(one per window element; adaptive pooling one per input element), element-wise activations (one per "
    "output element) and attention's softmax (one per score); the residual + and other functional element-wise "
    "operations are in neither figure"
)
CALL_DESCRIPTION = (
    "which run of a module that runs more than once in one forward pass (a reused ReLU, EfficientNet-Lite0's "
    "_swish): 0 is the first call, negative values count from the end (-1 = the last); the last call when omitted"
)


class LayerNode(BaseModel):
    name: str = Field(description="dotted module path; '' is the whole model")
    type: str
    kind: str
    output_shape: list[int] | None = Field(
        description="per sample, batch dropped; null if the module did not run"
    )
    params: int
    macs: int = Field(description=MACS_DESCRIPTION + " (children summed for containers)")
    other_ops: int = Field(default=0, description=OTHER_OPS_DESCRIPTION + " (children summed for containers)")
    order: int
    calls: int = Field(description="how many times the module runs in one forward pass (0: it did not run)")
    children: list[LayerNode]


class TotalsOut(BaseModel):
    params: int
    trainable_params: int
    macs: int = Field(description=MACS_DESCRIPTION)
    other_ops: int = Field(default=0, description=OTHER_OPS_DESCRIPTION)
    layers: int
    leaf_layers: int
    param_bytes: int
    input_shape: list[int]
    output_shape: list[int] | None
    uncounted_types: list[str] = Field(
        description="module types whose arithmetic is not known (counted as 0): when not empty, macs and "
        "other_ops are lower bounds"
    )


class ModelHeader(BaseModel):
    model: str
    display_name: str
    weights: str
    untrained: bool
    weights_note: str | None
    image_id: str | None


class SummaryResponse(ModelHeader):
    tree: LayerNode
    totals: TotalsOut


class LayerRow(BaseModel):
    name: str
    type: str
    kind: str = Field(
        description="conv, conv_transpose, linear, norm, pool, activation, dropout, container, other"
    )
    depth: int
    leaf: bool
    output_shape: list[int] | None
    params: int
    macs: int = Field(description=MACS_DESCRIPTION)
    other_ops: int = Field(default=0, description=OTHER_OPS_DESCRIPTION)
    calls: int = Field(default=1, description="how many times the module runs in one forward pass")
    rf: float | None = Field(description="theoretical receptive field (pixels of the network input)")
    rf_h: float | None
    rf_w: float | None
    jump: float | None = Field(description="distance in input pixels between neighbouring units")
    start_h: float | None
    start_w: float | None
    grid: bool | None = Field(description="an NCHW map whose units have (y, x) positions")
    spatial: bool | None = Field(description="False once space has been pooled or flattened away")
    global_context: bool | None
    approx: bool | None


class LayersResponse(ModelHeader):
    input_shape: list[int]
    conv_layers: list[str]
    layers: list[LayerRow]


class FeaturesParams(BaseModel):
    """What one view of a layer's feature maps depends on: the fields of POST /api/v1/features and the page state
    of /network (its URL's query), defined once. Query strings are parsed leniently ("2" is 2); the JSON body
    (FeaturesRequest) is strict."""

    image_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(
        default=None, max_length=128, description="zoo name; default: the default model"
    )
    weights: Weights = "auto"
    layer: str | None = Field(
        default=None, max_length=300, description="dotted layer name; default: first conv"
    )
    depth: int | None = Field(
        default=None, ge=0, description="instead of layer: the index of a convolution (0 = the first)"
    )
    channels: list[int] | None = Field(default=None, max_length=4096)
    channel: int | None = Field(
        default=None, ge=0, description="one channel (format=png or npy; the enlarged view of /network)"
    )
    call: int | None = Field(default=None, ge=-64, le=63, description=CALL_DESCRIPTION)
    sort: Literal["index", "mean", "max", "std"] = "index"
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=32, ge=1, le=256)
    scale: Literal["channel", "layer"] = "channel"
    cmap: Cmap = "viridis"
    opacity: float = Field(default=0.5, ge=0.0, le=1.0, description="opacity of a channel over the input")
    vmin: float | None = Field(default=None, allow_inf_nan=False)
    vmax: float | None = Field(default=None, allow_inf_nan=False)
    overlay: bool = Field(default=False, description="format=png with channel: draw over the input image")
    format: Literal["png", "json", "npy"] = "json"


class FeaturesRequest(FeaturesParams):
    model_config = STRICT_REQUEST


class ChannelStatOut(BaseModel):
    channel: int
    mean: float
    max: float
    min: float
    std: float


class FeaturesResponse(ModelHeader):
    layer: str
    layer_type: str
    call: int = Field(default=0, description="the 0-based call of the layer shown")
    calls: int = Field(default=1, description="how many times the layer runs in one forward pass")
    shape: list[int]
    sort: str
    page: int
    pages: int
    per_page: int
    total_channels: int
    channels: list[ChannelStatOut] = Field(description="this page, in the requested order")
    receptive_field: dict[str, Any] | None


class FiltersResponse(ModelHeader):
    layer: str
    weight_shape: list[int]
    first_conv: bool
    sort: str
    page: int
    pages: int
    items: list[dict[str, Any]]
    filter: int | None
    limit: float
    conv_layers: list[str]


class ReceptiveFieldParams(BaseModel):
    """One unit's receptive field: the fields of POST /api/v1/receptive-field and the page state of
    /receptive-fields, defined once (query strings lenient, the JSON body strict)."""

    model: str | None = Field(
        default=None, max_length=128, description="zoo name; default: the default model"
    )
    weights: Weights = "auto"
    image_id: str | None = Field(default=None, max_length=128)
    layer: str | None = Field(
        default=None, min_length=1, max_length=300, description="default: a convolution half-way down"
    )
    y: int | None = Field(default=None, ge=0, description="unit row; default: the centre row")
    x: int | None = Field(default=None, ge=0, description="unit column; default: the centre column")
    channel: int | None = Field(default=None, ge=0, description="one channel; default: sum over channels")
    call: int | None = Field(default=None, ge=-64, le=63, description=CALL_DESCRIPTION)
    format: Literal["json", "png", "npy"] = "json"


class ReceptiveFieldRequest(ReceptiveFieldParams):
    model_config = STRICT_REQUEST


class FiltersParams(BaseModel):
    """Learned filters of a convolution: the query of GET /api/v1/models/{name}/filters and of the page's
    filter region."""

    weights: Weights = "auto"
    layer: str | None = Field(default=None, max_length=300, description="a convolution; default: the first")
    sort: Literal["index", "norm"] = "index"
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=64, ge=1, le=256)
    filter: int | None = Field(default=None, ge=0, description="later convs: which output filter")
    format: Literal["png", "json", "npy"] = "json"


class MilestonesParams(BaseModel):
    """The page state of /milestones: two models compared on one image at one relative depth."""

    image_id: str | None = Field(default=None, max_length=128)
    model_a: str | None = Field(default=None, max_length=128)
    model_b: str | None = Field(default=None, max_length=128)
    weights: Weights = "auto"
    depth: float = Field(default=0.5, ge=0.0, le=1.0, description="0 = the first convolution, 1 = the last")


class ReceptiveFieldResponse(ModelHeader):
    layer: str
    y: int
    x: int
    larger_than_image: bool = Field(description="the theoretical field is wider or taller than the input")
    channel: int | None
    receptive_field: dict[str, Any]
    box: dict[str, int] = Field(description="theoretical input box, inclusive, may extend past the image")
    box_clipped: dict[str, int]
    input_shape: list[int]
    erf_max: float
    erf_extent: dict[str, int] | None = Field(description="bounding box of the ERF >= 1% of its maximum")


def layer_rows(structure: Structure) -> list[LayerRow]:
    rows = []
    for info in structure.tree.walk():
        if not info.name:
            continue
        rf = structure.rf.get(info.name)
        rows.append(
            LayerRow(
                name=info.name,
                type=info.type,
                kind=info.kind,
                depth=info.depth,
                leaf=info.is_leaf,
                output_shape=list(info.output_shape) if info.output_shape is not None else None,
                params=info.params,
                macs=info.macs,
                other_ops=info.other_ops,
                calls=info.calls,
                rf=rf.size if rf else None,
                rf_h=rf.size_h if rf else None,
                rf_w=rf.size_w if rf else None,
                jump=rf.jump if rf else None,
                start_h=rf.start_h if rf else None,
                start_w=rf.start_w if rf else None,
                grid=rf.grid if rf else None,
                spatial=rf.spatial if rf else None,
                global_context=rf.global_context if rf else None,
                approx=rf.approx if rf else None,
            )
        )
    return rows
