"""Explanations: CAM maps, occlusion sensitivity (as a job), one-patch hiding, and method comparison.

Shared by the HTML pages (app/web/explain.py) and the JSON API (app/api/explain.py). Core maths lives in
app/core/explanation/cam.py, occlusion.py and faithfulness.py; this module turns requests into those calls, holds
the model's lock while hooks are registered, runs slow work as jobs, and turns arrays into pictures with
app/core/imaging/rendering.py.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

import numpy as np
import torch
from cachetools import LRUCache
from numpy.typing import NDArray

from app.config import get_settings
from app.core.explanation import cam, faithfulness, occlusion
from app.core.imaging.preprocess import PreparedInput, topk
from app.core.imaging.rendering import (
    SEQUENTIAL_COLORMAPS,
    colorize,
    overlay,
    resize_to,
    signed_limits,
)
from app.core.models import work_cost as job_cost
from app.core.models import zoo
from app.core.models.hooks import CallNotFound, resolve_call
from app.errors import InvalidInput
from app.services.jobs import Job, JobContext, JobEstimate, JobManager, array_digest, job_key
from app.services.models import LoadedModel, ModelRegistry

Normalise = Literal["raw", "normalised"]
Resolution = Literal["feature", "input"]

CAM_COLORMAPS: tuple[str, ...] = tuple(c for c in SEQUENTIAL_COLORMAPS if c != "gray")
DEFAULT_CMAP = "viridis"
FAST_METHODS: tuple[str, ...] = tuple(k for k, m in cam.METHODS.items() if not m.slow)
SLOW_METHODS: tuple[str, ...] = tuple(k for k, m in cam.METHODS.items() if m.slow)
DEFAULT_COMPARE: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")
MAX_K = 20
# One default for the ConvScope protocol's curve steps, page and API alike: 16 slices cost 2 x 17 forwards per map
# (7 maps: 238), against 350 at 24, and the curves of a 224-px image change by a sixteenth of the pixels a step.
# The default protocol (RISE) fixes its own steps (224 px a step at 224x224) and ignores this.
DEFAULT_STEPS = 16
Score = Literal["logit", "probability"]
# A top-1 probability at or above this is saturated: hiding a patch barely moves it (the nodule CNN sits at
# p = 1.000, largest occlusion drop 0.015), so explanations follow the logit unless asked otherwise.
SATURATED = occlusion.SATURATED
SCORE_NOTES: dict[str, str] = {
    "logit": "the class's logit (its score before softmax)",
    "probability": "the class's softmax probability",
}
Summarise = Callable[..., dict[str, Any]]


def resolve_score(score: str | None, top_probability: float) -> Score:
    """The score to explain: as asked, or (None/"auto") the logit when the top-1 probability is saturated."""
    if score in ("logit", "probability"):
        return score  # type: ignore[return-value]
    if score not in (None, "", "auto"):
        raise InvalidInput(
            f"Unknown score {score!r}. Choose one of: auto, logit, probability.",
            field="score",
            choices=["auto", "logit", "probability"],
        )
    return "logit" if top_probability >= SATURATED else "probability"


@dataclass
class Predicted:
    index: int
    label: str
    probability: float


@dataclass
class CamOutcome:
    """One CAM for one image: ``raw`` ``(h, w)`` at feature-map resolution, unnormalised, ReLU applied."""

    loaded: LoadedModel
    method: cam.MethodInfo
    raw: NDArray[np.float32]
    target: int
    target_label: str
    target_probability: float
    target_logit: float
    layer: str
    default_layer: str
    activation_shape: tuple[int, int, int]
    predictions: list[Predicted]
    prepared: PreparedInput
    seconds: float
    call: int = 0  # the 0-based call of ``layer`` the map is of (the last unless asked otherwise)
    calls: int = 1  # how many times ``layer`` runs in one forward pass


@dataclass
class CamPicture:
    """What is drawn: ``values`` ``(H, W)`` (feature or input resolution) and its colour limits."""

    values: NDArray[np.float32]
    vmin: float
    vmax: float
    heatmap: NDArray[np.uint8]  # (H', W', 3) colour-mapped values, enlarged to the input size
    overlay: NDArray[np.uint8]  # (H', W', 3) heat map over what the network saw
    cmap: str
    normalise: Normalise
    resolution: Resolution

    @property
    def label(self) -> str:
        if self.normalise == "normalised":
            return "normalised to [0, 1] (min-max of this map)"
        return "raw map value (weighted sum of activations, after ReLU)"


# ---------------------------------------------------------------------------------------------------------
# Choices and validation
# ---------------------------------------------------------------------------------------------------------


def check_method(method: str, field_name: str = "method") -> cam.MethodInfo:
    info = cam.METHODS.get(method)
    if info is None:
        raise InvalidInput(
            f"Unknown method {method!r}. Choose one of: {', '.join(cam.METHODS)}.",
            field=field_name,
            choices=list(cam.METHODS),
        )
    return info


def check_cmap(cmap: str) -> str:
    if cmap not in CAM_COLORMAPS:
        raise InvalidInput(
            f"Unknown colour map {cmap!r}. Choose one of: {', '.join(CAM_COLORMAPS)}.",
            field="cmap",
            choices=list(CAM_COLORMAPS),
        )
    return cmap


def check_target(loaded: LoadedModel, target: int | None) -> int | None:
    n = len(loaded.categories)
    if target is not None and not 0 <= target < n:
        raise InvalidInput(f"target must be a class index from 0 to {n - 1}.", field="target")
    return target


def _check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}.", field="k")
    return k


_layer_cache_lock = threading.Lock()
_LayerKey = tuple[str, str, tuple[int, ...]]
_LayerHit = tuple[weakref.ref[torch.nn.Module], list[cam.LayerInfo], list[cam.LayerInfo], str]


@cache
def _layer_cache() -> LRUCache[_LayerKey, _LayerHit]:
    """(model name, weights, input shape) -> (a weak reference to the module traced, its spatial layers, every
    layer, default layer); at most Settings.explain_layer_cache_entries. The weak reference makes sure a cached
    answer is only used for the very module it was traced on."""
    return LRUCache(maxsize=max(1, get_settings().explain_layer_cache_entries))


def _traced(loaded: LoadedModel, x: torch.Tensor) -> tuple[list[cam.LayerInfo], list[cam.LayerInfo], str]:
    key = (loaded.name, loaded.weights_status, tuple(x.shape))
    cache_ = _layer_cache()
    with _layer_cache_lock:
        hit = cache_.get(key)
        if hit is not None and hit[0]() is loaded.module:
            return hit[1], hit[2], hit[3]
    with loaded.lock:
        layers = cam.trace_layers(loaded.module, x)
        default = cam.default_layer(loaded.module, x)
    # Keep spatial maps only: a (C, 1, 1) output has no "where" to show.
    spatial = [info for info in layers if info.shape[1] * info.shape[2] > 1]
    with _layer_cache_lock:
        cache_[key] = (weakref.ref(loaded.module), spatial, layers, default)
    return spatial, layers, default


def layer_choices(loaded: LoadedModel, x: torch.Tensor) -> tuple[list[cam.LayerInfo], str]:
    """Every layer with a spatial ``(C, h, w)`` output (execution order) and the default CAM layer, cached."""
    spatial, _, default = _traced(loaded, x)
    return spatial, default


def layer_problem(loaded: LoadedModel, x: torch.Tensor, layer: str) -> str:
    """Why ``layer`` cannot be explained: no spatial map (e.g. the classifier: what its output is), or no such
    layer; either way, which layers do have a map."""
    spatial, every, default = _traced(loaded, x)
    names = [info.name for info in spatial]
    shown = ", ".join(names[-8:])
    found = next((info for info in every if info.name == layer), None)
    if found is not None:
        return (
            f"{layer!r} ({found.type}, output {'×'.join(str(d) for d in found.shape)}) has no spatial map: its "
            f'output is one number per channel, so there is no "where" to show. Layers with a spatial map '
            f"end with: {shown} (default: {default})."
        )
    module = dict(loaded.module.named_modules()).get(layer) if layer else None
    if module is not None:
        return (
            f"{layer!r} ({type(module).__name__}) has no spatial map: its output is a flat vector (features or class "
            f'scores), so there is no "where" to show. Layers with a spatial map end with: {shown} '
            f"(default: {default})."
        )
    return (
        f"{layer!r} is not a layer of {loaded.display_name}. Layers with a spatial map end with: {shown} "
        f"(default: {default})."
    )


def cam_unsupported(loaded: LoadedModel) -> str | None:
    """Why class activation maps make no sense for this model, or None when they do.

    A plain vision transformer (ViT) has one spatial map, its patch embedding, and every attention block
    after it mixes all patches: a CAM there weighs the input patches, not what the classifier used.
    """
    if any(isinstance(m, torch.nn.MultiheadAttention) for m in loaded.module.modules()):
        return (
            f"{loaded.display_name} is a vision transformer: after its patch embedding it has no spatial "
            "feature map (attention mixes all patches), so class activation maps do not apply. "
            "Occlusion sensitivity works for any classifier."
        )
    return None


def check_cam_supported(loaded: LoadedModel) -> None:
    """InvalidInput (field ``model``) when class activation maps make no sense for ``loaded``."""
    reason = cam_unsupported(loaded)
    if reason is not None:
        raise InvalidInput(reason, field="model")


def resolve_layer(loaded: LoadedModel, x: torch.Tensor, layer: str | None) -> tuple[str, str]:
    """(the layer to use, the default layer); InvalidInput listing the choices for a bad name."""
    check_cam_supported(loaded)
    layers, default = layer_choices(loaded, x)
    if not layer:
        return default, default
    names = [info.name for info in layers]
    if layer not in names:
        raise InvalidInput(layer_problem(loaded, x, layer), field="layer", choices=names)
    return layer, default


def predictions_from(loaded: LoadedModel, probs: NDArray[np.floating], k: int) -> list[Predicted]:
    """Top-k of a ``(K,)`` probability vector, with labels."""
    logits = torch.from_numpy(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None)))
    return [Predicted(i, label, p) for i, label, p in topk(logits, loaded.categories, k)]


def _label(loaded: LoadedModel, index: int) -> str:
    return loaded.categories[index] if index < len(loaded.categories) else str(index)


def check_finite(loaded: LoadedModel, what: str, *arrays: NDArray[np.floating] | float) -> None:
    """InvalidInput (422, field ``model``) when a result holds inf or NaN: JSON cannot carry them, and such a
    map means nothing. Happens with weights so large that float32 overflows (e.g. an uploaded 3e38)."""
    for arr in arrays:
        if not np.isfinite(np.asarray(arr, dtype=np.float64)).all():
            raise InvalidInput(
                f"{loaded.display_name} gives values that are not finite numbers (inf or NaN) in its {what}: "
                "its weights or activations overflow 32-bit floats, so there is nothing to show. Try another "
                "model, or upload weights of a sensible size.",
                field="model",
                model=loaded.name,
            )


# ---------------------------------------------------------------------------------------------------------
# Cost: forward MACs of each model (computed once), estimates of every kind of job
# ---------------------------------------------------------------------------------------------------------

_macs_lock = threading.Lock()


@cache
def _macs_cache() -> LRUCache[tuple[str, tuple[int, int, int]], int]:
    """(model name, (C, H, W)) -> MACs of one forward of one image, at most Settings.explain_macs_cache_entries.
    Names are unique (uploads are content ids)."""
    return LRUCache(maxsize=max(1, get_settings().explain_macs_cache_entries))


def _remember_macs(key: tuple[str, tuple[int, int, int]], macs: int) -> int:
    with _macs_lock:
        _macs_cache()[key] = macs
    return macs


def _published(spec: zoo.ModelSpec, macs: int) -> int:
    # torchvision's own figure (meta "_ops", GMACs despite its name): layer_tree's MACs agree with it within
    # 0.2 % (tests/core/models/test_macs_reference.py), attention included; the larger is taken all the same.
    return max(macs, int((spec.gflops or 0.0) * 1e9))


def forward_macs(loaded: LoadedModel) -> int:
    """MACs of one forward of one input of ``loaded`` at its input size; traced once per model."""
    shape = (loaded.in_channels, *loaded.input_size)
    key = (loaded.name, shape)
    with _macs_lock:
        hit = _macs_cache().get(key)
    if hit is not None:
        return hit
    with loaded.lock:
        macs = job_cost.model_macs(loaded.module, shape)
    return _remember_macs(key, _published(loaded.spec, macs))


def planned_forward_macs(registry: ModelRegistry, model: str, weights: str) -> tuple[zoo.ModelSpec, int]:
    """(spec, forward MACs) of a model without loading it when possible: torchvision architectures are
    traced on the meta device (nothing allocated); others (small built-ins, uploads bounded at upload,
    RegNet) are loaded as the job would load them anyway."""
    spec = registry.spec(model)
    assert spec.preprocessing is not None
    shape = (spec.preprocessing.in_channels, *spec.input_size)
    key = (spec.name, shape)
    with _macs_lock:
        hit = _macs_cache().get(key)
    if hit is not None:
        return spec, hit
    macs = None
    if spec.source == "torchvision":
        macs = job_cost.meta_macs(lambda: zoo.build_torchvision(spec.name, pretrained=False), shape)
    if macs is None:
        return spec, forward_macs(registry.get(model, weights))
    return spec, _remember_macs(key, _published(spec, macs))


# ---------------------------------------------------------------------------------------------------------
# CAM
# ---------------------------------------------------------------------------------------------------------


def explain_cam(
    loaded: LoadedModel,
    image: NDArray[np.floating],
    method: str = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    k: int = 5,
    ctx: JobContext | None = None,
    *,
    call: int | None = None,
) -> CamOutcome:
    """One CAM of ``image`` ``(H, W)`` or ``(H, W, 3)`` in [0, 1]. Slow methods report to ``ctx``, in batches
    of the size its estimate chose (so that cancellation and the time limit act within about a second).
    ``call``: which run of a layer that runs several times (0-based, negative from the end; None: the last)."""
    info = check_method(method)
    check_target(loaded, target)
    _check_k(k)
    prepared = loaded.prepare(image)
    x = prepared.tensor
    layer_name, default = resolve_layer(loaded, x, layer)
    t0 = time.perf_counter()
    try:
        res = cam.compute_cams(
            loaded.module,
            x,
            [method],
            layer_name,
            target,
            progress=(lambda f: ctx.report(f)) if ctx is not None else None,
            check=ctx.check_cancelled if ctx is not None else None,
            lock=loaded.lock,
            batch_size=(ctx.batch_size if ctx is not None else None) or 32,
            call=call,
        )
    except CallNotFound as exc:
        raise InvalidInput(str(exc), field="call") from exc
    probs = res.probabilities[0]
    check_finite(loaded, f"{info.name} map or class scores", res.maps[method][0], probs)
    tgt = res.targets[0]
    shape = res.activation_shape
    return CamOutcome(
        loaded=loaded,
        method=info,
        raw=res.maps[method][0],
        target=tgt,
        target_label=_label(loaded, tgt),
        target_probability=float(probs[tgt]),
        target_logit=float(res.logits[0][tgt]),
        layer=layer_name,
        default_layer=default,
        activation_shape=(int(shape[1]), int(shape[2]), int(shape[3])),
        predictions=predictions_from(loaded, probs, k),
        prepared=prepared,
        seconds=time.perf_counter() - t0,
        call=res.call,
        calls=res.calls,
    )


def cam_picture(
    raw: NDArray[np.floating],
    shown: NDArray[np.uint8],
    opacity: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    normalise: Normalise = "normalised",
    resolution: Resolution = "input",
) -> CamPicture:
    """Colour a raw ``(h, w)`` map over ``shown`` ``(H, W, 3)``.

    ``resolution="feature"`` keeps the map's own grid (drawn as blocks); ``"input"`` upsamples it
    bilinearly to the input size first. ``normalise="normalised"`` min-max scales to [0, 1]; ``"raw"``
    keeps the values, coloured from 0 to the map's maximum.
    """
    check_cmap(cmap)
    if not 0.0 <= opacity <= 1.0:
        raise InvalidInput("opacity must be between 0 and 1.", field="opacity")
    size = (int(shown.shape[0]), int(shown.shape[1]))
    values = np.asarray(raw, dtype=np.float32)
    if resolution == "input":
        values = cam.upsample(values, size)
    if normalise == "normalised":
        values = cam.normalise(values)
        vmin, vmax = 0.0, 1.0
    else:
        vmin = min(0.0, float(values.min()))
        vmax = float(values.max())
        if vmax <= vmin:
            vmax = vmin + 1.0
    heat = colorize(values, cmap, vmin, vmax)
    # Feature-resolution maps are enlarged with visible blocks (a 7x7 map stays 7x7 squares).
    heat_big = resize_to(heat, size, smooth=False)
    return CamPicture(
        values=values,
        vmin=vmin,
        vmax=vmax,
        heatmap=heat_big,
        overlay=overlay(shown, heat_big, opacity),
        cmap=cmap,
        normalise=normalise,
        resolution=resolution,
    )


def submit_cam_job(
    jobs: JobManager,
    loaded: LoadedModel,
    image: NDArray[np.floating],
    method: str,
    target: int | None,
    layer: str | None,
    k: int,
    picture: dict[str, Any],
    summarise: Summarise,
    client: str = "local",
    *,
    call: int | None = None,
) -> Job:
    """A slow CAM (Score-CAM, Ablation-CAM) as a job. Artifacts: ``map`` (raw) and ``values`` (drawn).

    ``summarise(outcome, picture)`` shapes the job's JSON result (app/schemas/explain.py: shaping is not a use case).

    OverLimit when its estimate is past the job time limit, Busy when the queue is full.
    """
    info = check_method(method)
    check_target(loaded, target)
    check_cmap(str(picture.get("cmap", DEFAULT_CMAP)))
    # Validate the layer now, so a bad name is a 422 instead of a failed job.
    prepared = loaded.prepare(image)
    x = prepared.tensor
    layer_name, _ = resolve_layer(loaded, x, layer)
    channels = _channels(loaded, x, layer_name, call)
    estimate = jobs.estimate(
        "cam",
        job_cost.cam_forwards([method], channels, cam.GRADIENT_METHODS),
        forward_macs(loaded),
        what=f"{info.name} of {loaded.display_name} at {layer_name} ({channels} channels)",
        hint="An earlier layer has fewer channels (one forward pass each); Grad-CAM needs a single pass.",
        field="layer",
        channels=channels,
    )

    def run(ctx: JobContext) -> dict[str, Any]:
        outcome = explain_cam(loaded, image, method, target, layer, k, ctx=ctx, call=call)
        pic = cam_picture(outcome.raw, outcome.prepared.shown, **picture)
        ctx.artifacts["map"] = outcome.raw
        ctx.artifacts["values"] = pic.values
        ctx.artifacts["shown"] = outcome.prepared.shown
        return summarise(outcome, pic)

    # The same CAM asked again (a reload, a resent request) while it runs follows the running job.
    key = job_key(
        "cam",
        model=loaded.name,
        weights=loaded.weights_status,
        input=array_digest(x, prepared.shown),
        method=info.key,
        target=target,
        layer=layer_name,
        call=call,
        k=k,
        picture=picture,
    )
    return jobs.submit("cam", run, client=client, estimate=estimate, key=key)


def _channels(loaded: LoadedModel, x: torch.Tensor, layer: str, call: int | None = None) -> int:
    """Channels of ``layer``'s output at ``call`` (Score-CAM and Ablation-CAM run one forward per channel)."""
    layers, _ = layer_choices(loaded, x)
    info = next((info for info in layers if info.name == layer), None)
    if info is None:
        return 1
    try:
        shape = info.call_shapes[resolve_call(call, info.calls, layer)] if info.call_shapes else info.shape
    except CallNotFound as exc:
        raise InvalidInput(str(exc), field="call") from exc
    if shape is None:
        raise InvalidInput(f"call {call} of {layer} has no spatial (C, h, w) output.", field="call")
    return int(shape[0])


