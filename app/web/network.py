"""HTML pages: inside the network (/network), receptive fields (/receptive-fields), milestones (/milestones).

One template per page; its regions are named blocks. The page URL is the view's state (under the API's field
names: app/schemas/network.py), so an HTMX request for a region goes to the page URL itself and gets only the
block its target names, with the view's state URL in HX-Push-Url (HX-Replace-Url for continuous controls such
as a slider). Any URL that lands in the address bar therefore renders the full page, and Back/Forward ask the
server for the page of that URL (the page turns HTMX's DOM snapshots off), so controls and pictures agree.

Pictures are never inlined: each has a content-keyed URL from the PictureStore, rendered on its first request.
The pages share one NetworkService with the JSON API, so its activation cache serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from app.core.imaging.rendering import encode_png
from app.deps import ImageStoreDep, ModelNameDep, NetworkDep, PicturesDep, RegistryDep
from app.errors import InvalidInput
from app.schemas.network import (
    FeaturesParams,
    FiltersParams,
    MilestonesParams,
    ReceptiveFieldParams,
    layer_rows,
)
from app.services.images import ImageStore
from app.services.network import FeaturePage, MeanMap, NetworkService, Tile, rf_larger_than_image
from app.services.pictures import PictureStore
from app.web.templating import is_htmx, render, wants_block

router = APIRouter()

# Controls whose every step is a new state of the same view: their requests replace the history entry.
CONTINUOUS = frozenset({"opacity", "depth", "vmin", "vmax"})

NETWORK_BLOCKS = {"network-body": "body", "network-view": "view", "channel-view": "channel"}
RF_BLOCKS = {"rf-body": "body", "rf-click": "click", "rf-probe": "probe"}
MILESTONE_BLOCKS = {"compare": "compare"}


def _wanted_block(request: Request, blocks: Mapping[str, str]) -> str | None:
    """The block an HTMX request targets (HX-Target), or None when the whole page must answer."""
    if not wants_block(request):
        return None
    return blocks.get(request.headers.get("HX-Target", ""))


def state_url(path: str, params: BaseModel, **resolved: Any) -> str:
    """The URL of a view: the request model's fields that differ from their defaults, plus what the server
    resolved (the model, image and layer actually shown), so that the URL reproduces the view."""
    values: dict[str, Any] = {}
    data = params.model_dump()
    data.update(resolved)
    for name, info in type(params).model_fields.items():
        value = data.get(name)
        if value is None or (name not in resolved and value == info.default):
            continue
        values[name] = value
    return f"{path}?{urlencode(values, doseq=True)}"


def _page(
    request: Request,
    template: str,
    block: str | None,
    context: dict[str, Any],
    url: str,
    status_code: int = 200,
) -> HTMLResponse:
    response = render(request, template, context, status_code, block=block)
    response.headers["Vary"] = "HX-Request, HX-Target, HX-History-Restore-Request"
    if block is not None:
        name = request.headers.get("HX-Trigger-Name", "")
        response.headers["HX-Replace-Url" if name in CONTINUOUS else "HX-Push-Url"] = url
    return response


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


def _lazy(pictures: PictureStore, recipe: str, array: np.ndarray, make: Callable[[], np.ndarray]) -> str:
    """A picture's URL; the PNG is made from ``make()`` when the browser first asks for it."""
    return pictures.lazy_url(recipe, array, lambda: encode_png(make()))


