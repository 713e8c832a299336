"""JSON routes for explanations: CAM maps, occlusion sensitivity (a job), one hidden patch, comparison."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from app.api.responses import COMMON, NPY, PNG, content, errors, job_accepted
from app.core.explanation import cam
from app.core.imaging.rendering import encode_npy, encode_png
from app.deps import ClientDep, ImageStoreDep, JobsDep, PicturesDep, RegistryDep, model_name
from app.schemas.common import JobAccepted
from app.schemas.explain import (
    CamFormat,
    CamOut,
    CamRequest,
    CompareOut,
    CompareRequest,
    LayersOut,
    MethodOut,
    OcclusionRequest,
    PatchOut,
    PatchRequest,
    WeightsField,
    cam_summary,
    compare_summary,
    patch_out,
)
from app.services import explain

router = APIRouter(prefix="/api/v1", tags=["explain"], responses=COMMON)


@router.get("/explain/methods", response_model=list[MethodOut])
def methods() -> list[MethodOut]:
    """The CAM methods, what each computes, and which are slow (run as jobs)."""
    return [MethodOut(**m.__dict__) for m in cam.METHODS.values()]


@router.get("/explain/layers", response_model=LayersOut, responses=errors(404, 409, 413, 422))
def layers(
    registry: RegistryDep,
    image_id: str,
    store: ImageStoreDep,
    model: str | None = None,
    weights: WeightsField = "auto",
) -> LayersOut:
    """Layers with a spatial map (CAM targets) and the default one."""
    loaded = registry.get(model, weights)
    explain.check_cam_supported(loaded)
    infos, default = explain.layer_choices(loaded, loaded.prepare(store.load(image_id)).tensor)
    return LayersOut(
        model=loaded.name,
        default=default,
        why=cam.WHY_LAST_CONV,
        layers=[
            {"name": i.name, "type": i.type, "shape": list(i.shape), "calls": i.calls, "label": i.label}
            for i in infos
        ],
    )


@router.post(
    "/explain/cam",
    response_model=None,
    responses=errors(
        404,
        409,
        413,
        422,
        503,
        also={
            200: {"model": CamOut, **content(PNG, NPY, description="PNG (overlay or heatmap), JSON or .npy")},
            202: {
                "description": "a slow method (Score-CAM, Ablation-CAM) started as a job",
                "model": JobAccepted,
            },
        },
    ),
)
def cam_route(
    body: CamRequest,
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    client: ClientDep,
    format: CamFormat | None = Query(default=None, description="overrides the body's format"),
) -> Response:
    """One CAM. Score-CAM and Ablation-CAM answer 202 with a job (artifacts `map`, `values`)."""
    loaded = registry.get(body.model, body.weights)
    image = store.load(body.image_id)
    picture: dict[str, Any] = {
        "opacity": body.opacity,
        "cmap": body.cmap,
        "normalise": body.normalise,
        "resolution": body.resolution,
    }
    if explain.needs_job([explain.check_method(body.method).key]):
        job = explain.submit_cam_job(
            jobs,
            loaded,
            image,
            body.method,
            body.target,
            body.layer,
            body.k,
            picture,
            cam_summary,
            client,
            call=body.call,
        )
        return job_accepted(request, job)
    outcome = explain.explain_cam(loaded, image, body.method, body.target, body.layer, body.k, call=body.call)
    pic = explain.cam_picture(outcome.raw, outcome.prepared.shown, **picture)
    fmt = format or body.format
    if fmt == "png":
        return Response(encode_png(pic.overlay), media_type="image/png")
    if fmt == "heatmap":
        return Response(encode_png(pic.heatmap), media_type="image/png")
    if fmt == "npy":
        return Response(encode_npy(pic.values), media_type="application/octet-stream")
    return JSONResponse(CamOut(**cam_summary(outcome, pic)).model_dump())


@router.post(
    "/explain/occlusion",
    status_code=202,
    response_model=JobAccepted,
    responses=errors(404, 409, 413, 422, 503),
)
def occlusion_route(
    body: OcclusionRequest,
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    client: ClientDep,
) -> JSONResponse:
    """Start occlusion sensitivity as a job. Poll GET /api/v1/jobs/{id}; arrays at .../artifacts/map|drops.

    The cost (windows x forward MACs) is estimated first, before the model is loaded: past
    max_job_seconds the answer is 422 over_limit with the estimate and a window/stride that fits.
    """
    model = model_name(
        registry, body.model
    )  # named before loading (the default when omitted): the estimate first
    settings = explain.OcclusionSettings(
        target=body.target,
        window=body.window,
        stride=body.stride,
        baseline=body.baseline,
        progressive=body.progressive,
        k=body.k,
        score=body.score,
    )
    # The same request resent while its job runs gets that job (202 with the same id), not a second one.
    key = explain.occlusion_key(model, body.weights, body.image_id, settings)
    estimate = explain.plan_occlusion(jobs, registry, model, body.weights, settings, client, key)
    loaded = registry.get(model, body.weights)
    job = explain.submit_occlusion(jobs, loaded, store.load(body.image_id), settings, client, estimate, key)
    return job_accepted(request, job)


@router.post("/explain/occlusion/patch", response_model=PatchOut, responses=errors(404, 409, 413, 422))
def patch_route(body: PatchRequest, store: ImageStoreDep, registry: RegistryDep) -> PatchOut:
    """Hide one square at (y, x) of the network's input: the top-k before and after, at once."""
    loaded = registry.get(body.model, body.weights)
    res = explain.hide_patch(
        loaded,
        store.load(body.image_id),
        body.y,
        body.x,
        body.window,
        body.baseline,
        body.target,
        body.k,
        body.score,
    )
    return patch_out(res)


@router.post(
    "/explain/compare",
    response_model=None,
    responses=errors(
        404,
        409,
        413,
        422,
        503,
        also={
            200: {"model": CompareOut},
            202: {"description": "a slow method among them: started as a job", "model": JobAccepted},
        },
    ),
)
def compare_route(
    body: CompareRequest,
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    jobs: JobsDep,
    client: ClientDep,
    pictures: PicturesDep,
) -> Response:
    """Several methods on one image, one shared [0, 1] scale, deletion/insertion AUC each and the random map's.

    The curves follow the named `protocol` (RISE by default); the answer names it and its tie-break."""
    loaded = registry.get(body.model, body.weights)
    image = store.load(body.image_id)
    chosen = explain.check_compare_methods(body.methods)
    if explain.compare_needs_job(jobs, loaded, image, chosen, body.layer, body.steps, body.protocol):
        job = explain.submit_compare_job(
            jobs,
            loaded,
            image,
            chosen,
            body.target,
            body.layer,
            body.steps,
            body.k,
            partial(compare_summary, cmap=body.cmap),
            client,
            body.protocol,
        )
        return job_accepted(request, job)
    outcome = explain.compare_methods(
        loaded,
        image,
        chosen,
        body.target,
        body.layer,
        body.steps,
        body.k,
        limits=jobs,
        protocol=body.protocol,
    )
    summary = compare_summary(outcome, body.cmap)
    if body.images:
        for entry, row in zip([*summary["methods"], summary["random"]], outcome.rows, strict=True):
            pic = explain.cam_picture(row.raw, outcome.prepared.shown, 0.5, body.cmap, "normalised", "input")
            entry["heatmap_url"] = pictures.png_url(encode_png(pic.heatmap))
            entry["overlay_url"] = pictures.png_url(encode_png(pic.overlay))
    return JSONResponse(CompareOut(**summary).model_dump())
