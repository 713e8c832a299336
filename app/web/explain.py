"""HTML pages for explanations: /explain (CAM family), /occlusion (job + click-to-hide), /compare."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from app.core.explanation import cam, occlusion
from app.core.imaging.rendering import colorize, encode_png, overlay, png_data_uri, resize_to
from app.deps import ClientDep, ImageStoreDep, IsHtmx, JobsDep, RegistryDep
from app.errors import Busy, ConvScopeError, InvalidInput, OverLimit
from app.services import explain
from app.services.jobs import Job
from app.services.models import LoadedModel, ModelRegistry
from app.web.templating import render

router = APIRouter()

_TARGET_RE = re.compile(r"^\s*#?(\d+)")


def _uri(img: np.ndarray) -> str:
    return png_data_uri(encode_png(img))


def parse_target(loaded: LoadedModel, text: str | None) -> int | None:
    """A class from what was typed: "285", "285 · Egyptian cat" (the datalist form) or an exact label."""
    if text is None or not text.strip():
        return None
    match = _TARGET_RE.match(text)
    if match:
        return explain.check_target(loaded, int(match.group(1)))
    wanted = text.strip().lower()
    for i, label in enumerate(loaded.categories):
        if label.lower() == wanted:
            return i
    raise InvalidInput(f"No class named {text.strip()!r}; pick one from the list.", field="target")


def _base_context(
    registry: ModelRegistry, store: Any, image_id: str | None, model: str, weights: str
) -> dict[str, Any]:
    return {
        "images": store.list_images(),
        "specs": registry.list_specs(),
        "image_id": image_id,
        "model": model,
        "weights": weights,
    }


# Refusals shown where the result would be (the form and its choices stay on the page).
_FORM_ERRORS = (InvalidInput, OverLimit, Busy)


def _form_error(context: dict[str, Any], exc: ConvScopeError) -> tuple[int, dict[str, str]]:
    """Put ``exc`` into the page's error area; (status, headers) to answer with (Busy's Retry-After)."""
    context["form_error"] = exc.to_dict()["error"]
    return exc.status_code, exc.headers


def _with_headers(response: HTMLResponse, headers: dict[str, str]) -> HTMLResponse:
    response.headers.update(headers)
    return response


def _layer_context(loaded: LoadedModel, layer: str | None, x: torch.Tensor | None = None) -> dict[str, Any]:
    if x is None:
        x = torch.zeros(1, loaded.in_channels, *loaded.input_size)
    layers, default = explain.layer_choices(loaded, x)
    names = {info.name for info in layers}
    chosen = layer if layer in names else default
    note = None
    if layer and layer not in names:
        note = f"{layer!r} is not a layer of {loaded.display_name}; using the default {default!r}."
    return {
        "layers": layers,
        "layer": chosen,
        "default_layer": default,
        "why_layer": cam.WHY_LAST_CONV,
        "layer_note": note,
        "cam_unsupported": explain.cam_unsupported(loaded),
    }


# ---------------------------------------------------------------------------------------------------------
# /explain
# ---------------------------------------------------------------------------------------------------------


def _cam_context(outcome: explain.CamOutcome, pic: explain.CamPicture) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "picture": pic,
        "loaded": outcome.loaded,
        "overlay_uri": _uri(pic.overlay),
        "heatmap_uri": _uri(pic.heatmap),
        "input_uri": _uri(outcome.prepared.shown),
    }


@router.get("/explain", response_class=HTMLResponse)
def explain_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    htmx: IsHtmx,
    client: ClientDep,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    method: str = "gradcam",
    target: str | None = None,
    layer: str | None = None,
    opacity: float = Query(default=0.5, ge=0.0, le=1.0),
    cmap: str = explain.DEFAULT_CMAP,
    normalise: explain.Normalise = "normalised",
    resolution: explain.Resolution = "input",
    k: int = Query(default=5, ge=1, le=20),
) -> HTMLResponse:
    model = model or registry.default_model()
    loaded = registry.get(model, weights)
    explain.check_method(method)
    explain.check_cmap(cmap)
    context: dict[str, Any] = {
        "loaded": loaded,
        "method": method,
        "methods": list(cam.METHODS.values()),
        "target_text": target or "",
        "opacity": opacity,
        "cmap": cmap,
        "cmaps": explain.CAM_COLORMAPS,
        "normalise": normalise,
        "resolution": resolution,
        "k": k,
        "image_id": image_id,
    }
    context.update(_layer_context(loaded, layer))
    status = 200
    headers: dict[str, str] = {}
    try:
        if image_id and not context["cam_unsupported"]:
            image = store.load(image_id)
            tgt = parse_target(loaded, target)
            picture: dict[str, Any] = {
                "opacity": opacity,
                "cmap": cmap,
                "normalise": normalise,
                "resolution": resolution,
            }
            if explain.needs_job([method]):
                job = explain.submit_cam_job(
                    jobs, loaded, image, method, tgt, context["layer"], k, picture, client
                )
                context.update(_job_context(job, "explain", request.url.query))
            else:
                outcome = explain.explain_cam(loaded, image, method, tgt, context["layer"], k)
                context.update(
                    _cam_context(outcome, explain.cam_picture(outcome.raw, outcome.prepared.shown, **picture))
                )
    except _FORM_ERRORS as exc:
        # Shown where the map would be, so that the layer picker (and the choice made in it) stays.
        status, headers = _form_error(context, exc)
    if htmx:
        return _with_headers(render(request, "partials/explain_body.html", context, status), headers)
    context.update(_base_context(registry, store, image_id, model, weights))
    return _with_headers(render(request, "pages/explain.html", context, status), headers)


def _job_context(job: Job, page: str, query: str = "") -> dict[str, Any]:
    suffix = f"?{query}" if query else ""
    return {
        "job": job,
        "poll_url": f"/{page}/job/{job.id}{suffix}",
        "cancel_url": f"/{page}/job/{job.id}/cancel{suffix}",
        "job_page": page,
    }


@router.get("/explain/job/{job_id}", response_class=HTMLResponse)
def explain_job(
    request: Request,
    job_id: str,
    jobs: JobsDep,
    registry: RegistryDep,
    opacity: float = Query(default=0.5, ge=0.0, le=1.0),
    cmap: str = explain.DEFAULT_CMAP,
    normalise: explain.Normalise = "normalised",
    resolution: explain.Resolution = "input",
) -> HTMLResponse:
    """The progress of a slow CAM (polled every 500 ms), or its result once done."""
    job = jobs.get(job_id)
    context = _job_context(job, "explain", request.url.query)
    if job.status == "done" and job.result is not None:
        res = job.result
        loaded = registry.get(res["model"], res["weights"])
        pic = explain.cam_picture(
            job.artifacts["map"], job.artifacts["shown"], opacity, cmap, normalise, resolution
        )
        context.update(
            {
                "result": res,
                "loaded": loaded,
                "picture": pic,
                "overlay_uri": _uri(pic.overlay),
                "heatmap_uri": _uri(pic.heatmap),
                "input_uri": _uri(job.artifacts["shown"]),
            }
        )
        return render(request, "partials/explain_job_result.html", context)
    return render(request, "partials/explain_job.html", context)


@router.post("/explain/job/{job_id}/cancel", response_class=HTMLResponse)
@router.post("/occlusion/job/{job_id}/cancel", response_class=HTMLResponse)
@router.post("/compare/job/{job_id}/cancel", response_class=HTMLResponse)
def cancel_job(request: Request, job_id: str, jobs: JobsDep) -> HTMLResponse:
    job = jobs.cancel(job_id)
    page = request.url.path.split("/")[1]
    return render(request, "partials/explain_job.html", _job_context(job, page, request.url.query))


# ---------------------------------------------------------------------------------------------------------
# /occlusion
# ---------------------------------------------------------------------------------------------------------


@router.get("/occlusion", response_class=HTMLResponse)
def occlusion_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    htmx: IsHtmx,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    target: str | None = None,
    window: int | None = Query(default=None, ge=1, le=1024),
    stride: int | None = Query(default=None, ge=1, le=1024),
    baseline: str = "zeros",
    progressive: bool = True,
    k: int = Query(default=5, ge=1, le=20),
) -> HTMLResponse:
    model = model or registry.default_model()
    loaded = registry.get(model, weights)
    d_window, d_stride = explain.occlusion_defaults(loaded.input_size)
    context: dict[str, Any] = {
        "time_limit": jobs.max_seconds,
        "loaded": loaded,
        "target_text": target or "",
        "window": window or d_window,
        "stride": stride or (max(1, window // 2) if window else d_stride),
        "baseline": baseline,
        "baselines": occlusion.BASELINES,
        "baseline_notes": occlusion.BASELINE_NOTES,
        "progressive": progressive,
        "k": k,
        "image_id": image_id,
    }
    try:
        window_used, stride_used = explain.check_occlusion(
            loaded, explain.OcclusionSettings(window=window, stride=stride, baseline=baseline, k=k)
        )
        context["estimate"] = explain.estimate_occlusion(
            jobs,
            loaded.display_name,
            loaded.input_size,
            explain.forward_macs(loaded),
            window_used,
            stride_used,
        )
    except InvalidInput as exc:
        context["form_error"] = exc.to_dict()["error"]
    if image_id:
        image = store.load(image_id)
        prepared = loaded.prepare(image)
        probs = explain.class_probabilities(loaded, prepared.tensor)
        explain.check_finite(loaded, "class probabilities", probs)
        context.update(
            {
                "input_uri": _uri(prepared.shown),
                "input_size": loaded.input_size,
                "predictions": explain.predictions_from(loaded, probs, k),
            }
        )
    if htmx:
        return render(request, "partials/occlusion_input.html", context)
    context.update(_base_context(registry, store, image_id, model, weights))
    return render(request, "pages/occlusion.html", context)


@router.post("/occlusion/run", response_class=HTMLResponse)
async def occlusion_run(
    request: Request, store: ImageStoreDep, registry: RegistryDep, jobs: JobsDep, client: ClientDep
) -> HTMLResponse:
    """Start the occlusion job from the page's form; answers with the polling progress partial.

    A refusal (over the time limit, with the estimate; or a full queue) is an error partial in the job area.
    """
    form = await request.form()

    def get(name: str, default: str = "") -> str:
        value = form.get(name, default)
        return value if isinstance(value, str) else default

    def as_int(name: str) -> int | None:
        text = get(name).strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError as exc:
            raise InvalidInput(f"{name} must be a whole number.", field=name) from exc

    image_id = get("image_id")
    if not image_id:
        raise InvalidInput("Pick an image first.", field="image_id")
    model, weights = get("model") or registry.default_model(), get("weights", "auto")
    settings = explain.OcclusionSettings(
        window=as_int("window"),
        stride=as_int("stride"),
        baseline=get("baseline", "zeros"),
        progressive=get("progressive") in ("on", "true", "1"),
        k=as_int("k") or 5,
    )
    # Pressing Run again (or resending the form) while this run is going follows the running job.
    key = explain.occlusion_key(model, weights, image_id, settings, get("target"))
    # Estimate and admit first, in a worker thread (it may trace or load the model): no heavy work on the loop.
    estimate = await run_in_threadpool(
        explain.plan_occlusion, jobs, registry, model, weights, settings, client, key
    )

    def start() -> Job:
        loaded = registry.get(model, weights)
        settings.target = parse_target(loaded, get("target"))
        return explain.submit_occlusion(jobs, loaded, store.load(image_id), settings, client, estimate, key)

    job = await run_in_threadpool(start)
    return render(request, "partials/explain_job.html", _job_context(job, "occlusion"))


@router.get("/occlusion/job/{job_id}", response_class=HTMLResponse)
def occlusion_job(request: Request, job_id: str, jobs: JobsDep, registry: RegistryDep) -> HTMLResponse:
    """Progress (with the coarse map so far in progressive mode) or the final map; polled every 500 ms."""
    job = jobs.get(job_id)
    context = _job_context(job, "occlusion")
    shown = job.artifacts.get("shown")
    if job.status == "done" and job.result is not None and shown is not None:
        heat, over, vmin, vmax = explain.occlusion_picture(job.artifacts["map"], shown)
        context.update(
            {
                "result": job.result,
                "loaded": registry.get(job.result["model"], job.result["weights"]),
                "heatmap_uri": _uri(heat),
                "overlay_uri": _uri(over),
                "vmin": vmin,
                "vmax": vmax,
            }
        )
        return render(request, "partials/occlusion_result.html", context)
    partial = job.artifacts.get("partial")
    # A job stopped by the time limit keeps its coarse map: shown with the error.
    if partial is not None and shown is not None and job.status in ("queued", "running", "failed"):
        heat, over, vmin, vmax = explain.occlusion_picture(partial, shown)
        context.update({"partial_uri": _uri(over), "vmin": vmin, "vmax": vmax})
    return render(request, "partials/explain_job.html", context)


@router.get("/occlusion/patch", response_class=HTMLResponse)
def occlusion_patch(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    image_id: str,
    y: int,
    x: int,
    model: str | None = None,
    weights: str = "auto",
    window: int | None = Query(default=None, ge=1, le=1024),
    baseline: str = "zeros",
    target: str | None = None,
    k: int = Query(default=5, ge=1, le=20),
) -> HTMLResponse:
    """Hide one square where the image was clicked and show the new top-k beside the old."""
    loaded = registry.get(model or registry.default_model(), weights)
    res = explain.hide_patch(
        loaded, store.load(image_id), y, x, window, baseline, parse_target(loaded, target), k
    )
    return render(
        request,
        "partials/occlusion_patch.html",
        {"res": res, "hidden_uri": _uri(res.hidden), "loaded": loaded},
    )


# ---------------------------------------------------------------------------------------------------------
# /compare
# ---------------------------------------------------------------------------------------------------------


def _compare_context(
    summary: dict[str, Any], shown: np.ndarray, maps: dict[str, np.ndarray], cmap: str
) -> dict[str, Any]:
    """Tiles on ONE scale: every map is min-max normalised to [0, 1] and coloured with limits 0..1."""
    size = (int(shown.shape[0]), int(shown.shape[1]))
    tiles = []
    for entry in [*summary["methods"], summary["random"]]:
        rgb = resize_to(colorize(maps[entry["method"]], cmap, 0.0, 1.0), size, smooth=False)
        tiles.append({**entry, "overlay_uri": _uri(overlay(shown, rgb, 0.55)), "heatmap_uri": _uri(rgb)})
    return {"summary": summary, "tiles": tiles, "cmap": cmap, "input_uri": _uri(shown)}


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    htmx: IsHtmx,
    client: ClientDep,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    methods: list[str] = Query(default=list(explain.DEFAULT_COMPARE)),
    target: str | None = None,
    layer: str | None = None,
    steps: int = Query(default=16, ge=4, le=100),
    cmap: str = explain.DEFAULT_CMAP,
) -> HTMLResponse:
    model = model or registry.default_model()
    loaded = registry.get(model, weights)
    explain.check_cmap(cmap)
    chosen = explain.check_compare_methods(methods)
    context: dict[str, Any] = {
        "loaded": loaded,
        "all_methods": [m for m in cam.METHODS.values() if m.key != "random"],
        "chosen": chosen,
        "target_text": target or "",
        "steps": steps,
        "cmap": cmap,
        "cmaps": explain.CAM_COLORMAPS,
        "image_id": image_id,
    }
    context.update(_layer_context(loaded, layer))
    status = 200
    headers: dict[str, str] = {}
    try:
        if image_id and not context["cam_unsupported"]:
            image = store.load(image_id)
            tgt = parse_target(loaded, target)
            if explain.compare_needs_job(jobs, loaded, image, chosen, context["layer"], steps):
                job = explain.submit_compare_job(
                    jobs, loaded, image, chosen, tgt, context["layer"], steps, 5, cmap, client
                )
                context.update(_job_context(job, "compare", request.url.query))
            else:
                outcome = explain.compare_methods(
                    loaded, image, chosen, tgt, context["layer"], steps, limits=jobs
                )
                maps = {row.method.key: row.normalised for row in outcome.rows}
                context.update(
                    _compare_context(
                        explain.compare_summary(outcome, cmap), outcome.prepared.shown, maps, cmap
                    )
                )
    except _FORM_ERRORS as exc:
        status, headers = _form_error(context, exc)
    if htmx:
        return _with_headers(render(request, "partials/compare_body.html", context, status), headers)
    context.update(_base_context(registry, store, image_id, model, weights))
    return _with_headers(render(request, "pages/compare.html", context, status), headers)


@router.get("/compare/job/{job_id}", response_class=HTMLResponse)
def compare_job(
    request: Request, job_id: str, jobs: JobsDep, cmap: str = explain.DEFAULT_CMAP
) -> HTMLResponse:
    job = jobs.get(job_id)
    context = _job_context(job, "compare", request.url.query)
    if job.status == "done" and job.result is not None:
        explain.check_cmap(cmap)
        maps = {name.split(":", 1)[1]: arr for name, arr in job.artifacts.items() if name.startswith("map:")}
        context.update(_compare_context(job.result, job.artifacts["shown"], maps, cmap))
        return render(request, "partials/compare_result.html", context)
    return render(request, "partials/explain_job.html", context)
