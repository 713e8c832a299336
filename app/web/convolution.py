"""HTML pages of the convolution lab: /conv (matrix playground), /filters (images), /cost (FC vs conv)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from numpy.typing import NDArray

from app.core.convolution.arithmetic import FLIP_SENTENCE, PADDING_DESCRIPTIONS, PADDING_MODES, format_number
from app.core.imaging.rendering import colormap_lut, encode_png, png_data_uri, signed_limits, to_uint8_image
from app.deps import FormDep, ImageStoreDep, IsHtmx
from app.errors import InvalidInput
from app.services import convolution as svc
from app.web.templating import render

router = APIRouter()

DEFAULT_PRESET = "vertical_edge"


# ------------------------------------------------------------------------------------ view helpers


def _cell_colours(values: NDArray[np.floating], signed: bool = True) -> list[list[dict[str, str]]]:
    """Per-cell background/foreground for a numeric grid (diverging around 0, dark text on light cells)."""
    lut = colormap_lut("rdbu" if signed else "viridis")
    if signed:
        lo, hi = signed_limits(values)
    else:
        lo, hi = (
            float(values.min()),
            float(values.max()) if values.max() > values.min() else float(values.min()) + 1,
        )
    span = hi - lo if hi > lo else 1.0
    out: list[list[dict[str, str]]] = []
    for row in np.atleast_2d(values):
        cells = []
        for v in row:
            t = min(max((float(v) - lo) / span, 0.0), 1.0)
            r, g, b = (int(c) for c in lut[round(t * 255)])
            dark = (0.299 * r + 0.587 * g + 0.114 * b) < 140
            cells.append(
                {"bg": f"rgb({r},{g},{b})", "fg": "#fff" if dark else "#111", "text": format_number(v)}
            )
        out.append(cells)
    return out


def _grid_text(values: NDArray[np.floating]) -> list[list[str]]:
    return [[format_number(v) for v in row] for row in np.atleast_2d(values)]


def _controls_context(
    input_grid: NDArray[np.floating], kernel_grid: NDArray[np.floating], settings: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "in_cells": _grid_text(input_grid),
        "k_cells": _grid_text(kernel_grid),
        "in_rows": input_grid.shape[0],
        "in_cols": input_grid.shape[1],
        "k_rows": kernel_grid.shape[0],
        "k_cols": kernel_grid.shape[1],
        "s": settings,
        "padding_modes": PADDING_MODES,
        "padding_descriptions": PADDING_DESCRIPTIONS,
        "max_grid": svc.MAX_GRID,
        "max_kernel": svc.MAX_PLAYGROUND_KERNEL,
        "presets": svc.list_presets(),
    }


def _result_context(outcome: svc.PlaygroundOutcome, focus: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    res = outcome.result
    oh, ow = res.output.shape
    fr, fc = focus if 0 <= focus[0] < oh and 0 <= focus[1] < ow else (0, 0)
    pad = res.effective_amount
    ph, pw = res.padded.shape[-2], res.padded.shape[-1]
    padded_cells = [
        [
            {
                "text": format_number(res.padded[r, c]),
                "pad": not (pad <= r < ph - pad and pad <= c < pw - pad),
            }
            for c in range(pw)
        ]
        for r in range(ph)
    ]
    steps = [
        {"row": s.row, "col": s.col, "cells": [[pr, pc] for _, pr, pc in s.cells], "products": s.products,
         "text": s.text, "total": s.total}
        for s in outcome.steps
    ]  # fmt: skip
    focus_step = outcome.steps[fr * ow + fc]
    pool_ctx: dict[str, Any] | None = None
    if outcome.pooled is not None:
        winners = {w.winner for w in outcome.windows if w.winner is not None}
        pool_ctx = {
            "kind": outcome.pooled.kind,
            "size": outcome.pooled.size,
            "stride": outcome.pooled.stride,
            "before": [
                [{**cell, "winner": (r, c) in winners} for c, cell in enumerate(row)]
                for r, row in enumerate(_cell_colours(outcome.pool_source))
            ],
            "after": _cell_colours(np.asarray(outcome.pooled.output)),
            "windows": outcome.windows,
        }
    return {
        "res": res,
        "output_cells": _cell_colours(res.output),
        "padded_cells": padded_cells,
        "kernel_cells": _grid_text(res.kernel),
        "steps_json": steps,
        "focus_step": focus_step,
        "focus": (fr, fc),
        "formulas": res.formulas,
        "flip_sentence": FLIP_SENTENCE,
        "relu_cells": _cell_colours(outcome.relu_output) if outcome.relu_output is not None else None,
        "pool": pool_ctx,
        "final_cells": _grid_text(outcome.final),
        "flattened": [format_number(v) for v in outcome.flattened],
        "outcome": outcome,
    }


def _settings_from(p: svc.PlaygroundParams) -> dict[str, Any]:
    return {
        "padding": p.padding,
        "amount": p.amount,
        "stride": p.stride,
        "dilation": p.dilation,
        "flip": p.flip,
        "relu": p.relu,
        "pool": p.pool or "",
        "pool_size": p.pool_size,
        "pool_stride": p.pool_stride or "",
    }


def _int_field(form: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = form.get(name, default)
    if raw in ("", None):
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number", field=name) from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}", field=name)
    return value


def _params_from_form(form: Mapping[str, Any]) -> svc.PlaygroundParams:
    """The playground form -> validated parameters (cells are named in_r_c and k_r_c)."""
    in_rows = _int_field(form, "in_rows", 6, 1, svc.MAX_GRID)
    in_cols = _int_field(form, "in_cols", 6, 1, svc.MAX_GRID)
    k_rows = _int_field(form, "k_rows", 3, 1, svc.MAX_PLAYGROUND_KERNEL)
    k_cols = _int_field(form, "k_cols", 3, 1, svc.MAX_PLAYGROUND_KERNEL)
    stride = _int_field(form, "stride", 1, 0, 8)
    pool = str(form.get("pool") or "") or None
    pool_stride_raw = form.get("pool_stride")
    return svc.validate_playground(
        svc.parse_form_grid(form, "in", in_rows, in_cols),
        svc.parse_form_grid(form, "k", k_rows, k_cols),
        padding=str(form.get("padding", "none")),
        amount=_int_field(form, "amount", 0, 0, 8),
        stride=stride,
        dilation=_int_field(form, "dilation", 1, 1, 4),
        flip=form.get("flip") in ("on", "true", "1"),
        relu=form.get("relu") in ("on", "true", "1"),
        pool=pool,
        pool_size=_int_field(form, "pool_size", 2, 1, 8),
        pool_stride=_int_field(form, "pool_stride", 2, 1, 8) if pool_stride_raw not in (None, "") else None,
    )


def _resize(grid: list[list[float]], rows: int, cols: int) -> NDArray[np.float64]:
    """Keep the top-left of the old grid, fill new cells with 0."""
    out = np.zeros((rows, cols), dtype=np.float64)
    old = np.array(grid, dtype=np.float64)
    r, c = min(rows, old.shape[0]), min(cols, old.shape[1])
    out[:r, :c] = old[:r, :c]
    return out


def _workspace(
    request: Request, params: svc.PlaygroundParams, focus: tuple[int, int], extra: dict[str, Any]
) -> dict[str, Any]:
    ctx = _controls_context(params.input, params.kernel, _settings_from(params))
    ctx.update(extra)
    try:
        ctx.update(_result_context(svc.run_playground(params), focus))
    except InvalidInput as exc:
        ctx["result_error"] = exc.to_dict()["error"]
    return ctx


def _preset_workspace(request: Request, name: str) -> dict[str, Any]:
    p = svc.get_preset(name)
    params = svc.validate_playground(
        p.input.tolist(),
        p.kernel.tolist(),
        padding=p.padding,
        amount=p.amount,
        stride=p.stride,
        dilation=p.dilation,
        flip=p.flip,
        relu=p.relu,
        pool=p.pool,
        pool_size=p.pool_size,
    )
    wrong = {(d.row, d.col) for d in p.differences}
    slide_cells = (
        [[{"text": format_number(v), "wrong": (r, c) in wrong} for c, v in enumerate(row)]
         for r, row in enumerate(p.slide_grid)]
        if p.slide_grid is not None
        else None
    )  # fmt: skip
    return _workspace(
        request, params, p.focus, {"preset": p, "preset_name": p.name, "slide_cells": slide_cells}
    )


# ------------------------------------------------------------------------------------ /conv routes


@router.get("/conv", response_class=HTMLResponse)
def conv_page(request: Request, htmx: IsHtmx, preset: str = DEFAULT_PRESET) -> HTMLResponse:
    """The matrix playground, opened on a lecture preset (the vertical edge by default)."""
    ctx = _preset_workspace(request, preset)
    if htmx:
        return render(request, "partials/conv_workspace.html", ctx)
    return render(request, "pages/conv.html", ctx)


@router.get("/conv/preset", response_class=HTMLResponse)
def conv_preset(request: Request, name: str = Query(DEFAULT_PRESET)) -> HTMLResponse:
    """Load a lecture preset into the editor and compute it."""
    return render(request, "partials/conv_workspace.html", _preset_workspace(request, name))


@router.post("/conv/resize", response_class=HTMLResponse)
def conv_resize(request: Request, form: FormDep) -> HTMLResponse:
    """New grid sizes: keep the cells that still fit, fill the rest with 0, recompute."""
    rows = _int_field(form, "in_rows", 6, 1, svc.MAX_GRID)
    cols = _int_field(form, "in_cols", 6, 1, svc.MAX_GRID)
    k_rows = _int_field(form, "k_rows", 3, 1, svc.MAX_PLAYGROUND_KERNEL)
    k_cols = _int_field(form, "k_cols", 3, 1, svc.MAX_PLAYGROUND_KERNEL)
    old_in = svc.parse_form_grid(form, "in", rows, cols)
    old_k = svc.parse_form_grid(form, "k", k_rows, k_cols)
    base = _params_from_form(form)
    params = svc.PlaygroundParams(
        _resize(old_in, rows, cols),
        _resize(old_k, k_rows, k_cols),
        base.padding,
        base.amount,
        base.stride,
        base.dilation,
        base.flip,
        base.relu,
        base.pool,
        base.pool_size,
        base.pool_stride,
    )
    return render(request, "partials/conv_workspace.html", _workspace(request, params, (0, 0), {}))


@router.post("/conv/result", response_class=HTMLResponse)
def conv_result(request: Request, form: FormDep) -> HTMLResponse:
    """Recompute the output as the grids or settings change (errors name the cell or setting)."""
    params = _params_from_form(form)
    focus = (_int_field(form, "focus_row", 0, 0, 64), _int_field(form, "focus_col", 0, 0, 64))
    return render(request, "partials/conv_result.html", _result_context(svc.run_playground(params), focus))


# --------------------------------------------------------------------------------- /filters routes


def _filter_params_from_form(form: Any) -> tuple[svc.FilterParams, dict[str, Any]]:
    """The filter lab form -> FilterParams, plus the same request as API JSON (for hover values)."""
    image_id = str(form.get("image_id") or "")
    if not image_id:
        raise InvalidInput("pick an image", field="image_id")
    names = [str(n) for n in form.getlist("kernel") if str(n)]
    kernels_in: list[svc.KernelRequest] = [svc.KernelRequest(name=n) for n in names]
    api_kernels: list[dict[str, Any]] = [{"name": n} for n in names]
    mode = str(form.get("mode") or "grey")
    if form.get("custom") in ("on", "true", "1"):
        size = _int_field(form, "ck_size", 3, 1, svc.MAX_FILTER_KERNEL)
        if size % 2 == 0:
            raise InvalidInput("the drawn kernel's size must be odd (1, 3, 5, 7, 9, 11)", field="ck_size")
        grid = svc.parse_form_grid(form, "ck", size, size)
        kernels_in.append(svc.KernelRequest(weights=grid, label="your kernel"))
        api_kernels.append({"weights": grid, "label": "your kernel"})
    if mode == "3d":
        cw = [svc.parse_number(form.get(f"cw_{i}", "1"), f"cw_{i}") for i in range(3)]
        if cw != [1.0, 1.0, 1.0]:
            kernels_in = [svc.KernelRequest(k.name, k.weights, k.label, cw) for k in kernels_in]
            api_kernels = [{**k, "channel_weights": cw} for k in api_kernels]
    if not kernels_in:
        raise InvalidInput("tick at least one kernel (or draw your own)", field="kernel")
    if len(kernels_in) > svc.MAX_KERNELS:
        raise InvalidInput(f"at most {svc.MAX_KERNELS} kernels at once", field="kernel")
    pool = str(form.get("pool") or "") or None
    params = svc.FilterParams(
        image_id=image_id,
        kernels=kernels_in,
        mode=mode if mode in ("grey", "per_channel", "3d") else "grey",
        padding=str(form.get("padding") or "zeros"),
        stride=_int_field(form, "stride", 1, 1, 8),
        flip=form.get("flip") in ("on", "true", "1"),
        relu=form.get("relu") in ("on", "true", "1"),
        pool=pool,
        pool_size=_int_field(form, "pool_size", 2, 1, 16),
        magnitude=form.get("magnitude") in ("on", "true", "1"),
        scale="shared" if form.get("scale") == "shared" else "each",
        max_side=_int_field(form, "max_side", 256, 16, 1024),
        # the page inlines one PNG per map: its limits count that, not a JSON answer
        format="page",
    )
    api = {
        "image_id": image_id,
        "kernels": api_kernels,
        "mode": params.mode,
        "padding": params.padding,
        "stride": params.stride,
        "flip": params.flip,
        "relu": params.relu,
        "pool": params.pool,
        "pool_size": params.pool_size,
        "magnitude": params.magnitude,
        "scale": params.scale,
        "max_side": params.max_side,
        "format": "json",
    }
    return params, api


def _filters_result_context(outcome: svc.FilterOutcome, api: dict[str, Any]) -> dict[str, Any]:
    maps = []
    for m in outcome.maps:
        pic = svc.map_picture(m)
        maps.append({"map": m, "uri": png_data_uri(encode_png(pic)), "stats": m.stats()})
    return {
        "outcome": outcome,
        "maps": maps,
        "source_uri": png_data_uri(encode_png(to_uint8_image(outcome.image))),
        "api_json": json.dumps(api),
        "flat_length": sum(int(m.values.size) for m in outcome.maps),
        "kernels_used": [{"name": k.name, "shape": list(k.weights.shape), "cells": _kernel_text(k.weights)}
                         for k in outcome.kernels],
    }  # fmt: skip


def _kernel_text(w: NDArray[np.floating]) -> list[list[list[str]]]:
    grids = w if w.ndim == 3 else w[None]
    return [_grid_text(g) for g in grids]


@router.get("/filters", response_class=HTMLResponse)
def filters_page(request: Request, store: ImageStoreDep, image_id: str | None = None) -> HTMLResponse:
    """The filter lab: library and drawn kernels on an uploaded or sample image."""
    images = store.list_images()
    chosen = image_id or (images[0].id if images else None)
    ctx: dict[str, Any] = {
        "images": images,
        "image_id": chosen,
        "kernels": svc.list_kernels(),
        "padding_modes": PADDING_MODES,
        "ck_size": 3,
        "ck_cells": [["0", "0", "0"], ["0", "1", "0"], ["0", "0", "0"]],
        "max_filter_kernel": svc.MAX_FILTER_KERNEL,
    }
    if chosen:
        req = svc.FilterParams(image_id=chosen, kernels=[svc.KernelRequest("sobel_x"), svc.KernelRequest("sobel_y")],
                               max_side=256, format="page")  # fmt: skip
        api = {"image_id": chosen, "kernels": [{"name": "sobel_x"}, {"name": "sobel_y"}], "mode": "grey",
               "padding": "zeros", "max_side": 256, "format": "json"}  # fmt: skip
        ctx.update(_filters_result_context(svc.run_filter(store, req), api))
    return render(request, "pages/filters.html", ctx)


@router.post("/filters/run", response_class=HTMLResponse)
def filters_run(request: Request, store: ImageStoreDep, form: FormDep) -> HTMLResponse:
    """Apply the chosen kernels and show the feature maps side by side."""
    params, api = _filter_params_from_form(form)
    if params.mode == "3d" and store.get(params.image_id).channels == 1:
        # The page's R, G, B weights mean nothing for a one-channel image (3-D equals grey there, as the
        # result says); passing them on gave an error naming a field the page does not have.
        params = replace(params, kernels=[replace(k, channel_weights=None) for k in params.kernels])
        api["kernels"] = [
            {k: v for k, v in kern.items() if k != "channel_weights"} for kern in api["kernels"]
        ]
    # A plain def: FastAPI runs it in a worker thread, so decoding, filtering and encoding stay off the loop.
    ctx = _filters_result_context(svc.run_filter(store, params), api)
    return render(request, "partials/filters_result.html", ctx)


@router.get("/filters/kernel-editor", response_class=HTMLResponse)
def filters_kernel_editor(request: Request, ck_size: int = Query(3)) -> HTMLResponse:
    """A blank drawn-kernel grid of an odd size 1..11 (centre 1, so it starts as the identity)."""
    if ck_size < 1 or ck_size > svc.MAX_FILTER_KERNEL or ck_size % 2 == 0:
        raise InvalidInput("the drawn kernel's size must be odd, 1 to 11", field="ck_size")
    cells = [
        ["1" if (r, c) == (ck_size // 2, ck_size // 2) else "0" for c in range(ck_size)]
        for r in range(ck_size)
    ]
    return render(request, "partials/filters_kernel_editor.html", {"ck_size": ck_size, "ck_cells": cells})


# ------------------------------------------------------------------------------------ /cost routes


def _cost_context(
    height: int, width: int, channels: int, fc_outputs: int | None, filters: int, kernel: int, stride: int
) -> dict[str, Any]:
    cmp = svc.cost(height, width, channels, fc_outputs, filters, kernel, stride)
    return {
        "cmp": cmp,
        "lines": cmp.lines(),
        "presets": svc.cost_presets(),
        # fc_outputs echoes what the user typed: left empty it follows the image size (one output per pixel).
        "q": {"height": height, "width": width, "channels": channels, "fc_outputs": fc_outputs or "",
              "filters": filters, "kernel": kernel, "stride": stride},
        # bar lengths on a log scale so both fit on one screen
        "bar_fc": 100.0,
        "bar_conv": max(1.0, 100.0 * np.log10(cmp.conv_multiplications) / np.log10(cmp.fc_multiplications))
        if cmp.fc_multiplications > 1 else 100.0,
    }  # fmt: skip


def _optional_count(text: str, field: str) -> int | None:
    """An empty form field means "the default"; anything else must be a whole number from 1 to 10^10."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 10_000_000_000:
        raise InvalidInput(f"{field} must be a whole number from 1 to 10,000,000,000, or empty.", field=field)
    return int(text)


@router.get("/cost", response_class=HTMLResponse)
def cost_page(
    request: Request,
    htmx: IsHtmx,
    height: int = Query(256, ge=1, le=100_000),
    width: int = Query(256, ge=1, le=100_000),
    channels: int = Query(1, ge=1, le=10_000),
    fc_outputs: str = Query("", max_length=12, description="empty: one output per input pixel"),
    filters: int = Query(1, ge=1, le=100_000),
    kernel: int = Query(3, ge=1, le=1_000),
    stride: int = Query(1, ge=1, le=1_000),
) -> HTMLResponse:
    """The FC-vs-conv calculator, defaulting to the lecture's 256x256 example."""
    ctx = _cost_context(
        height, width, channels, _optional_count(fc_outputs, "fc_outputs"), filters, kernel, stride
    )
    if htmx:
        return render(request, "partials/cost_result.html", ctx)
    return render(request, "pages/cost.html", ctx)