def _tile_urls(pictures: PictureStore, fp: FeaturePage) -> list[tuple[Tile, str]]:
    recipe = fp.tile_recipe()
    cmap, vmin, vmax = fp.cmap, fp.vmin, fp.vmax

    def maker(values: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: NetworkService.tile(values, cmap, vmin, vmax)

    urls = []
    for t in fp.tiles:
        # A copy: a tile is a view into the whole layer's maps, which a pending picture must not keep alive
        # (the picture store counts the bytes of the array it is given).
        values = t.values.copy()
        urls.append((t, _lazy(pictures, recipe, values, maker(values))))
    return urls


def _mean_url(pictures: PictureStore, mean: MeanMap) -> str:
    return _lazy(pictures, mean.recipe(), mean.mean, mean.image)


# --- /network ---------------------------------------------------------------------------------------------------


def _view_context(
    network: NetworkService, pictures: PictureStore, q: FeaturesParams, image_id: str | None
) -> dict[str, Any]:
    """Block "view": the feature maps (or bars) of one layer, and the enlarged channel when one is chosen."""
    fp = network.features(
        q.model,
        q.weights,
        image_id,
        q.layer,
        sort=q.sort,
        page=q.page,
        per_page=q.per_page,
        scale=q.scale,
        cmap=q.cmap,
        depth=q.depth,
        # A depth or a new layer (the tree, the slider) never carries the call of the layer before it.
        call=q.call,
    )
    structure = network.structure(fp.loaded, image_id)
    convs = structure.conv_layers
    context: dict[str, Any] = {
        "fp": fp,
        "call_shapes": _call_shapes(structure, fp.layer),
        "tiles": _tile_urls(pictures, fp),
        "conv_layers": convs,
        "depth_index": convs.index(fp.layer) if fp.layer in convs else None,
        "cmap": q.cmap,
        "view": None,
    }
    if q.channel is not None and fp.spatial:
        view = network.channel(
            q.model, q.weights, image_id, fp.layer, q.channel, q.cmap, q.opacity, q.vmin, q.vmax, call=fp.call
        )
        recipe = view.recipe()
        context.update(
            {
                "view": view,
                "overlay_url": _lazy(pictures, "overlay|" + recipe, view.values, view.overlay_image),
                "map_url": _lazy(pictures, "map|" + recipe, view.values, view.map_image),
                "data_min": float(view.values.min()),
                "data_max": float(view.values.max()),
            }
        )
    return context


def _call_shapes(structure: Any, layer: str) -> list[tuple[int, ...] | None]:
    """The output shape of each call of ``layer`` (one entry per call; for the call control)."""
    try:
        return list(structure.tree.find(layer).call_shapes)
    except LookupError:
        return []


def _with_default_call(
    block: str | None, q: Any, build: Callable[[Any], dict[str, Any]]
) -> tuple[Any, dict[str, Any], str | None]:
    """``build(q)``; on a whole page whose ``call`` the layer does not have (a typed or edited URL), the page of
    the default call with the message beside the call control (an HTMX request gets the 422 itself, and the page
    keeps its last good result). Returns the request model used, the context and the message."""
    try:
        return q, build(q), None
    except InvalidInput as exc:
        if block is not None or exc.field != "call" or q.call is None:
            raise
        q = q.model_copy(update={"call": None})
        return q, build(q), exc.message


def _early_late_context(
    network: NetworkService, pictures: PictureStore, model: str, weights: str, image_id: str | None
) -> dict[str, Any]:
    loaded = network.model(model, weights)
    convs = network.structure(loaded, image_id).conv_layers
    if not convs:
        return {"early_late": None}
    sides = []
    for layer in dict.fromkeys([convs[0], convs[-1]]):
        fp = network.features(model, weights, image_id, layer, sort="max", per_page=8)
        mean = network.mean_map(loaded, image_id, layer)
        sides.append(
            {
                "fp": fp,
                "tiles": _tile_urls(pictures, fp),
                "mean_url": _mean_url(pictures, mean),
                "vmin": mean.vmin,
                "vmax": mean.vmax,
            }
        )
    return {"early_late": sides}


def _filters_context(
    network: NetworkService, pictures: PictureStore, model: str | None, params: FiltersParams
) -> dict[str, Any]:
    view = network.filters(
        model, params.weights, params.layer, params.sort, params.page, params.per_page, params.filter
    )
    return {
        "fv": view,
        "filter_tiles": [(i, pictures.image_url(img), n) for i, img, n in view.tiles],
        "loaded": view.loaded,
    }


@router.get("/network", response_class=HTMLResponse)
def network_page(
    request: Request,
    q: Annotated[FeaturesParams, Query()],
    model: ModelNameDep,
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    pictures: PicturesDep,
) -> HTMLResponse:
    """Summary tree, feature maps of a layer (bars for a layer with no map), early vs late, learned filters."""
    image_id = _default_image(store, q.image_id)
    block = _wanted_block(request, NETWORK_BLOCKS)
    context = _base(store, registry, image_id, model, q.weights)
    q, view_context, call_error = _with_default_call(
        block, q, lambda p: _view_context(network, pictures, p, image_id)
    )
    context.update(view_context)
    context["call_error"] = call_error
    fp: FeaturePage = context["fp"]
    if block in (None, "body"):
        structure = network.structure(fp.loaded, image_id)
        context.update(_early_late_context(network, pictures, model, q.weights, image_id))
        context.update(_filters_context(network, pictures, model, FiltersParams(weights=q.weights)))
        context.update({"tree": structure.tree, "totals": structure.totals, "pictures": None})
    context["loaded"] = fp.loaded
    view = context.get("view")
    url = state_url(
        "/network",
        q,
        model=model,
        image_id=image_id,
        layer=fp.layer,
        depth=None,
        page=fp.page.page,
        **({} if view is not None else {"channel": None, "opacity": None, "vmin": None, "vmax": None}),
    )
    return _page(request, "pages/network.html", block, context, url, 422 if call_error else 200)


def _fragment_or_page(request: Request, model: str, weights: str, image_id: str | None) -> Response | None:
    """These regions are loaded by HTMX only; typed into the address bar they lead to the page they belong to."""
    if is_htmx(request):
        return None
    query = {"model": model, "weights": weights, **({"image_id": image_id} if image_id else {})}
    return RedirectResponse(f"/network?{urlencode(query)}", status_code=303)


@router.get("/network/filters", response_class=HTMLResponse)
def network_filters(
    request: Request,
    params: Annotated[FiltersParams, Query()],
    model: ModelNameDep,
    network: NetworkDep,
    pictures: PicturesDep,
    image_id: str | None = None,
) -> Response:
    """Learned kernels of a conv layer (first conv: colour tiles; later: one filter per input channel)."""
    redirect = _fragment_or_page(request, model, params.weights, image_id)
    if redirect is not None:
        return redirect
    context = _filters_context(network, pictures, model, params)
    context.update({"model": model, "weights": params.weights, "image_id": image_id})
    return render(request, "pages/network.html", context, block="filters")


@router.get("/network/filter", response_class=HTMLResponse)
def network_filter_zoom(
    request: Request,
    network: NetworkDep,
    model: ModelNameDep,
    pictures: PicturesDep,
    layer: Annotated[str, Query(max_length=300)],
    index: Annotated[int, Query(ge=0)],
    weights: Annotated[str, Query(pattern="^(auto|pretrained|untrained)$")] = "auto",
    filter: Annotated[int | None, Query(ge=0)] = None,
    image_id: str | None = None,
) -> Response:
    """One kernel enlarged with its numbers (first conv: output filter ``index``; later: input channel)."""
    redirect = _fragment_or_page(request, model, weights, image_id)
    if redirect is not None:
        return redirect
    zoom = network.filter_zoom(model, weights, layer, index, filter)
    context = {
        "title": zoom.title,
        "pictures": [(c, pictures.image_url(img), values) for c, img, values in zoom.pictures],
        "limit": zoom.limit,
        "loaded": zoom.loaded,
        "first": zoom.first,
    }
    return render(request, "pages/network.html", context, block="filter_zoom")


@router.get("/network/tree", response_class=HTMLResponse)
def network_subtree(
    request: Request,
    network: NetworkDep,
    model: ModelNameDep,
    node: Annotated[str, Query(min_length=1, max_length=300)],
    weights: Annotated[str, Query(pattern="^(auto|pretrained|untrained)$")] = "auto",
    image_id: str | None = None,
) -> Response:
    """The rows of one block of the layer tree (its direct children), fetched when the block is first opened."""
    redirect = _fragment_or_page(request, model, weights, image_id)
    if redirect is not None:
        return redirect
    info = network.tree_node(model, weights, image_id, node)
    return render(request, "pages/network.html", {"nodes": info.children}, block="subtree")


# --- /receptive-fields ------------------------------------------------------------------------------------------


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


def _rf_click_context(
    network: NetworkService, pictures: PictureStore, q: ReceptiveFieldParams, image_id: str | None
) -> dict[str, Any]:
    """Block "click": the clickable channel-mean map of the layer, and the probe of one unit (default: centre)."""
    probe = network.rf_probe(q.model, q.weights, image_id, q.layer, q.y, q.x, q.channel, call=q.call)
    loaded = probe.loaded
    mean = network.mean_map(loaded, image_id, probe.layer.name, call=probe.call)
    shown = probe.net_input.shown
    h, w = shown.shape[:2]
    return {
        "probe": probe,
        "layer": probe.layer.name,
        "rf_layer": probe.layer,
        "map_url": _mean_url(pictures, mean),
        "map_shape": (probe.layer.output_shape or (0, 0, 0)),
        "map_vmin": mean.vmin,
        "map_vmax": mean.vmax,
        "input_url": pictures.image_url(shown),
        "erf_url": _lazy(pictures, probe.recipe(), probe.erf, probe.erf_image),
        "call_shapes": _call_shapes(network.structure(loaded, image_id), probe.layer.name),
        "img_h": h,
        "img_w": w,
        "loaded": loaded,
    }


@router.get("/receptive-fields/table", response_class=HTMLResponse)
def rf_table(
    request: Request,
    network: NetworkDep,
    model: ModelNameDep,
    weights: Annotated[str, Query(pattern="^(auto|pretrained|untrained)$")] = "auto",
    image_id: str | None = None,
) -> Response:
    """Every layer's field, jump and start: fetched when the table is first opened (hundreds of rows)."""
    if not is_htmx(request):
        query = {"model": model, "weights": weights, **({"image_id": image_id} if image_id else {})}
        return RedirectResponse(f"/receptive-fields?{urlencode(query)}", status_code=303)
    _, structure = network.rf_table(model, weights, image_id)
    input_shape = structure.totals.input_shape
    context = {
        "rows": [r for r in layer_rows(structure) if r.rf is not None and r.leaf],
        "input_h": input_shape[-2],
        "input_w": input_shape[-1],
    }
    return render(request, "pages/receptive_fields.html", context, block="rf_table_rows")


@router.get("/receptive-fields", response_class=HTMLResponse)
def receptive_fields_page(
    request: Request,
    q: Annotated[ReceptiveFieldParams, Query()],
    model: ModelNameDep,
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    pictures: PicturesDep,
) -> HTMLResponse:
    """RF table and plot per layer; click a feature map to see a unit's box and its effective RF."""
    image_id = _default_image(store, q.image_id)
    block = _wanted_block(request, RF_BLOCKS)
    loaded, structure = network.rf_table(model, q.weights, image_id)
    context = _base(store, registry, image_id, model, q.weights)
    context["loaded"] = loaded
    grid_layers = network.rf_grid_layers(structure)
    call_error = None
    if grid_layers:
        q, click_context, call_error = _with_default_call(
            block, q, lambda p: _rf_click_context(network, pictures, p, image_id)
        )
        context.update(click_context)
    else:
        context.update({"probe": None, "layer": None})
    context["call_error"] = call_error
    if block in (None, "body"):
        input_shape = structure.totals.input_shape
        context.update(
            {
                "row_count": sum(
                    1 for i in structure.tree.walk() if i.name and i.is_leaf and i.name in structure.rf
                ),
                "plot": _rf_plot(structure, loaded.input_size),
                # The picker lists convolutions and pooling (where the field grows); BatchNorm and ReLU after a
                # convolution see what it sees. Any grid layer can still be probed by URL.
                "grid_layers": [
                    n
                    for n in grid_layers
                    if structure.rf[n].kind in ("conv", "pool") or n == context["layer"]
                ],
                "stack_rows": network.stack_comparison(4, 64),
                "labels": {i.name: i.label for i in structure.tree.walk() if i.name},
                "input_shape": input_shape,
                "input_h": input_shape[-2],
                "input_w": input_shape[-1],
            }
        )
    probe = context["probe"]
    resolved = {"layer": probe.layer.name, "y": probe.y, "x": probe.x} if probe is not None else {}
    url = state_url("/receptive-fields", q, model=model, image_id=image_id, **resolved)
    return _page(request, "pages/receptive_fields.html", block, context, url, 422 if call_error else 200)


# --- /milestones ------------------------------------------------------------------------------------------------


@router.get("/milestones", response_class=HTMLResponse)
def milestones_page(
    request: Request,
    q: Annotated[MilestonesParams, Query()],
    store: ImageStoreDep,
    registry: RegistryDep,
    network: NetworkDep,
    pictures: PicturesDep,
) -> HTMLResponse:
    """The milestone architectures with their facts; compare two on the same image."""
    block = _wanted_block(request, MILESTONE_BLOCKS)
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
        "image_id": q.image_id,
        "model_a": q.model_a,
        "model_b": q.model_b,
        "weights": q.weights,
        "depth": q.depth,
        "sides": None,
    }
    image_id = q.image_id
    if q.model_a and q.model_b:
        image_id = _default_image(store, q.image_id)
        context.update(_compare_context(network, store, pictures, q, image_id))
    url = state_url("/milestones", q, image_id=image_id)
    return _page(request, "pages/milestones.html", block, context, url)


