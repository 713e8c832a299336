"""JSON twins of the inside-the-network pages: summary, layers, features, filters, receptive fields."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.responses import COMMON, content, errors
from app.core.imaging.rendering import encode_npy, encode_png, tile_grid
from app.core.models.layers import LayerInfo
from app.deps import NetworkDep
from app.schemas.network import (
    ChannelStatOut,
    FeaturesRequest,
    FeaturesResponse,
    FiltersParams,
    FiltersResponse,
    LayerNode,
    LayersResponse,
    ModelHeader,
    ReceptiveFieldRequest,
    ReceptiveFieldResponse,
    SummaryResponse,
    TotalsOut,
    Weights,
    layer_rows,
)
from app.services.models import LoadedModel

router = APIRouter(prefix="/api/v1", tags=["network"], responses=COMMON)

PNG = "image/png"
NPY = "application/octet-stream"


def _header(loaded: LoadedModel, image_id: str | None) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "display_name": loaded.display_name,
        "weights": loaded.weights_status,
        "untrained": loaded.untrained,
        "weights_note": loaded.weights_note,
        "image_id": image_id,
    }


def _node(info: LayerInfo) -> LayerNode:
    return LayerNode(
        name=info.name,
        type=info.type,
        kind=info.kind,
        output_shape=list(info.output_shape) if info.output_shape is not None else None,
        params=info.params,
        macs=info.macs,
        other_ops=info.other_ops,
        order=info.order,
        calls=info.calls,
        children=[_node(c) for c in info.children],
    )


@router.get("/models/{name}/summary", response_model=SummaryResponse, responses=errors(404, 409, 413, 422))
def summary(
    name: str, network: NetworkDep, weights: Weights = "auto", image_id: str | None = None
) -> SummaryResponse:
    """The module tree with output shapes, parameters and MACs per layer, and totals."""
    loaded, structure, _ = network.summary(name, weights, image_id)
    t = structure.totals
    return SummaryResponse(
        **_header(loaded, image_id),
        tree=_node(structure.tree),
        totals=TotalsOut(
            params=t.params,
            trainable_params=t.trainable_params,
            macs=t.macs,
            other_ops=t.other_ops,
            layers=t.layers,
            leaf_layers=t.leaf_layers,
            param_bytes=t.param_bytes,
            input_shape=list(t.input_shape),
            output_shape=list(t.output_shape) if t.output_shape is not None else None,
            uncounted_types=list(t.uncounted_types),
        ),
    )


@router.get("/models/{name}/layers", response_model=LayersResponse, responses=errors(404, 409, 413, 422))
def layers(
    name: str, network: NetworkDep, weights: Weights = "auto", image_id: str | None = None
) -> LayersResponse:
    """Every module as a flat list: type, output shape, params, MACs and theoretical receptive field."""
    loaded, structure = network.rf_table(name, weights, image_id)
    return LayersResponse(
        **_header(loaded, image_id),
        input_shape=list(structure.totals.input_shape),
        conv_layers=structure.conv_layers,
        layers=layer_rows(structure),
    )


@router.post(
    "/features",
    response_model=None,
    responses=errors(
        404,
        409,
        413,
        422,
        also={
            200: {"model": FeaturesResponse, **content(PNG, NPY, description="JSON statistics, PNG or .npy")}
        },
    ),
)
def features(body: FeaturesRequest, network: NetworkDep) -> Response | FeaturesResponse:
    """Feature maps of one layer: PNG grid, PNG of one channel (?channel), JSON statistics or raw .npy."""
    if body.channel is not None and body.format in ("png", "npy"):
        layer = (
            body.layer
            if body.depth is None and body.layer
            else network.features(
                body.model, body.weights, body.image_id, None, per_page=1, depth=body.depth
            ).layer
        )
        view = network.channel(
            body.model,
            body.weights,
            body.image_id,
            layer,
            body.channel,
            body.cmap,
            body.opacity,
            body.vmin,
            body.vmax,
            call=body.call,
        )
        if body.format == "npy":
            return Response(encode_npy(view.values), media_type=NPY)
        return Response(view.overlay_png() if body.overlay else view.map_png(), media_type=PNG)
    result = network.features(
        body.model,
        body.weights,
        body.image_id,
        body.layer,
        sort=body.sort,
        page=body.page,
        per_page=body.per_page,
        channels=body.channels,
        scale=body.scale,
        cmap=body.cmap,
        with_grid=body.format == "png",
        call=body.call,
        depth=body.depth,
    )
    if body.format == "png":
        return Response(
            result.grid_png,
            media_type=PNG,
            headers={"X-Channels": ",".join(str(t.channel) for t in result.tiles)},
        )
    if body.format == "npy":
        _, maps = network.layer_activation(result.loaded, body.image_id, result.layer, body.call)
        selected = maps[np.asarray(body.channels, dtype=np.int64)] if body.channels else maps
        return Response(encode_npy(selected), media_type=NPY)
    s = result.stats
    return FeaturesResponse(
        **_header(result.loaded, body.image_id),
        layer=result.layer,
        layer_type=result.layer_type,
        call=result.call,
        calls=result.calls,
        shape=list(result.shape),
        sort=result.sort,
        page=result.page.page,
        pages=result.page.pages,
        per_page=result.page.per_page,
        total_channels=result.page.total,
        channels=[
            ChannelStatOut(
                channel=c,
                mean=float(s.mean[c]),
                max=float(s.max[c]),
                min=float(s.min[c]),
                std=float(s.std[c]),
            )
            for c in result.page.items
        ],
        receptive_field=result.rf.to_dict() if result.rf else None,
    )


@router.get(
    "/models/{name}/filters",
    response_model=None,
    responses=errors(
        404,
        409,
        422,
        also={200: {"model": FiltersResponse, **content(PNG, NPY, description="JSON, PNG tiles or .npy")}},
    ),
)
def filters(
    name: str, network: NetworkDep, params: Annotated[FiltersParams, Query()]
) -> Response | FiltersResponse:
    """Learned kernels: first conv as colour tiles; later convs one filter's kernels per input channel."""
    if params.format == "npy":
        _, _, weight = network.filter_weights(name, params.weights, params.layer)
        return Response(encode_npy(weight), media_type=NPY)
    view = network.filters(
        name, params.weights, params.layer, params.sort, params.page, params.per_page, params.filter
    )
    if params.format == "png":
        tiles = view.images
        grid = tile_grid(tiles, ncols=max(1, min(8, len(tiles)))) if tiles else np.zeros((1, 1, 3), np.uint8)
        return Response(encode_png(grid), media_type=PNG)
    return FiltersResponse(
        **_header(view.loaded, None),
        layer=view.layer,
        weight_shape=list(view.weight_shape),
        first_conv=view.first,
        sort=view.sort,
        page=view.page.page,
        pages=view.page.pages,
        items=[{"index": i, "norm": n} for i, _, n in view.tiles],
        filter=view.filter_index,
        limit=view.limit,
        conv_layers=view.conv_layers,
    )


