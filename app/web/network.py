"""HTML pages: inside the network (/network), receptive fields (/receptive-fields), milestones (/milestones).

Each page has HTMX partial routes for the regions that change (feature grid, one channel, filters, RF probe,
milestone comparison). They share one NetworkService with the JSON API, so its activation cache serves both.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.core.imaging.rendering import encode_png, png_data_uri
from app.deps import ImageStoreDep, IsHtmx, NetworkDep, RegistryDep
from app.errors import InvalidInput
from app.schemas.network import layer_rows
from app.services.images import ImageStore
from app.services.network import NetworkService
from app.web.templating import render

router = APIRouter()

PER_PAGE = 32


def _default_image(store: ImageStore, image_id: str | None) -> str | None:
    """Pages open on the first sample image so that there is always something to look at."""
    if image_id:
        return image_id
    images = store.list_images()
    return images[0].id if images else None


def _base(store: ImageStore, registry: Any, image_id: str | None, model: str, weights: str) -> dict[str, Any]:
    return {
        "images": store.list_images(),
        "specs": registry.list_specs(),
        "image_id": image_id,
        "model": model,
        "weights": weights,
    }


def _features_context(
    network: NetworkService,
    model: str,
    weights: str,
    image_id: str | None,
    layer: str | None,
    sort: str,
    page: int,
    scale: str,
    cmap: str,
) -> dict[str, Any]:
    result = network.features(
        model, weights, image_id, layer, sort=sort, page=page, per_page=PER_PAGE, scale=scale, cmap=cmap
    )
    structure = network.structure(result.loaded, image_id)
    convs = structure.conv_layers
    return {
        "fp": result,
        "loaded": result.loaded,
        "tiles": [(t, png_data_uri(t.png)) for t in result.tiles],
        "conv_layers": convs,
        "depth_index": convs.index(result.layer) if result.layer in convs else None,
        "model": model,
        "weights": weights,
        "image_id": image_id,
        "cmap": cmap,
    }


@router.get("/network", response_class=HTMLResponse)
def network_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    layer: str | None = None,
    sort: str = "index",
    page: int = 1,
    scale: str = "channel",
    cmap: str = "viridis",
) -> HTMLResponse:
    """Summary tree, feature maps of a layer, early vs late, learned filters."""
    model = model or registry.default_model()
    image_id = _default_image(store, image_id)
    loaded, structure, net_input = network.summary(model, weights, image_id)
    context = _base(store, registry, image_id, model, weights)
    context.update(_features_context(network, model, weights, image_id, layer, sort, page, scale, cmap))
    context.update(_early_late_context(network, model, weights, image_id))
    context.update(_filters_context(network, model, weights, None, "index", 1, None))
    context.update(
        {
            "loaded": loaded,
            "structure": structure,
            "tree": structure.tree,
            "totals": structure.totals,
            "input_uri": png_data_uri(encode_png(net_input.shown)),
        }
    )
    return render(request, "pages/network.html", context)


@router.get("/network/features", response_class=HTMLResponse)
def network_features(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    layer: str | None = None,
    depth: int | None = None,
    sort: str = "index",
    page: int = 1,
    scale: str = "channel",
    cmap: str = "viridis",
) -> HTMLResponse:
    """The feature-map grid of one layer (a layer name, or ``depth``: the index of a conv layer)."""
    model = model or registry.default_model()
    if depth is not None:
        loaded = network.model(model, weights)
        convs = network.structure(loaded, image_id).conv_layers
        if not 0 <= depth < len(convs):
            raise InvalidInput(f"depth must be between 0 and {len(convs) - 1}.", field="depth")
        layer = convs[depth]
    context = _features_context(network, model, weights, image_id, layer, sort, page, scale, cmap)
    return render(request, "partials/network_features.html", context)


@router.get("/network/channel", response_class=HTMLResponse)
def network_channel(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    layer: str,
    channel: int,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    cmap: str = "viridis",
    alpha: float = 0.6,
    vmin: float | None = None,
    vmax: float | None = None,
) -> HTMLResponse:
    """One channel enlarged over the input with adjustable opacity and value range, and its colour bar."""
    model = model or registry.default_model()
    view = network.channel(model, weights, image_id, layer, channel, cmap, alpha, vmin, vmax)
    lo, hi = float(view.values.min()), float(view.values.max())
    return render(
        request,
        "partials/network_channel.html",
        {
            "view": view,
            "loaded": view.loaded,
            "overlay_uri": png_data_uri(view.overlay_png),
            "map_uri": png_data_uri(view.map_png),
            "data_min": lo,
            "data_max": hi,
            "model": model,
            "weights": weights,
            "image_id": image_id,
        },
    )


def _early_late_context(
    network: NetworkService, model: str, weights: str, image_id: str | None
) -> dict[str, Any]:
    loaded = network.model(model, weights)
    convs = network.structure(loaded, image_id).conv_layers
    if not convs:
        return {"early_late": None}
    sides = []
    for layer in dict.fromkeys([convs[0], convs[-1]]):
        fp = network.features(model, weights, image_id, layer, sort="max", per_page=8)
        mean_png, lo, hi = network.mean_map_png(loaded, image_id, layer)
        sides.append(
            {
                "fp": fp,
                "tiles": [(t, png_data_uri(t.png)) for t in fp.tiles],
                "mean_uri": png_data_uri(mean_png),
                "vmin": lo,
                "vmax": hi,
            }
        )
    return {"early_late": sides}


def _filters_context(
    network: NetworkService,
    model: str,
    weights: str,
    layer: str | None,
    sort: str,
    page: int,
    filter_index: int | None,
) -> dict[str, Any]:
    view = network.filters(model, weights, layer, sort, page, 64, filter_index)
    return {
        "fv": view,
        "filter_tiles": [(i, png_data_uri(png), n) for i, png, n in view.tiles],
        "model": model,
        "weights": weights,
    }


@router.get("/network/filters", response_class=HTMLResponse)
def network_filters(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    model: str | None = None,
    weights: str = "auto",
    layer: str | None = None,
    sort: str = "index",
    page: int = 1,
    filter: int | None = None,
    image_id: str | None = None,
) -> HTMLResponse:
    """Learned kernels of a conv layer (first conv: colour tiles; later: one filter per input channel)."""
    model = model or registry.default_model()
    context = _filters_context(network, model, weights, layer, sort, page, filter)
    context["loaded"] = context["fv"].loaded
    context["image_id"] = image_id
    return render(request, "partials/network_filters.html", context)


@router.get("/network/filter", response_class=HTMLResponse)
def network_filter_zoom(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    layer: str,
    index: int,
    model: str | None = None,
    weights: str = "auto",
    filter: int | None = None,
) -> HTMLResponse:
    """One kernel enlarged with its numbers (first conv: output filter ``index``; later: input channel)."""
    model = model or registry.default_model()
    zoom = network.filter_zoom(model, weights, layer, index, filter)
    pictures = [(c, png_data_uri(png), values) for c, png, values in zoom.pictures]
    return render(
        request,
        "partials/network_filter_zoom.html",
        {
            "title": zoom.title,
            "pictures": pictures,
            "limit": zoom.limit,
            "loaded": zoom.loaded,
            "first": zoom.first,
        },
    )


# --- receptive fields -------------------------------------------------------------------------------------------


@router.get("/receptive-fields", response_class=HTMLResponse)
def receptive_fields_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    layer: str | None = None,
) -> HTMLResponse:
    """RF table and plot per layer; click a feature map to see a unit's box and its effective RF."""
    model = model or registry.default_model()
    image_id = _default_image(store, image_id)
    loaded, structure = network.rf_table(model, weights, image_id)
    rows = [r for r in layer_rows(structure) if r.rf is not None and r.leaf]
    grid_layers = [
        n for n, r in structure.rf.items() if r.grid and r.output_shape and len(r.output_shape) == 3
    ]
    if layer not in grid_layers:
        # Open on a convolution half-way down: big enough to see growth, small enough to click.
        middle = [c for c in structure.conv_layers if c in grid_layers]
        layer = middle[len(middle) // 2] if middle else (grid_layers[0] if grid_layers else None)
    context = _base(store, registry, image_id, model, weights)
    context.update(
        {
            "loaded": loaded,
            "rows": rows,
            "plot": _rf_plot(structure, loaded.input_size),
            "grid_layers": grid_layers,
            "layer": layer,
            "stack_rows": network.stack_comparison(4, 64),
            "input_shape": structure.totals.input_shape,
        }
    )
    if layer is not None:
        context.update(_rf_map_context(network, model, weights, image_id, layer))
    return render(request, "pages/receptive_fields.html", context)


def _rf_plot(structure: Any, input_size: tuple[int, int]) -> dict[str, Any]:
    """Points of an SVG line plot: RF size and jump of the conv/pool leaves of the main path, in order."""
    points = []
    widest = 0.0
    for name, r in structure.rf.items():
        # The main path only: a side branch that sees less than what came before (a 1x1 shortcut, an
        # Inception 1x1 branch) would make the curve zig-zag without changing what the network sees.
        if r.grid and r.kind in ("conv", "pool") and r.size >= widest:
            points.append((name, r.size, r.jump))
            widest = r.size
    if not points:
        return {"points": [], "width": 0}
    width, height, pad = 900, 300, 40
    top = max(max(p[1] for p in points), float(max(input_size)))
    n = max(len(points) - 1, 1)

    def sx(i: int) -> float:
        return pad + (width - 2 * pad) * i / n

    def sy(v: float) -> float:
        return height - pad - (height - 2 * pad) * v / top

    return {
        "width": width,
        "height": height,
        "pad": pad,
        "top": top,
        "image_y": sy(float(max(input_size))),
        "image_size": max(input_size),
        "rf_line": " ".join(f"{sx(i):.1f},{sy(p[1]):.1f}" for i, p in enumerate(points)),
        "jump_line": " ".join(f"{sx(i):.1f},{sy(p[2]):.1f}" for i, p in enumerate(points)),
        "points": [(p[0], p[1], p[2], sx(i), sy(p[1])) for i, p in enumerate(points)],
    }


def _rf_map_context(
    network: NetworkService, model: str, weights: str, image_id: str | None, layer: str
) -> dict[str, Any]:
    loaded = network.model(model, weights)
    structure = network.structure(loaded, image_id)
    png, lo, hi = network.mean_map_png(loaded, image_id, layer)
    lrf = structure.rf.get(layer)
    acts, maps = network.layer_activation(loaded, image_id, layer)
    return {
        "rf_layer": lrf,
        "map_uri": png_data_uri(png),
        "map_shape": maps.shape,
        "map_vmin": lo,
        "map_vmax": hi,
        "input_uri": png_data_uri(encode_png(acts.net_input.shown)),
        "shown_shape": acts.net_input.shown.shape,
    }


@router.get("/receptive-fields/map", response_class=HTMLResponse)
def rf_map(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    layer: str,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
) -> HTMLResponse:
    """The clickable (channel-mean) feature map of one layer."""
    model = model or registry.default_model()
    context = _rf_map_context(network, model, weights, image_id, layer)
    context.update({"layer": layer, "model": model, "weights": weights, "image_id": image_id})
    return render(request, "partials/rf_map.html", context)


@router.get("/receptive-fields/probe", response_class=HTMLResponse)
def rf_probe(
    request: Request,
    network: NetworkDep,
    registry: RegistryDep,
    layer: str,
    y: int,
    x: int,
    image_id: str | None = None,
    model: str | None = None,
    weights: str = "auto",
    channel: int | None = None,
) -> HTMLResponse:
    """Theoretical box beside the effective RF (gradient) of the clicked unit."""
    model = model or registry.default_model()
    probe = network.rf_probe(model, weights, image_id, layer, y, x, channel)
    h, w = probe.net_input.shown.shape[:2]
    return render(
        request,
        "partials/rf_probe.html",
        {
            "probe": probe,
            "loaded": probe.loaded,
            "input_uri": png_data_uri(encode_png(probe.net_input.shown)),
            "erf_uri": png_data_uri(probe.erf_png),
            "img_h": h,
            "img_w": w,
        },
    )


# --- milestones -------------------------------------------------------------------------------------------------


@router.get("/milestones", response_class=HTMLResponse)
def milestones_page(
    request: Request,
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    htmx: IsHtmx,
    image_id: str | None = None,
    model_a: str | None = None,
    model_b: str | None = None,
    weights: str = "auto",
    depth: float = 0.5,
) -> HTMLResponse:
    """The milestone architectures with their facts; compare two on the same image."""
    specs = registry.list_specs(milestones_only=True)
    context: dict[str, Any] = {
        "milestones": sorted((s for s in specs if not s.builtin), key=lambda s: (s.year or 0, s.name)),
        "all_specs": specs,
        "others": [
            s
            for s in registry.list_specs()
            if not s.milestone and not s.builtin and s.source == "torchvision"
        ],
        "images": store.list_images(),
        "image_id": image_id,
        "model_a": model_a,
        "model_b": model_b,
        "weights": weights,
        "depth": depth,
    }
    if model_a and model_b:
        context.update(_compare_context(network, store, model_a, model_b, weights, image_id, depth))
    if htmx and model_a and model_b:
        return render(request, "partials/milestones_compare.html", context)
    return render(request, "pages/milestones.html", context)


def _compare_context(
    network: NetworkService,
    store: ImageStore,
    model_a: str,
    model_b: str,
    weights: str,
    image_id: str | None,
    depth: float,
) -> dict[str, Any]:
    if not 0.0 <= depth <= 1.0:
        raise InvalidInput("depth must be between 0 and 1.", field="depth")
    image_id = _default_image(store, image_id)
    sides = []
    for name in (model_a, model_b):
        loaded, structure, _ = network.summary(name, weights, image_id)
        layer = network.default_layer(structure, depth)
        png, lo, hi = network.mean_map_png(loaded, image_id, layer)
        fp = network.features(name, weights, image_id, layer, sort="max", per_page=6)
        predictions = None
        if image_id:
            try:
                from app.services.predictions import predict

                predictions = predict(loaded, store.load(image_id), 5).predictions
            except ImportError:
                predictions = None
        sides.append(
            {
                "loaded": loaded,
                "totals": structure.totals,
                "layer": layer,
                "layer_index": structure.conv_layers.index(layer) if layer in structure.conv_layers else None,
                "conv_count": len(structure.conv_layers),
                "rf": structure.rf.get(layer),
                "mean_uri": png_data_uri(png),
                "vmin": lo,
                "vmax": hi,
                "tiles": [(t, png_data_uri(t.png)) for t in fp.tiles],
                "predictions": predictions,
            }
        )
    return {"sides": sides, "image_id": image_id}