def _compare_context(
    network: NetworkService,
    store: ImageStore,
    pictures: PictureStore,
    q: MilestonesParams,
    image_id: str | None,
) -> dict[str, Any]:
    from app.services.predictions import predict

    sides = []
    for name in (q.model_a, q.model_b):
        loaded, structure, net_input = network.summary(name, q.weights, image_id)
        layer = network.default_layer(structure, q.depth)
        mean = network.mean_map(loaded, image_id, layer)
        fp = network.features(name, q.weights, image_id, layer, sort="max", per_page=6)
        predictions = predict(loaded, store.load(image_id), 5).predictions if image_id else None
        rf = structure.rf.get(layer)
        sides.append(
            {
                "loaded": loaded,
                "totals": structure.totals,
                "layer": layer,
                "layer_index": structure.conv_layers.index(layer) if layer in structure.conv_layers else None,
                "conv_count": len(structure.conv_layers),
                "rf": rf,
                "rf_larger": rf is not None and rf_larger_than_image(rf, net_input),
                "mean_url": _mean_url(pictures, mean),
                "vmin": mean.vmin,
                "vmax": mean.vmax,
                "tiles": _tile_urls(pictures, fp),
                "predictions": predictions,
            }
        )
    return {"sides": sides, "image_id": image_id}
