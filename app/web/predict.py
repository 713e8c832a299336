"""HTML routes: the prediction page and its HTMX result partial."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.core.imaging.rendering import colorize, encode_png, png_data_uri, signed_limits
from app.deps import ImageStoreDep, IsHtmx, RegistryDep
from app.services.predictions import PredictionResult, predict
from app.web.templating import render

router = APIRouter()


def _result_context(result: PredictionResult) -> dict[str, object]:
    """Pictures of the input tensor: the de-normalised image, and each normalised channel on a signed scale."""
    tensor = result.prepared.tensor[0].numpy()
    vmin, vmax = signed_limits(tensor)
    channels = [png_data_uri(encode_png(colorize(c, "rdbu", vmin, vmax))) for c in tensor]
    return {
        "result": result,
        "loaded": result.model,
        "shown_uri": png_data_uri(encode_png(result.prepared.shown)),
        "channel_uris": channels,
        "channel_limits": (vmin, vmax),
        "tensor_shape": list(result.prepared.tensor.shape),
    }


@router.get("/predict", response_class=HTMLResponse)
def predict_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    htmx: IsHtmx,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    k: int = 5,
) -> HTMLResponse:
    model = model or registry.default_model()
    registry.spec(model)  # an unknown name is a 404 with the choices, before anything renders
    context: dict[str, object] = {"image_id": image_id, "model": model, "weights": weights, "k": k}
    if image_id:
        loaded = registry.get(model, weights)
        context.update(_result_context(predict(loaded, store.load(image_id), k)))
        context["image"] = store.get(image_id)
    if htmx:
        return render(request, "partials/predictions.html", context)
    context.update({"images": store.list_images(), "specs": registry.list_specs()})
    return render(request, "pages/predict.html", context)
