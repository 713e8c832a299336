"""Request and response models of the explanations (/explain, /occlusion, /compare and /api/v1/explain/...).

One request model per feature: its fields (names, defaults, limits) are written once in a ``*View`` model
and used by the JSON route (a strict body: ``*Request``) and by the page (a query: ``*Query``, lax because a
query string carries only text). A bad value is reported with the dotted pydantic location (``opacity``,
``methods.2``) on both. The functions at the end shape the JSON answers from the services' outcomes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.explanation import faithfulness
from app.schemas.common import DEFAULT_TOP_K, STRICT_REQUEST, TopK
from app.services import explain as svc

WeightsField = Literal["auto", "pretrained", "untrained"]
CamFormat = Literal["png", "heatmap", "json", "npy"]
CmapField = Literal["viridis", "magma", "inferno", "cividis"]
ScoreField = Literal["auto", "logit", "probability"]
ProtocolField = Literal["rise", "convscope"]
BaselineField = Literal["zeros", "mean", "blur"]
# A page's query: text converted as a form would be, NaN refused, unknown parameters ignored (links may carry more).
QUERY = ConfigDict(allow_inf_nan=False, extra="ignore")

_SCORE_DOC = (
    "what is explained: the class's logit (score before softmax) or its probability; auto: the logit when the "
    "top-1 probability is 0.99 or more (saturated: hiding anything barely moves it), else the probability"
)


class ExplainBase(BaseModel):
    model_config = STRICT_REQUEST

    image_id: str = Field(min_length=1, max_length=128)
    model: str | None = Field(default=None, description="zoo name; the default model when omitted")
    weights: WeightsField = "auto"
    target: int | None = Field(default=None, ge=0, description="class index; the top-1 class when omitted")
    k: TopK = DEFAULT_TOP_K


class PageBase(BaseModel):
    """What every explanation page takes besides its feature's fields: the image, the model, a typed target."""

    model_config = QUERY

    image_id: str | None = Field(default=None, max_length=128)
    model: str | None = None
    weights: WeightsField = "auto"
    target: str | None = Field(
        default=None, max_length=200, description='"285", "285 · Egyptian cat" or a label'
    )
    k: TopK = DEFAULT_TOP_K


# --- CAM ------------------------------------------------------------------------------------------------


class CamView(BaseModel):
    """The CAM feature's fields, shared by POST /api/v1/explain/cam and GET /explain."""

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
    opacity: float = Field(default=0.5, ge=0.0, le=1.0, description="of the heat map over the input")
    cmap: CmapField = "viridis"
    normalise: Literal["raw", "normalised"] = "normalised"
    resolution: Literal["feature", "input"] = Field(
        default="input", description="feature: the map's own grid (e.g. 7x7); input: upsampled to the input"
    )


class CamQuery(PageBase, CamView):
    model_config = QUERY


class CamRequest(ExplainBase, CamView):
    model_config = STRICT_REQUEST

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
    target_logit: float
    score: Literal["logit"] = Field(
        description="what the map explains: the gradient-based and class-scoring methods use the logit"
    )
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


class OcclusionView(BaseModel):
    """The occlusion feature's fields (the map as a job, and one hidden patch), shared by API and page."""

    window: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="side of the hidden square, px; about 16 px at 224 when omitted",
    )
    stride: int | None = Field(
        default=None, ge=1, le=1024, description="step between windows; window/2 if omitted"
    )
    baseline: BaselineField = "zeros"
    progressive: bool = Field(default=True, description="coarse map first, then refine")
    score: ScoreField = Field(default="auto", description=_SCORE_DOC)


class OcclusionQuery(PageBase, OcclusionView):
    model_config = QUERY


class OcclusionRequest(ExplainBase, OcclusionView):
    model_config = STRICT_REQUEST


class PatchView(BaseModel):
    y: int = Field(ge=0, description="row of the patch centre in the network's input")
    x: int = Field(ge=0, description="column of the patch centre in the network's input")
    window: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="side of the square, px; the occlusion map's window when omitted",
    )
    baseline: BaselineField = "zeros"
    score: ScoreField = Field(default="auto", description=_SCORE_DOC)


class PatchQuery(PageBase, PatchView):
    model_config = QUERY

    image_id: str = Field(min_length=1, max_length=128)


class PatchRequest(ExplainBase, PatchView):
    model_config = STRICT_REQUEST


class PatchOut(BaseModel):
    model: str
    box: list[int] = Field(description="[y0, x0, y1, x1] of the hidden square")
    window: int
    target: int
    label: str
    score: Literal["logit", "probability"] = Field(description="what target_before/target_after measure")
    target_before: float
    target_after: float
    probability_before: float
    probability_after: float
    before: list[PredictionOut]
    after: list[PredictionOut]