# ---------------------------------------------------------------------------------------------------------
# Occlusion
# ---------------------------------------------------------------------------------------------------------


@dataclass
class OcclusionSettings:
    target: int | None = None
    window: int | None = None  # default: about a fourteenth of the input side
    stride: int | None = None  # default: half the window
    baseline: str = "zeros"
    progressive: bool = True
    k: int = 5
    score: str | None = (
        None  # "logit", "probability", or None: the logit when the top-1 probability saturates
    )


def occlusion_defaults(input_size: tuple[int, int]) -> tuple[int, int]:
    """(window, stride) giving the lecture's 16 px / 8 px at 224 and the same proportions elsewhere."""
    side = min(input_size)
    window = max(2, round(side * 16 / 224))
    return window, max(1, window // 2)


def occlusion_geometry(input_size: tuple[int, int], settings: OcclusionSettings) -> tuple[int, int]:
    """Validate window/stride/baseline for an input of ``input_size``; the (window, stride) to use."""
    h, w = input_size
    d_window, _ = occlusion_defaults((h, w))
    window = settings.window or d_window
    stride = settings.stride or max(1, window // 2)
    if settings.baseline not in occlusion.BASELINES:
        raise InvalidInput(
            f"Unknown baseline {settings.baseline!r}. Choose one of: {', '.join(occlusion.BASELINES)}.",
            field="baseline",
            choices=list(occlusion.BASELINES),
        )
    if not 1 <= window <= min(h, w):
        raise InvalidInput(f"window must be between 1 and {min(h, w)} px for this model.", field="window")
    if not 1 <= stride <= window:
        raise InvalidInput(f"stride must be between 1 and the window ({window} px).", field="stride")
    _check_k(settings.k)
    resolve_score(settings.score, 0.0)
    n = job_cost.occlusion_windows((h, w), window, stride)
    if n > 40_000:
        raise InvalidInput(f"{n} windows is too many; use a larger stride.", field="stride")
    return window, stride


def check_occlusion(loaded: LoadedModel, settings: OcclusionSettings) -> tuple[int, int]:
    """Validate window/stride/baseline/target for this model; returns the (window, stride) to use."""
    window, stride = occlusion_geometry(loaded.input_size, settings)
    check_target(loaded, settings.target)
    return window, stride


def estimate_occlusion(
    jobs: JobManager,
    display_name: str,
    input_size: tuple[int, int],
    macs: int,
    window: int,
    stride: int,
) -> JobEstimate:
    """Occlusion's cost: one forward per window (+2), with a cheaper window/stride as the hint."""
    windows = job_cost.occlusion_windows(input_size, window, stride)
    hint = ""
    if jobs.max_seconds is not None and macs > 0:
        budget = int(jobs.max_seconds * jobs.macs_per_second // macs)
        cheaper = job_cost.cheaper_occlusion(input_size, window, stride, budget)
        if cheaper is not None:
            seconds = job_cost.occlusion_forwards(input_size, *cheaper) * macs / jobs.macs_per_second
            hint = (
                f"A larger stride or window needs fewer forward passes: window {cheaper[0]} px with stride "
                f"{cheaper[1]} px would take about {seconds:,.0f} s."
            )
        else:
            hint = "Even a single window is too much for this model; pick a smaller model."
    return jobs.estimate(
        "occlusion",
        job_cost.occlusion_forwards(input_size, window, stride),
        macs,
        what=f"Occlusion of {display_name} with {windows:,} windows of {window} px every {stride} px",
        hint=hint,
        field="stride",
        windows=windows,
        window=window,
        stride=stride,
    )


def plan_occlusion(
    jobs: JobManager,
    registry: ModelRegistry,
    model: str,
    weights: str,
    settings: OcclusionSettings,
    client: str = "local",
    key: str | None = None,
) -> JobEstimate:
    """Validate, estimate and admit an occlusion job before the model or the image is loaded.

    InvalidInput for a bad window/stride/baseline, OverLimit past ``max_job_seconds`` (the message has
    the estimate and a window/stride that fits), Busy when the queue is full, unless the client already
    runs the job of this ``key`` (:func:`occlusion_key`; pass the same key to :func:`submit_occlusion`,
    which returns that job). Torchvision models are
    estimated on the meta device, so a refusal costs neither the model's memory nor its build time.
    """
    spec, macs = planned_forward_macs(registry, model, weights)
    window, stride = occlusion_geometry(spec.input_size, settings)
    estimate = estimate_occlusion(jobs, spec.display_name, spec.input_size, macs, window, stride)
    jobs.admit(client, estimate, key)
    return estimate


def occlusion_key(
    model: str, weights: str, image_id: str, settings: OcclusionSettings, target_text: str | None = None
) -> str:
    """The job key of an occlusion run as it was asked for (before the model or the image is loaded, so that
    :func:`plan_occlusion` can let a repeated request through to its running job): model and weights as
    named, the image id, every setting, and the target as typed on the page (``target_text``)."""
    return job_key(
        "occlusion",
        model=model,
        weights=weights,
        image_id=image_id,
        settings=asdict(settings),
        target_text=target_text,
    )


def submit_occlusion(
    jobs: JobManager,
    loaded: LoadedModel,
    image: NDArray[np.floating],
    settings: OcclusionSettings,
    client: str = "local",
    estimate: JobEstimate | None = None,
    key: str | None = None,
) -> Job:
    """Occlusion sensitivity as a job (while the client runs the same one, that job; see ``key``).

    Progress and, in progressive mode, a partial ``{"step", "fraction", "min", "max"}`` with the coarse
    map in the artifact ``partial``; the result names the target and top-k; artifacts ``map`` ``(H, W)``
    (mean probability drop per pixel), ``drops`` ``(ny, nx)`` (per window) and ``shown``.
    Windows are evaluated in batches of about one second of estimated work: cancellation and the time
    limit act between batches. OverLimit past ``max_job_seconds``, Busy when the queue is full.
    ``key`` names the work (:func:`occlusion_key`); without one it is made from the model, the network's
    input and the settings.
    """
    window, stride = check_occlusion(loaded, settings)
    if estimate is None:
        estimate = estimate_occlusion(
            jobs, loaded.display_name, loaded.input_size, forward_macs(loaded), window, stride
        )
    jobs.check_cost(estimate)
    prepared = loaded.prepare(image)

    def run(ctx: JobContext) -> dict[str, Any]:
        t0 = time.perf_counter()
        ctx.artifacts["shown"] = prepared.shown

        def on_partial(part: occlusion.PartialMap) -> None:
            check_finite(loaded, "occlusion map", part.map)
            ctx.artifacts["partial"] = part.map
            ctx.report(
                part.fraction,
                partial={
                    "step": part.step,
                    "fraction": part.fraction,
                    "min": float(part.map.min()),
                    "max": float(part.map.max()),
                    "seconds": time.perf_counter() - t0,
                },
            )

        res = occlusion.occlusion(
            loaded.module,
            prepared.tensor,
            settings.target,
            window=window,
            stride=stride,
            baseline=settings.baseline,
            progressive=settings.progressive,
            batch_size=ctx.batch_size or 16,
            on_partial=on_partial,
            progress=ctx.report,
            check=ctx.check_cancelled,
            lock=loaded.lock,
            score=settings.score or "auto",
        )
        check_finite(loaded, "occlusion map", res.map, res.probability)
        score = res.score
        ctx.artifacts["map"] = res.map
        ctx.artifacts["drops"] = res.drops
        ctx.artifacts.pop("partial", None)
        peak = np.unravel_index(int(res.map.argmax()), res.map.shape)
        probs = class_probabilities(loaded, prepared.tensor)
        check_finite(loaded, "class probabilities", probs)
        return {
            "model": loaded.name,
            "weights": loaded.weights_status,
            "untrained": loaded.untrained,
            "target": res.target,
            "label": _label(loaded, res.target),
            "score": score,
            "score_note": SCORE_NOTES[score],
            "probability": float(probs[res.target]),
            "unoccluded_score": res.probability,
            "window": res.window,
            "stride": res.stride,
            "baseline": res.baseline,
            "progressive": settings.progressive,
            "grid": [len(res.starts_y), len(res.starts_x)],
            "windows": res.evaluated,
            "shape": list(res.map.shape),
            "min": float(res.map.min()),
            "max": float(res.map.max()),
            "peak": [int(peak[0]), int(peak[1])],
            "predictions": [p.__dict__ for p in predictions_from(loaded, probs, settings.k)],
            "seconds": time.perf_counter() - t0,
        }

    if key is None:
        key = job_key(
            "occlusion",
            model=loaded.name,
            weights=loaded.weights_status,
            input=array_digest(prepared.tensor, prepared.shown),
            settings=asdict(settings),
        )
    return jobs.submit("occlusion", run, client=client, estimate=estimate, key=key)


def class_probabilities(loaded: LoadedModel, x: torch.Tensor) -> NDArray[np.float32]:
    """Softmax of one forward: ``(1, C, H, W) -> (K,)``."""
    with loaded.lock, torch.inference_mode():
        return torch.softmax(loaded.module(x).float(), dim=1)[0].numpy()


def occlusion_picture(
    values: NDArray[np.floating], shown: NDArray[np.uint8], opacity: float = 0.6
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], float, float]:
    """(heat map, overlay, vmin, vmax) of a probability-drop map: diverging, centred on zero.

    A positive drop (red) means hiding that region lowered the class probability; blue means hiding it
    made the class MORE likely.
    """
    vmin, vmax = signed_limits(np.asarray(values, dtype=np.float64))
    heat = colorize(values, "rdbu", vmin, vmax)
    size = (int(shown.shape[0]), int(shown.shape[1]))
    heat = resize_to(heat, size, smooth=False)
    return heat, overlay(shown, heat, opacity), vmin, vmax


@dataclass
class PatchOutcome:
    loaded: LoadedModel
    box: tuple[int, int, int, int]
    before: list[Predicted]
    after: list[Predicted]
    target: int
    target_label: str
    target_before: float  # in ``score``
    target_after: float
    hidden: NDArray[np.uint8]  # (H, W, 3) what the network saw with the patch hidden
    score: Score = "probability"
    window: int = 0
    probability_before: float = 0.0
    probability_after: float = 0.0


def hide_patch(
    loaded: LoadedModel,
    image: NDArray[np.floating],
    y: int,
    x: int,
    window: int | None = None,
    baseline: str = "zeros",
    target: int | None = None,
    k: int = 5,
    score: str | None = None,
) -> PatchOutcome:
    """Hide the square centred at (y, x) of the network's input and give the new top-k at once.

    ``window`` defaults to the occlusion map's window (:func:`occlusion_defaults`: 16 px at 224), so that a click
    hides the same square as one window of the map. ``score`` as :func:`resolve_score`."""
    h, w = loaded.input_size
    if not (0 <= y < h and 0 <= x < w):
        raise InvalidInput(
            f"(y, x) must lie inside the {h} x {w} input.", field="y" if not 0 <= y < h else "x"
        )
    win = window or occlusion_defaults((h, w))[0]
    if not 1 <= win <= min(h, w):
        raise InvalidInput(f"window must be between 1 and {min(h, w)} px for this model.", field="window")
    if baseline not in occlusion.BASELINES:
        raise InvalidInput(
            f"Unknown baseline {baseline!r}. Choose one of: {', '.join(occlusion.BASELINES)}.",
            field="baseline",
            choices=list(occlusion.BASELINES),
        )
    check_target(loaded, target)
    _check_k(k)
    resolve_score(score, 0.0)
    prepared = loaded.prepare(image)
    res = occlusion.hide_patch(
        loaded.module, prepared.tensor, y, x, window=win, baseline=baseline, lock=loaded.lock, score="logit"
    )
    check_finite(loaded, "class probabilities", res.before, res.after)
    tgt = int(np.argmax(res.before)) if target is None else target
    chosen_score = resolve_score(score, float(np.max(res.before)))
    assert res.score_before is not None and res.score_after is not None
    before_s = res.before if chosen_score == "probability" else res.score_before
    after_s = res.after if chosen_score == "probability" else res.score_after
    y0, x0, y1, x1 = res.box
    hidden = prepared.shown.copy()
    # Show the hidden square as the network got it: grey hatch over the box.
    hidden[y0:y1, x0:x1] = (0.35 * hidden[y0:y1, x0:x1] + 0.65 * 128).astype(np.uint8)
    return PatchOutcome(
        loaded=loaded,
        box=res.box,
        before=predictions_from(loaded, res.before, k),
        after=predictions_from(loaded, res.after, k),
        target=tgt,
        target_label=_label(loaded, tgt),
        target_before=float(before_s[tgt]),
        target_after=float(after_s[tgt]),
        hidden=hidden,
        score=chosen_score,
        window=win,
        probability_before=float(res.before[tgt]),
        probability_after=float(res.after[tgt]),
    )


# ---------------------------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MethodScore:
    method: cam.MethodInfo
    raw: NDArray[np.float32]  # (h, w)
    normalised: NDArray[np.float32]  # (H, W) upsampled, [0, 1]: the shared scale
    scores: faithfulness.FaithfulnessResult


@dataclass
class CompareOutcome:
    loaded: LoadedModel
    target: int
    target_label: str
    target_probability: float
    layer: str
    default_layer: str
    predictions: list[Predicted]
    prepared: PreparedInput
    rows: list[MethodScore]  # the methods asked for, then the random baseline
    steps: int  # steps of each curve (the protocol's own for RISE)
    protocol: str = faithfulness.DEFAULT_PROTOCOL
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# A comparison notes a map whose pixels are tied this much or more (Eigen-CAM can leave half of them equal).
TIED_NOTE = 0.25


def tied_share(values: NDArray[np.floating]) -> float:
    """The share of pixels whose value another pixel has too: their deletion/insertion order is a tie-break."""
    _, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    return float(counts[counts > 1].sum() / max(1, np.asarray(values).size))


def check_steps(steps: int) -> int:
    if not 4 <= steps <= 100:
        raise InvalidInput("steps must be between 4 and 100.", field="steps")
    return steps


def curve_steps(protocol: str, x: torch.Tensor, steps: int) -> int:
    """Steps of each deletion/insertion curve: the protocol's own for RISE (about 224), ``steps`` otherwise."""
    size = (int(x.shape[2]), int(x.shape[3]))
    return faithfulness.protocol_steps(protocol, size, steps)  # type: ignore[arg-type]


def check_compare_methods(methods: Sequence[str]) -> list[str]:
    chosen = [m for m in dict.fromkeys(methods) if m != "random"]
    for m in chosen:
        check_method(m, "methods")
    if not chosen:
        raise InvalidInput("Pick at least one method to compare.", field="methods", choices=list(cam.METHODS))
    return chosen


def compare_methods(
    loaded: LoadedModel,
    image: NDArray[np.floating],
    methods: Sequence[str] = DEFAULT_COMPARE,
    target: int | None = None,
    layer: str | None = None,
    steps: int = DEFAULT_STEPS,
    k: int = 5,
    ctx: JobContext | None = None,
    limits: JobManager | None = None,
    protocol: faithfulness.Protocol = faithfulness.DEFAULT_PROTOCOL,
) -> CompareOutcome:
    """Several CAMs on one image (one shared hooked pass), each with deletion/insertion AUC, plus random.

    With ``limits`` (run in the request, not as a job) the cost is estimated first and refused past
    ``max_job_seconds`` (OverLimit); in a job ``ctx`` gives the batch size its estimate chose.
    """
    chosen = check_compare_methods(methods)
    check_target(loaded, target)
    _check_k(k)
    check_steps(steps)
    prepared = loaded.prepare(image)
    x = prepared.tensor
    layer_name, default = resolve_layer(loaded, x, layer)
    batch_size = ctx.batch_size if ctx is not None else None
    if limits is not None:
        estimate = estimate_compare(limits, loaded, x, chosen, layer_name, steps, protocol)
        limits.check_cost(estimate)
        batch_size = estimate.batch_size
    t0 = time.perf_counter()
    all_methods = [*chosen, "random"]
    n_slow = sum(1 for m in chosen if m in SLOW_METHODS)
    # Progress budget: slow CAMs first (if any), then the faithfulness curves.
    cam_share = 0.7 if n_slow else 0.2

    def cam_progress(f: float) -> None:
        if ctx is not None:
            ctx.report(cam_share * f)

    res = cam.compute_cams(
        loaded.module,
        x,
        all_methods,
        layer_name,
        target,
        progress=cam_progress,
        check=ctx.check_cancelled if ctx is not None else None,
        lock=loaded.lock,
        batch_size=batch_size or 32,
    )
    check_finite(loaded, "maps or class scores", res.probabilities, *res.maps.values())
    tgt = res.targets[0]
    size = (int(x.shape[2]), int(x.shape[3]))
    # All the maps' curves at once: one blurred image, shared batches, equal images evaluated once.
    all_scores = faithfulness.evaluate_maps(
        loaded.module,
        x,
        {m: res.maps[m][0] for m in all_methods},
        tgt,
        protocol=protocol,
        steps=steps,
        batch_size=batch_size or 33,
        check=ctx.check_cancelled if ctx is not None else None,
        lock=loaded.lock,
        progress=(lambda f: ctx.report(cam_share + (1 - cam_share) * f)) if ctx is not None else None,
    )
    rows = []
    for m in all_methods:
        raw = res.maps[m][0]
        scores = all_scores[m]
        check_finite(loaded, "deletion/insertion curves", scores.deletion, scores.insertion)
        rows.append(MethodScore(cam.METHODS[m], raw, cam.normalise(cam.upsample(raw, size)), scores))
    probs = res.probabilities[0]
    notes = []
    flat = [r.method.name for r in rows if float(r.raw.max()) <= 0.0]
    if flat:
        notes.append(
            f"{', '.join(flat)}: the map is zero everywhere (nothing in this layer pushes the class score up), "
            "so its pixel order is the tie-break's."
        )
    shares = [(r.method.name, tied_share(r.normalised)) for r in rows if r.method.key != "random"]
    tied = [f"{name} {share:.0%}" for name, share in shares if name not in flat and share >= TIED_NOTE]
    if tied:
        notes.append(
            f"Pixels that share their value with another pixel (ReLU zeros, flat regions): {', '.join(tied)}. "
            f"Their order, and so part of the scores, is the protocol's tie-break ({faithfulness.TIE_BREAKS[protocol]})."
        )
    return CompareOutcome(
        loaded=loaded,
        target=tgt,
        target_label=_label(loaded, tgt),
        target_probability=float(probs[tgt]),
        layer=layer_name,
        default_layer=default,
        predictions=predictions_from(loaded, probs, k),
        prepared=prepared,
        rows=rows,
        steps=rows[0].scores.steps,
        protocol=protocol,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def estimate_compare(
    jobs: JobManager,
    loaded: LoadedModel,
    x: torch.Tensor,
    chosen: Sequence[str],
    layer: str,
    steps: int,
    protocol: str = faithfulness.DEFAULT_PROTOCOL,
) -> JobEstimate:
    """A comparison's cost: the CAMs' forwards plus 2 (steps + 1) per map (and the random one) for the curves."""
    channels = _channels(loaded, x, layer)
    maps = len(chosen) + 1
    passes = job_cost.cam_forwards([*chosen, "random"], channels, cam.GRADIENT_METHODS)
    steps = curve_steps(protocol, x, steps)
    passes += job_cost.faithfulness_forwards(maps, steps)
    slow = [m for m in chosen if m in SLOW_METHODS]
    hint = (
        "The RISE protocol takes about 224 steps per curve; the convscope protocol with fewer steps, or fewer "
        "methods, need fewer forward passes"
        if protocol == "rise"
        else "Fewer steps or fewer methods need fewer forward passes"
    )
    hint += f"; {', '.join(slow)} alone need {channels + 1} each at this layer." if slow else "."
    return jobs.estimate(
        "compare",
        passes,
        forward_macs(loaded),
        what=f"Comparing {len(chosen)} methods on {loaded.display_name} at {layer} with {steps} steps",
        hint=hint,
        field="steps",
        methods=len(chosen),
        steps=steps,
        channels=channels,
    )


def submit_compare_job(
    jobs: JobManager,
    loaded: LoadedModel,
    image: NDArray[np.floating],
    methods: Sequence[str],
    target: int | None,
    layer: str | None,
    steps: int,
    k: int,
    summarise: Summarise,
    client: str = "local",
    protocol: faithfulness.Protocol = faithfulness.DEFAULT_PROTOCOL,
) -> Job:
    """A comparison as a job; artifacts ``map:<method>`` ``(H, W)`` in [0, 1] and ``shown``.

    ``summarise(outcome)`` shapes the JSON result. OverLimit when its estimate is past the job time limit, Busy
    when the queue is full.
    """
    chosen = check_compare_methods(methods)
    check_target(loaded, target)
    check_steps(steps)
    prepared = loaded.prepare(image)
    x = prepared.tensor
    layer_name, _ = resolve_layer(loaded, x, layer)
    estimate = estimate_compare(jobs, loaded, x, chosen, layer_name, steps, protocol)
    # The same comparison asked again (a reload, a resent request) while it runs follows the running job.
    key = job_key(
        "compare",
        model=loaded.name,
        weights=loaded.weights_status,
        input=array_digest(x, prepared.shown),
        methods=chosen,
        target=target,
        layer=layer_name,
        steps=steps,
        k=k,
        protocol=protocol,
    )

    def run(ctx: JobContext) -> dict[str, Any]:
        outcome = compare_methods(loaded, image, methods, target, layer, steps, k, ctx=ctx, protocol=protocol)
        for row in outcome.rows:
            ctx.artifacts[f"map:{row.method.key}"] = row.normalised
        ctx.artifacts["shown"] = outcome.prepared.shown
        return summarise(outcome)

    return jobs.submit("compare", run, client=client, estimate=estimate, key=key)


def needs_job(methods: Sequence[str]) -> bool:
    """Whether any of ``methods`` is slow enough to run as a job."""
    return any(m in SLOW_METHODS for m in methods)


def compare_needs_job(
    jobs: JobManager,
    loaded: LoadedModel,
    image: NDArray[np.floating],
    methods: Sequence[str],
    layer: str | None,
    steps: int,
    protocol: str = faithfulness.DEFAULT_PROTOCOL,
) -> bool:
    """Whether a comparison runs as a job: a slow method among ``methods``, or an estimate (CAM forwards plus the
    deletion/insertion curves) past ``jobs.request_seconds``, e.g. 100 steps on VGG-19, which would otherwise hold
    a request thread for a minute with no progress and no way to cancel."""
    chosen = check_compare_methods(methods)
    if needs_job(chosen):
        return True
    if jobs.request_seconds is None or not 4 <= steps <= 100:
        return False  # compare_methods refuses bad steps with the field named
    x = loaded.prepare(image).tensor
    layer_name, _ = resolve_layer(loaded, x, layer)
    seconds = estimate_compare(jobs, loaded, x, chosen, layer_name, steps, protocol).seconds
    return seconds is not None and seconds > jobs.request_seconds
