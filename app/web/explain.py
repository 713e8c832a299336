"""HTML pages for explanations: /explain (CAM family), /occlusion (job + click-to-hide), /compare.

One template per page (templates/pages/explain.html, occlusion.html, compare.html); an HTMX request gets one
named block of it (``body``, ``input``) and a full request the whole page, so every URL that can land in the
address bar renders a page. Job and action URLs (``/.../job/<id>``, ``/occlusion/run``, ``/occlusion/patch``)
are never pushed into history; opened directly they redirect to their page.

Each page validates its query with the feature's request model of app/schemas/explain.py (the one the JSON
route uses). A bad field is reported with its dotted name next to that field; for an HTMX request only that
field's error slot is swapped (HX-Retarget), so the last good result stays on the page.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from app.core.explanation import cam, faithfulness, occlusion
from app.core.imaging.rendering import colorize, overlay, resize_to
from app.deps import ClientDep, FormDep, ImageStoreDep, JobsDep, PicturesDep, RegistryDep, model_name
from app.errors import Busy, ConvScopeError, InvalidInput, OverLimit
from app.schemas.explain import (
    CamQuery,
    CompareQuery,
    OcclusionQuery,
    PatchQuery,
    cam_summary,
    compare_summary,
)
from app.services import explain
from app.services.jobs import Job
from app.services.models import LoadedModel, ModelRegistry
from app.services.pictures import PictureStore
from app.web.templating import render, wants_block

router = APIRouter()

_TARGET_RE = re.compile(r"^\s*#?(\d+)")
Q = TypeVar("Q", bound=BaseModel)

# The fields each page shows an error next to (an error slot `<page>-error-<field>`); others go to `form`.
FIELD_SLOTS: dict[str, tuple[str, ...]] = {
    "explain": ("method", "target", "opacity", "cmap", "normalise", "resolution", "layer", "call"),
    "compare": ("methods", "target", "protocol", "steps", "cmap", "layer"),
    "occlusion": ("target", "window", "stride", "baseline", "score"),
}


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


def _validation_error(exc: ValidationError) -> dict[str, Any]:
    """The first error of a request model, spelt as the JSON routes spell it (dotted pydantic location)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    return {"code": "invalid_input", "message": f"{field}: {first.get('msg')}", "field": field or None}


def parse_query(model: type[Q], data: dict[str, Any]) -> tuple[Q, dict[str, Any] | None]:
    """``model`` from a page's query or form; on a bad field, the model without it (its default) and the error.

    So the page still renders (with the field's default) and says what was wrong next to the field.
    """
    data = {k: v for k, v in data.items() if v not in ("", None, [])}
    error = None
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data), error
        except ValidationError as exc:
            error = error or _validation_error(exc)
            bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
            if not bad & data.keys():
                raise
            data = {k: v for k, v in data.items() if k not in bad}
    raise AssertionError("unreachable")  # pragma: no cover