class CompareView(BaseModel):
    """The comparison's fields, shared by POST /api/v1/explain/compare and GET /compare."""

    methods: list[str] = Field(
        default_factory=lambda: list(svc.DEFAULT_COMPARE),
        min_length=1,
        max_length=9,
    )
    layer: str | None = None
    protocol: ProtocolField = Field(
        default=faithfulness.DEFAULT_PROTOCOL,
        description="rise: the RISE authors' deletion/insertion protocol (about 224 steps); convscope: `steps` "
        "equal slices, insertion from a sigma-8 blur, seeded random tie-break",
    )
    steps: int = Field(
        default=svc.DEFAULT_STEPS,
        ge=4,
        le=100,
        description="slices of the deletion/insertion curves (convscope protocol; RISE fixes its own)",
    )
    cmap: CmapField = "viridis"


class CompareQuery(PageBase, CompareView):
    model_config = QUERY


class CompareRequest(ExplainBase, CompareView):
    model_config = STRICT_REQUEST

    images: bool = Field(default=False, description="include the URLs of each map's heat map and overlay PNG")


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
    heatmap_url: str | None = Field(default=None, description="/pictures/<key>.png (with images=true)")
    overlay_url: str | None = None


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
    protocol: Literal["rise", "convscope"]
    protocol_note: str
    tie_break: str
    score: Literal["probability"] = Field(description="the curves follow the target's softmax probability")
    step_pixels: int = Field(description="pixels changed per step (the last step may change fewer)")
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


# --- Shaping: outcomes of app/services/explain.py -> the JSON answers (and job results) -------------------


def cam_summary(outcome: svc.CamOutcome, picture: svc.CamPicture) -> dict[str, Any]:
    """The JSON description of a CAM (also a slow CAM job's result): a :class:`CamOut`."""
    return {
        "model": outcome.loaded.name,
        "weights": outcome.loaded.weights_status,
        "untrained": outcome.loaded.untrained,
        "method": outcome.method.key,
        "method_name": outcome.method.name,
        "target": outcome.target,
        "label": outcome.target_label,
        "target_probability": outcome.target_probability,
        "target_logit": outcome.target_logit,
        "score": "logit",
        "layer": outcome.layer,
        "default_layer": outcome.default_layer,
        "call": outcome.call,
        "calls": outcome.calls,
        "activation_shape": list(outcome.activation_shape),
        "shape": list(picture.values.shape),
        "min": float(picture.values.min()),
        "max": float(picture.values.max()),
        "raw_min": float(outcome.raw.min()),
        "raw_max": float(outcome.raw.max()),
        "normalise": picture.normalise,
        "resolution": picture.resolution,
        "input_size": list(outcome.prepared.tensor.shape[2:]),
        "predictions": [p.__dict__ for p in outcome.predictions],
        "seconds": outcome.seconds,
    }


def compare_summary(outcome: svc.CompareOutcome, cmap: str = svc.DEFAULT_CMAP) -> dict[str, Any]:
    """The JSON description of a comparison (also a comparison job's result): a :class:`CompareOut`.

    The protocol and its tie-break are named: the numbers depend on them.
    """
    random_row = outcome.rows[-1]
    methods = []
    for row in outcome.rows:
        methods.append(
            {
                "method": row.method.key,
                "name": row.method.name,
                "kind": row.method.kind,
                "shape": list(row.raw.shape),
                "raw_min": float(row.raw.min()),
                "raw_max": float(row.raw.max()),
                "deletion_auc": row.scores.deletion_auc,
                "insertion_auc": row.scores.insertion_auc,
                "beats_random_deletion": row.scores.deletion_auc < random_row.scores.deletion_auc,
                "beats_random_insertion": row.scores.insertion_auc > random_row.scores.insertion_auc,
                "deletion_curve": [float(v) for v in row.scores.deletion],
                "insertion_curve": [float(v) for v in row.scores.insertion],
            }
        )
    first = outcome.rows[0].scores
    return {
        "model": outcome.loaded.name,
        "weights": outcome.loaded.weights_status,
        "untrained": outcome.loaded.untrained,
        "target": outcome.target,
        "label": outcome.target_label,
        "target_probability": outcome.target_probability,
        "layer": outcome.layer,
        "default_layer": outcome.default_layer,
        "scale": {"min": 0.0, "max": 1.0, "cmap": cmap, "note": "each map min-max normalised to [0, 1]"},
        "protocol": first.protocol,
        "protocol_note": faithfulness.PROTOCOLS[first.protocol],
        "tie_break": first.tie_break,
        "score": "probability",
        "step_pixels": first.step_pixels,
        "fractions": [float(f) for f in first.fractions],
        "steps": outcome.steps,
        "methods": methods[:-1],
        "random": methods[-1],
        "predictions": [p.__dict__ for p in outcome.predictions],
        "notes": outcome.notes,
        "seconds": outcome.seconds,
    }


def patch_out(res: svc.PatchOutcome) -> PatchOut:
    return PatchOut(
        model=res.loaded.name,
        box=list(res.box),
        window=res.window,
        target=res.target,
        label=res.target_label,
        score=res.score,
        target_before=res.target_before,
        target_after=res.target_after,
        probability_before=res.probability_before,
        probability_after=res.probability_after,
        before=[PredictionOut(**p.__dict__) for p in res.before],
        after=[PredictionOut(**p.__dict__) for p in res.after],
    )
