"""JSON twins of the convolution lab: /convolve, /filter, /cost, /kernels, /presets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from app.api.responses import COMMON, NPY, PNG, content, errors
from app.deps import ImageStoreDep
from app.schemas.convolution import (
    ConvolveRequest,
    ConvolveResponse,
    CostQuery,
    FilterRequest,
    FilterResponse,
    KernelOut,
    PresetOut,
    convolve_response,
)
from app.services import convolution as svc

router = APIRouter(prefix="/api/v1", tags=["convolution"], responses=COMMON)


@router.post("/convolve", response_model=ConvolveResponse, responses=errors(413, 422))
def convolve_route(body: ConvolveRequest) -> dict[str, Any]:
    """Convolve a matrix (<= 16x16) with a kernel (<= 7x7); every output cell's multiply-and-sum is written out."""
    return convolve_response(svc.run_playground(body.params(), body.steps), body.steps)


@router.post(
    "/filter",
    response_model=FilterResponse,
    responses=errors(
        404,
        413,
        422,
        also={200: content(PNG, NPY, description="JSON numbers, a PNG grid (format=png) or .npy")},
    ),
)
def filter_route(body: FilterRequest, store: ImageStoreDep) -> Any:
    """Filter an image with named or explicit kernels; feature maps as JSON numbers, a PNG grid, or .npy."""
    params = body.params()
    # Sizes are checked from the plan before any work (OverLimit past max_filter_output_values,
    # max_json_values or max_filter_working_bytes); the answers below are then encoded without copies of
    # the maps: .npy streamed map by map, JSON written row by row.
    outcome = svc.run_filter(store, params)
    if body.format == "png":
        return Response(svc.maps_png(outcome, body.index), media_type="image/png")
    if body.format == "npy":
        return StreamingResponse(
            svc.maps_npy_chunks(outcome, body.index), media_type="application/octet-stream"
        )
    return Response(svc.maps_json_bytes(outcome, body.index), media_type="application/json")


@router.get("/cost", responses=errors(422))
def cost_route(query: Annotated[CostQuery, Query()]) -> dict[str, object]:
    """Weights and multiplications of a fully-connected layer vs a convolution (the lecture's defaults)."""
    return query.compare().as_dict()


@router.get("/kernels", response_model=list[KernelOut])
def kernels_route() -> list[dict[str, object]]:
    """The named kernel library, each with one line on what it detects."""
    return [k.as_dict() for k in svc.list_kernels()]


@router.get("/presets", response_model=list[PresetOut])
def presets_route() -> list[dict[str, object]]:
    """The lecture's worked examples, computed; slide grids that are wrong come with a note."""
    return [p.as_dict() for p in svc.list_presets()]
