"""JSON route for predictions: top-k classes, and the tensor the network actually saw."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.responses import COMMON, NPY, PNG, binary_200, errors
from app.core.imaging.preprocess import Fit
from app.core.imaging.rendering import encode_npy, encode_png
from app.deps import ImageStoreDep, ModelNameDep, RegistryDep
from app.schemas.common import PredictionOut, PredictRequest, PredictResponse, PreprocessingOut
from app.services.predictions import predict

router = APIRouter(prefix="/api/v1", tags=["predict"], responses=COMMON)


@router.post("/predict", response_model=PredictResponse, responses=errors(404, 409, 413, 422))
def predict_route(body: PredictRequest, store: ImageStoreDep, registry: RegistryDep) -> PredictResponse:
    """Top-k classes for an image, e.g. {"index": 285, "label": "Egyptian cat", "probability": 0.36}."""
    loaded = registry.get(body.model, body.weights)
    result = predict(loaded, store.load(body.image_id), body.k, body.fit)
    prep = loaded.spec.preprocessing
    assert prep is not None
    return PredictResponse(
        model=loaded.name,
        display_name=loaded.display_name,
        weights=loaded.weights_status,
        weights_note=loaded.weights_note,
        image_id=body.image_id,
        predictions=[
            PredictionOut(index=p.index, label=p.label, probability=p.probability) for p in result.predictions
        ],
        preprocessing=PreprocessingOut(
            fit=result.prepared.fit,
            steps=result.prepared.steps,
            input_shape=list(result.prepared.tensor.shape),
            mean=list(prep.mean),
            std=list(prep.std),
        ),
    )


@router.get(
    "/predict/input",
    response_class=Response,
    responses=errors(
        404,
        409,
        413,
        422,
        also=binary_200(PNG, NPY, description="PNG (format=png) or the normalised tensor (format=npy)"),
    ),
)
def model_input(
    image_id: str,
    store: ImageStoreDep,
    registry: RegistryDep,
    model: ModelNameDep,
    weights: Literal["auto", "pretrained", "untrained"] = "auto",
    fit: Fit = "crop",
    format: Literal["png", "npy"] = "png",
) -> Response:
    """The preprocessed input: PNG of what the network sees (de-normalised), or the normalised tensor as .npy."""
    loaded = registry.get(model, weights)
    prepared = loaded.prepare(store.load(image_id), fit)
    if format == "npy":
        return Response(encode_npy(prepared.tensor.numpy()), media_type="application/octet-stream")
    return Response(encode_png(prepared.shown), media_type="image/png")
