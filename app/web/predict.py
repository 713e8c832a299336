"""HTML route for predictions: one page whose result region is also its HTMX answer (block "result").

The query is the API's request model (schemas.common.PredictQuery: the same fields, defaults and checks as
POST /api/v1/predict). A bad field is shown next to that field and the last good result stays on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.core.imaging.rendering import colorize, encode_png, signed_limits
from app.deps import ImageStoreDep, IsHtmx, ModelNameDep, PicturesDep, RegistryDep
from app.errors import ConvScopeError
from app.schemas.common import PredictQuery
from app.services.images import ImageStore
from app.services.models import ModelRegistry
from app.services.pictures import PictureStore
from app.services.predictions import PredictionResult, predict
from app.web.templating import render, render_page_or_block

router = APIRouter()

TEMPLATE = "pages/predict.html"
# The form's fields, each with an error slot next to it (id "error-<field>").
FIELDS = ("image_id", "model", "weights", "k", "fit")


def _result_context(result: PredictionResult, pictures: PictureStore) -> dict[str, object]:
    """Pictures of the input tensor by URL: the de-normalised image, and each normalised channel on a signed
    scale (rendered when the browser asks for them)."""
    tensor = result.prepared.tensor[0].numpy()
    vmin, vmax = signed_limits(tensor)
    shown = result.prepared.shown

    def channel_png(c: np.ndarray) -> Callable[[], bytes]:
        return lambda: encode_png(colorize(c, "rdbu", vmin, vmax))

    recipe = f"predict-channel rdbu {vmin!r} {vmax!r}"
    channels = [pictures.lazy_url(recipe, c, channel_png(c)) for c in tensor]
    return {
        "result": result,
        "loaded": result.model,
        "shown_url": pictures.image_url(shown),
        "channel_urls": channels,
        "channel_limits": (vmin, vmax),
        "tensor_shape": list(result.prepared.tensor.shape),
    }


def _field_errors(exc: ValidationError | ConvScopeError) -> dict[str, str]:
    """field -> message, with the API's dotted pydantic spelling of the field."""
    if isinstance(exc, ConvScopeError):
        return {exc.field or "": exc.message}
    out: dict[str, str] = {}
    for error in exc.errors():
        name = ".".join(str(p) for p in error.get("loc", ()))
        out.setdefault(name, f"{name}: {error.get('msg', 'invalid')}")
    return out


def _form_context(
    store: ImageStore, registry: ModelRegistry, model: str, query: PredictQuery | None, raw: dict[str, str]
) -> dict[str, Any]:
    """What the form shows: the valid query, or what the user typed when it was not valid."""
    return {
        "images": store.list_images(),
        "specs": registry.list_specs(),
        "image_id": query.image_id if query else raw.get("image_id") or None,
        "model": model,
        "weights": query.weights if query else raw.get("weights", "auto"),
        "k": query.k if query else raw.get("k", ""),
        "fit": query.fit if query else raw.get("fit", "crop"),
    }


def _invalid(
    request: Request, htmx: bool, context: dict[str, Any], errors: dict[str, str], status: int
) -> HTMLResponse:
    context = {**context, "errors": errors, "fields": FIELDS}
    if htmx:
        # Only the error slots change (out of band); the last good result stays, and the URL stays the last
        # good state.
        response = render(request, TEMPLATE, context, status, block="field_errors")
        response.headers["HX-Reswap"] = "none"
        response.headers["HX-Push-Url"] = "false"
        return response
    return render(request, TEMPLATE, context, status)


@router.get("/predict", response_class=HTMLResponse)
def predict_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    pictures: PicturesDep,
    htmx: IsHtmx,
    model: ModelNameDep,
) -> HTMLResponse:
    raw = dict(request.query_params)
    try:
        query = PredictQuery.model_validate(raw)
    except ValidationError as exc:
        context = _form_context(store, registry, model, None, raw)
        return _invalid(request, htmx, context, _field_errors(exc), 422)
    context = _form_context(store, registry, model, query, raw)
    context.update({"errors": {}, "fields": FIELDS, "oob_errors": htmx})
    try:
        registry.spec(model)  # an unknown name is a 404 with the choices, before anything runs
        if query.image_id:
            image = store.get(query.image_id)
            loaded = registry.get(model, query.weights)
            result = predict(loaded, store.load(query.image_id), query.k, query.fit)
            context.update(_result_context(result, pictures))
            context["image"] = image
    except ConvScopeError as exc:
        if exc.field not in FIELDS:
            raise
        return _invalid(request, htmx, context, _field_errors(exc), exc.status_code)
    return render_page_or_block(request, TEMPLATE, "result", context)