def _query_data(request: Request, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    params = request.query_params
    return {k: (params.getlist(k) if k in lists else params.get(k)) for k in params}


def _base_context(
    registry: ModelRegistry, store: Any, image_id: str | None, loaded: LoadedModel, weights: str
) -> dict[str, Any]:
    return {
        "images": store.list_images(),
        "specs": registry.list_specs(),
        "image_id": image_id,
        "model": loaded.name,
        "weights": weights,
    }


# Refusals shown next to their field, or where the result would be (the form and its choices stay on the page).
_FORM_ERRORS = (InvalidInput, OverLimit, Busy)


def _slot(page: str, error: dict[str, Any]) -> str:
    field = str(error.get("field") or "")
    top = field.split(".", 1)[0]
    return top if top in FIELD_SLOTS[page] else "form"


def _page(
    request: Request,
    page: str,
    block: str,
    context: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
    full: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The page (``full`` adds what only the whole page needs), or its block for an HTMX swap.

    An HTMX request whose only problem is one field answers with that field's error slot alone (HX-Retarget),
    so the last good result stays; the URL is then not pushed (HX-Push-Url: false).
    """
    error = context.get("form_error")
    context["error_slot"] = _slot(page, error) if error else None
    if wants_block(request):
        if error and error.get("field") and not context.get("keep_body"):
            response = render(request, f"pages/{page}.html", context, status, block="field_error")
            response.headers["HX-Retarget"] = f"#{page}-error-{context['error_slot']}"
            response.headers["HX-Reswap"] = "innerHTML"
            response.headers["HX-Push-Url"] = "false"
        else:
            response = render(request, f"pages/{page}.html", context, status, block=block)
    else:
        context.update(full or {})
        response = render(request, f"pages/{page}.html", context, status)
    response.headers.update(headers or {})
    return response


def _form_error(context: dict[str, Any], exc: ConvScopeError) -> tuple[int, dict[str, str]]:
    """Put ``exc`` into the page's error area; (status, headers) to answer with (Busy's Retry-After)."""
    context["form_error"] = exc.to_dict()["error"]
    return exc.status_code, exc.headers


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def call_choices(info: cam.LayerInfo) -> list[dict[str, Any]]:
    """The calls of a layer that runs more than once, for the call picker: value (0-based), text with the output
    shape of that call ("1st call (first) · 32×112×112", ..., "2nd call (last) · 1280×7×7"); [] for one call."""
    if info.calls <= 1:
        return []
    choices = []
    for i in range(info.calls):
        shape = info.call_shapes[i] if i < len(info.call_shapes) else None
        where = " (first)" if i == 0 else " (last)" if i == info.calls - 1 else ""
        dims = "×".join(str(d) for d in shape) if shape else "no spatial map"
        choices.append(
            {"value": i, "text": f"{_ordinal(i + 1)} call{where} · {dims}", "spatial": shape is not None}
        )
    return choices


def _layer_context(
    loaded: LoadedModel, layer: str | None, x: torch.Tensor | None = None, call: int | None = None
) -> dict[str, Any]:
    """The layer picker: the layers (labelled "(called N times)" when they run more than once), the chosen one,
    and for a layer that runs more than once its calls and the chosen call (0-based; the last when not given)."""
    if x is None:
        x = torch.zeros(1, loaded.in_channels, *loaded.input_size)
    unsupported = explain.cam_unsupported(loaded)
    if unsupported:
        return {"layers": [], "layer": None, "default_layer": None, "why_layer": cam.WHY_LAST_CONV,
                "layer_note": None, "cam_unsupported": unsupported, "calls": [], "call": None}  # fmt: skip
    layers, default = explain.layer_choices(loaded, x)
    by_name = {info.name: info for info in layers}
    chosen = layer if layer in by_name else default
    note = None
    if layer and layer not in by_name:
        note = f"{explain.layer_problem(loaded, x, layer)} Showing the default layer {default!r}."
    info = by_name[chosen]
    chosen_call: int | None = None
    if info.calls > 1:
        chosen_call = info.calls - 1 if call is None else (call + info.calls if call < 0 else call)
    return {
        "layers": layers,
        "layer": chosen,
        "default_layer": default,
        "why_layer": cam.WHY_LAST_CONV,
        "layer_note": note,
        "cam_unsupported": None,
        "calls": call_choices(info),
        "call": chosen_call,
    }


def _job_context(job: Job, page: str, query: str = "") -> dict[str, Any]:
    suffix = f"?{query}" if query else ""
    return {
        "job": job,
        "poll_url": f"/{page}/job/{job.id}{suffix}",
        "cancel_url": f"/{page}/job/{job.id}/cancel{suffix}",
        "job_page": page,
    }


def _to_page(page: str, request: Request, drop: tuple[str, ...] = ()) -> RedirectResponse:
    """A job or action URL opened as a page (reload, bookmark): the page of the same view instead."""
    query = request.url.remove_query_params(list(drop)).query
    return RedirectResponse(f"/{page}" + (f"?{query}" if query else ""), status_code=303)


# ---------------------------------------------------------------------------------------------------------
# /explain
# ---------------------------------------------------------------------------------------------------------


def _cam_pictures(pictures: PictureStore, pic: explain.CamPicture, shown: np.ndarray) -> dict[str, str]:
    return {
        "overlay_uri": pictures.image_url(pic.overlay),
        "heatmap_uri": pictures.image_url(pic.heatmap),
        "input_uri": pictures.image_url(shown),
    }


@router.get("/explain", response_class=HTMLResponse)
def explain_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    pictures: PicturesDep,
    client: ClientDep,
) -> HTMLResponse:
    q, error = parse_query(CamQuery, _query_data(request))
    loaded = registry.get(q.model, q.weights)
    context: dict[str, Any] = {
        "loaded": loaded,
        "q": q,
        "method": q.method,
        "methods": list(cam.METHODS.values()),
        "target_text": q.target or "",
        "opacity": q.opacity,
        "cmap": q.cmap,
        "cmaps": explain.CAM_COLORMAPS,
        "normalise": q.normalise,
        "resolution": q.resolution,
        "k": q.k,
        "image_id": q.image_id,
        "form_error": error,
    }
    context.update(_layer_context(loaded, q.layer, call=q.call))
    # The call only means something for a layer that runs more than once (a picker shows it then).
    call = q.call if context["calls"] else None
    status = 422 if error else 200
    headers: dict[str, str] = {}
    try:
        explain.check_method(q.method)
        if q.image_id and not context["cam_unsupported"] and not error:
            image = store.load(q.image_id)
            tgt = parse_target(loaded, q.target)
            picture: dict[str, Any] = {
                "opacity": q.opacity,
                "cmap": q.cmap,
                "normalise": q.normalise,
                "resolution": q.resolution,
            }
            if explain.needs_job([q.method]):
                job = explain.submit_cam_job(
                    jobs, loaded, image, q.method, tgt, context["layer"], q.k, picture, cam_summary, client,
                    call=call,
                )  # fmt: skip
                context.update(_job_context(job, "explain", request.url.query))
            else:
                outcome = explain.explain_cam(loaded, image, q.method, tgt, context["layer"], q.k, call=call)
                pic = explain.cam_picture(outcome.raw, outcome.prepared.shown, **picture)
                context.update({"outcome": outcome, "picture": pic})
                context.update(_cam_pictures(pictures, pic, outcome.prepared.shown))
    except _FORM_ERRORS as exc:
        status, headers = _form_error(context, exc)
        context["keep_body"] = not exc.to_dict()["error"].get("field")
    return _page(
        request, "explain", "body", context, status, headers,
        full=_base_context(registry, store, q.image_id, loaded, q.weights),
    )  # fmt: skip


@router.get("/explain/job/{job_id}", response_class=HTMLResponse, response_model=None)
def explain_job(
    request: Request, job_id: str, jobs: JobsDep, registry: RegistryDep, pictures: PicturesDep
) -> Response:
    """The progress of a slow CAM (polled every 500 ms), or its result once done. Opened as a page: /explain."""
    if not wants_block(request):
        return _to_page("explain", request)
    q, _ = parse_query(CamQuery, _query_data(request))
    job = jobs.get(job_id)
    context = _job_context(job, "explain", request.url.query)
    if job.status == "done" and job.result is not None:
        res = job.result
        loaded = registry.get(res["model"], res["weights"])
        pic = explain.cam_picture(
            job.artifacts["map"], job.artifacts["shown"], q.opacity, q.cmap, q.normalise, q.resolution
        )
        context.update({"result": res, "loaded": loaded, "picture": pic, "opacity": q.opacity})
        context.update(_cam_pictures(pictures, pic, job.artifacts["shown"]))
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


def _occlusion_context(
    q: OcclusionQuery, loaded: LoadedModel, jobs: Any, error: dict[str, Any] | None
) -> dict[str, Any]:
    d_window, d_stride = explain.occlusion_defaults(loaded.input_size)
    return {
        "time_limit": jobs.max_seconds,
        "loaded": loaded,
        "q": q,
        "target_text": q.target or "",
        "window": q.window or d_window,
        "stride": q.stride or (max(1, q.window // 2) if q.window else d_stride),
        "baseline": q.baseline,
        "baselines": occlusion.BASELINES,
        "baseline_notes": occlusion.BASELINE_NOTES,
        "progressive": q.progressive,
        "score": q.score,
        "score_notes": explain.SCORE_NOTES,
        "saturated": explain.SATURATED,
        "k": q.k,
        "image_id": q.image_id,
        "form_error": error,
    }


def _occlusion_settings(q: OcclusionQuery, target: int | None = None) -> explain.OcclusionSettings:
    return explain.OcclusionSettings(
        target=target,
        window=q.window,
        stride=q.stride,
        baseline=q.baseline,
        progressive=q.progressive,
        k=q.k,
        score=q.score,
    )


@router.get("/occlusion", response_class=HTMLResponse)
def occlusion_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    pictures: PicturesDep,
) -> HTMLResponse:
    q, error = parse_query(OcclusionQuery, _query_data(request))
    loaded = registry.get(q.model, q.weights)
    context = _occlusion_context(q, loaded, jobs, error)
    status = 422 if error else 200
    try:
        window_used, stride_used = explain.check_occlusion(loaded, _occlusion_settings(q))
        context["estimate"] = explain.estimate_occlusion(
            jobs,
            loaded.display_name,
            loaded.input_size,
            explain.forward_macs(loaded),
            window_used,
            stride_used,
        )
    except InvalidInput as exc:
        context["form_error"] = context["form_error"] or exc.to_dict()["error"]
    if q.image_id:
        image = store.load(q.image_id)
        prepared = loaded.prepare(image)
        probs = explain.class_probabilities(loaded, prepared.tensor)
        explain.check_finite(loaded, "class probabilities", probs)
        context.update(
            {
                "input_uri": pictures.image_url(prepared.shown),
                "input_size": loaded.input_size,
                "predictions": explain.predictions_from(loaded, probs, q.k),
                "resolved_score": explain.resolve_score(q.score, float(probs.max())),
            }
        )
    # A refusal without a field (or of the model) is part of the input block; a field's error goes next to it.
    context["keep_body"] = bool(context["form_error"]) and _slot("occlusion", context["form_error"]) == "form"
    return _page(
        request, "occlusion", "input", context, status,
        full=_base_context(registry, store, q.image_id, loaded, q.weights),
    )  # fmt: skip


@router.get("/occlusion/run", response_class=HTMLResponse, response_model=None)
def occlusion_run_as_page(request: Request) -> RedirectResponse:
    """/occlusion/run in the address bar (an old bookmark, a reload): the occlusion page."""
    return _to_page("occlusion", request)


@router.post("/occlusion/run", response_class=HTMLResponse)
async def occlusion_run(
    request: Request,
    form: FormDep,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    client: ClientDep,
) -> HTMLResponse:
    """Start the occlusion job from the page's form; answers with the polling progress partial.

    A bad field is shown next to it (the last map stays); a refusal (over the time limit, with the estimate; or a
    full queue) is an error in the job area.
    """
    data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    data["progressive"] = "true" if data.get("progressive") in ("on", "true", "1") else "false"
    q, error = parse_query(OcclusionQuery, data)
    context: dict[str, Any] = {"form_error": error}
    if error is None and not q.image_id:
        error = InvalidInput("Pick an image first.", field="image_id").to_dict()["error"]
    if error is not None:
        context["form_error"] = error
        return _run_error(request, context, 422)
    assert q.image_id is not None
    image_id = q.image_id
    model = model_name(
        registry, q.model
    )  # named before loading (the default when omitted): the estimate first
    settings = _occlusion_settings(q)
    try:
        # Pressing Run again (or resending the form) while this run is going follows the running job.
        key = explain.occlusion_key(model, q.weights, image_id, settings, q.target)
        # Estimate and admit first, in a worker thread (it may trace or load the model): no heavy work on the loop.
        estimate = await run_in_threadpool(
            explain.plan_occlusion, jobs, registry, model, q.weights, settings, client, key
        )

        def start() -> Job:
            loaded = registry.get(model, q.weights)
            settings.target = parse_target(loaded, q.target)
            return explain.submit_occlusion(
                jobs, loaded, store.load(image_id), settings, client, estimate, key
            )

        job = await run_in_threadpool(start)
    except _FORM_ERRORS as exc:
        status, headers = _form_error(context, exc)
        response = _run_error(request, context, status)
        response.headers.update(headers)
        return response
    return render(request, "partials/explain_job.html", _job_context(job, "occlusion"))


def _run_error(request: Request, context: dict[str, Any], status: int) -> HTMLResponse:
    """A field's error next to that field (the map stays); a refusal without a field in the job area."""
    error = context["form_error"]
    context["error_slot"] = _slot("occlusion", error)
    if error.get("field") and error.get("code") == "invalid_input":
        response = render(request, "pages/occlusion.html", context, status, block="field_error")
        response.headers["HX-Retarget"] = f"#occlusion-error-{context['error_slot']}"
        response.headers["HX-Reswap"] = "innerHTML"
        return response
    return render(request, "pages/occlusion.html", context, status, block="run_error")


@router.get("/occlusion/job/{job_id}", response_class=HTMLResponse, response_model=None)
def occlusion_job(
    request: Request, job_id: str, jobs: JobsDep, registry: RegistryDep, pictures: PicturesDep
) -> Response:
    """Progress (with the coarse map so far in progressive mode) or the final map; polled every 500 ms."""
    if not wants_block(request):
        return _to_page("occlusion", request)
    job = jobs.get(job_id)
    context = _job_context(job, "occlusion")
    shown = job.artifacts.get("shown")
    if job.status == "done" and job.result is not None and shown is not None:
        heat, over, vmin, vmax = explain.occlusion_picture(job.artifacts["map"], shown)
        context.update(
            {
                "result": job.result,
                "loaded": registry.get(job.result["model"], job.result["weights"]),
                "heatmap_uri": pictures.image_url(heat),
                "overlay_uri": pictures.image_url(over),
                "vmin": vmin,
                "vmax": vmax,
            }
        )
        return render(request, "partials/occlusion_result.html", context)
    partial_map = job.artifacts.get("partial")
    # A job stopped by the time limit keeps its coarse map: shown with the error.
    if partial_map is not None and shown is not None and job.status in ("queued", "running", "failed"):
        heat, over, vmin, vmax = explain.occlusion_picture(partial_map, shown)
        context.update({"partial_uri": pictures.image_url(over), "vmin": vmin, "vmax": vmax})
    return render(request, "partials/explain_job.html", context)


@router.get("/occlusion/patch", response_class=HTMLResponse, response_model=None)
def occlusion_patch(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    pictures: PicturesDep,
) -> Response:
    """Hide one square where the image was clicked and show the new top-k beside the old."""
    if not wants_block(request):
        return _to_page("occlusion", request, drop=("y", "x"))
    q, error = parse_query(PatchQuery, _query_data(request))
    if error is not None:
        raise InvalidInput(error["message"], field=error["field"])
    loaded = registry.get(q.model, q.weights)
    res = explain.hide_patch(
        loaded, store.load(q.image_id), q.y, q.x, q.window, q.baseline, parse_target(loaded, q.target), q.k,
        q.score,
    )  # fmt: skip
    return render(
        request,
        "partials/occlusion_patch.html",
        {
            "res": res,
            "hidden_uri": pictures.image_url(res.hidden),
            "loaded": loaded,
            "score_notes": explain.SCORE_NOTES,
        },
    )


# ---------------------------------------------------------------------------------------------------------
# /compare
# ---------------------------------------------------------------------------------------------------------


def _compare_context(
    pictures: PictureStore, summary: dict[str, Any], shown: np.ndarray, maps: dict[str, np.ndarray], cmap: str
) -> dict[str, Any]:
    """Tiles on ONE scale: every map is min-max normalised to [0, 1] and coloured with limits 0..1."""
    size = (int(shown.shape[0]), int(shown.shape[1]))
    tiles = []
    for entry in [*summary["methods"], summary["random"]]:
        rgb = resize_to(colorize(maps[entry["method"]], cmap, 0.0, 1.0), size, smooth=False)
        over_url = pictures.image_url(overlay(shown, rgb, 0.55))
        tiles.append({**entry, "overlay_uri": over_url})
    return {"summary": summary, "tiles": tiles, "cmap": cmap, "input_uri": pictures.image_url(shown)}


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    pictures: PicturesDep,
    client: ClientDep,
) -> HTMLResponse:
    q, error = parse_query(CompareQuery, _query_data(request, lists=("methods",)))
    loaded = registry.get(q.model, q.weights)
    context: dict[str, Any] = {
        "loaded": loaded,
        "q": q,
        "all_methods": [m for m in cam.METHODS.values() if m.key != "random"],
        "chosen": q.methods,
        "target_text": q.target or "",
        "steps": q.steps,
        "protocol": q.protocol,
        "protocols": faithfulness.PROTOCOLS,
        "tie_breaks": faithfulness.TIE_BREAKS,
        "cmap": q.cmap,
        "cmaps": explain.CAM_COLORMAPS,
        "image_id": q.image_id,
        "form_error": error,
    }
    context.update(_layer_context(loaded, q.layer))
    status = 422 if error else 200
    headers: dict[str, str] = {}
    try:
        chosen = explain.check_compare_methods(q.methods)
        if q.image_id and not context["cam_unsupported"] and not error:
            image = store.load(q.image_id)
            tgt = parse_target(loaded, q.target)
            layer = context["layer"]
            if explain.compare_needs_job(jobs, loaded, image, chosen, layer, q.steps, q.protocol):
                job = explain.submit_compare_job(
                    jobs, loaded, image, chosen, tgt, layer, q.steps, 5,
                    partial(compare_summary, cmap=q.cmap), client, q.protocol,
                )  # fmt: skip
                context.update(_job_context(job, "compare", request.url.query))
            else:
                outcome = explain.compare_methods(
                    loaded, image, chosen, tgt, layer, q.steps, limits=jobs, protocol=q.protocol
                )
                maps = {row.method.key: row.normalised for row in outcome.rows}
                summary = compare_summary(outcome, q.cmap)
                context.update(_compare_context(pictures, summary, outcome.prepared.shown, maps, q.cmap))
    except _FORM_ERRORS as exc:
        status, headers = _form_error(context, exc)
        context["keep_body"] = not exc.to_dict()["error"].get("field")
    return _page(
        request, "compare", "body", context, status, headers,
        full=_base_context(registry, store, q.image_id, loaded, q.weights),
    )  # fmt: skip


@router.get("/compare/job/{job_id}", response_class=HTMLResponse, response_model=None)
def compare_job(request: Request, job_id: str, jobs: JobsDep, pictures: PicturesDep) -> Response:
    if not wants_block(request):
        return _to_page("compare", request)
    q, _ = parse_query(CompareQuery, _query_data(request, lists=("methods",)))
    job = jobs.get(job_id)
    context = _job_context(job, "compare", request.url.query)
    if job.status == "done" and job.result is not None:
        maps = {name.split(":", 1)[1]: arr for name, arr in job.artifacts.items() if name.startswith("map:")}
        context.update(_compare_context(pictures, job.result, job.artifacts["shown"], maps, q.cmap))
        return render(request, "partials/compare_result.html", context)
    return render(request, "partials/explain_job.html", context)