@router.post(
    "/receptive-field",
    response_model=None,
    responses=errors(
        404,
        409,
        413,
        422,
        also={
            200: {
                "model": ReceptiveFieldResponse,
                **content(PNG, NPY, description="JSON, the ERF as PNG or .npy"),
            }
        },
    ),
)
def receptive_field(body: ReceptiveFieldRequest, network: NetworkDep) -> Response | ReceptiveFieldResponse:
    """Theoretical input box of unit (y, x) of a layer, and its effective RF by gradient (json/png/npy)."""
    probe = network.rf_probe(
        body.model, body.weights, body.image_id, body.layer, body.y, body.x, body.channel, call=body.call
    )
    if body.format == "npy":
        return Response(encode_npy(probe.erf), media_type=NPY)
    if body.format == "png":
        return Response(probe.erf_png(), media_type=PNG)
    return ReceptiveFieldResponse(
        **_header(probe.loaded, body.image_id),
        layer=probe.layer.name,
        y=probe.y,
        x=probe.x,
        larger_than_image=probe.larger_than_image,
        channel=body.channel,
        receptive_field=probe.layer.to_dict(),
        box=probe.box,
        box_clipped=probe.box_clipped,
        input_shape=list(probe.net_input.tensor.shape[1:]),
        erf_max=probe.erf_max,
        erf_extent=probe.erf_extent,
    )


__all__ = ["ModelHeader", "layer_rows", "router"]
