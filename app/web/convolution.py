"""HTML pages of the convolution lab: /conv (matrix playground), /filters (images), /cost (FC vs conv).

Each page is one template with named blocks (the workspace, the result, the field errors); an HTMX request gets
only the block it swaps. Each form is validated by the same pydantic model as its JSON twin (ConvolveRequest,
FilterRequest, CostQuery): the page's inputs carry the API's dotted field names (`input.1.2`,
`kernels.0.weights.0.1`, `stride`), so an error names the same field on both, and the page says it in words
("Input row 2, column 3: ...") beside that field while the last good result stays in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from app.core.convolution.arithmetic import FLIP_SENTENCE, PADDING_DESCRIPTIONS, PADDING_MODES, format_number
from app.core.imaging.rendering import colormap_lut, encode_png, signed_limits, to_uint8_image
from app.deps import FormDep, ImageStoreDep, PicturesDep
from app.errors import ConvScopeError, InvalidInput, NotFound, OverLimit
from app.schemas.convolution import FORM_CONTEXT, ConvolveRequest, CostQuery, FilterRequest
from app.services import convolution as svc
from app.services.pictures import PictureStore
from app.web.templating import is_htmx, render, render_page_or_block

router = APIRouter()

DEFAULT_PRESET = "vertical_edge"

# ------------------------------------------------------------------------------- forms and their errors


# The deepest field a lab form has is a 3-D kernel cell, kernels.N.weights.D.R.C (6 parts).
MAX_FIELD_DEPTH = 6


def unflatten(items: Iterable[tuple[str, object]], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """Form fields with dotted names -> the nested request a JSON client would send.

    `input.0.1=5` becomes `{"input": [[..., "5"]]}`: numeric keys become lists in index order (so ticked
    checkboxes `kernels.3.name`, `kernels.5.name` become `kernels[0]`, `kernels[1]`). Values stay text (the
    model validates them, laxly); an empty top-level field is left out, so it takes the model's default.
    """
    skip = set(ignore)
    root: dict[str, Any] = {}
    for key, raw in items:
        if key in skip:
            continue
        value = str(raw).strip().replace("\u2212", "-")  # a typed or pasted minus sign
        parts = key.split(".", MAX_FIELD_DEPTH)
        if (len(parts) == 1 and value == "") or len(parts) > MAX_FIELD_DEPTH:
            continue  # empty setting: the default; deeper than any field (kernels.0.weights.2.10.10): not ours
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    # the top level stays a mapping (a stray field named "0" must not turn the whole request into a list)
    return {k: _lists(v) for k, v in root.items()}


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _lists(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


_SETTING_LABELS = {
    "image_id": "Image",
    "max_side": "Work at",
    "kernels": "Kernels",
    "mode": "Colour images",
    "padding": "Padding",
    "amount": "Padding amount",
    "stride": "Stride",
    "dilation": "Dilation",
    "pool": "Pooling",
    "pool_size": "Pool size",
    "pool_stride": "Pool stride",
    "scale": "Colour scale",
    "limits": "Colour limits",
    "fc_outputs": "FC outputs",
    "filters": "Conv filters",
    "kernel": "Kernel",
    "input": "Input",
    "height": "Image height",
    "width": "Image width",
    "channels": "Channels",
    "ck_size": "Kernel size",
}
_CHANNELS = ("R", "G", "B")


def field_label(
    field: str | None, drawn_kernel: int | None = None, labels: Mapping[str, str] | None = None
) -> str:
    """A dotted field as the user sees it: `input.1.2` -> "Input row 2, column 3", `stride` -> "Stride"."""
    if not field:
        return "Request"
    if labels and field in labels:
        return labels[field]
    parts = field.split(".")
    if parts[0] in ("input", "kernel") and len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return f"{parts[0].capitalize()} row {int(parts[1]) + 1}, column {int(parts[2]) + 1}"
    if parts[0] in ("input", "kernel") and len(parts) == 2 and parts[1].isdigit():
        return f"{parts[0].capitalize()} row {int(parts[1]) + 1}"
    if parts[0] == "channel_weights" and len(parts) == 2 and parts[1] in ("0", "1", "2"):
        return f"3-D weight for {_CHANNELS[int(parts[1])]}"
    if parts[0] == "kernels" and len(parts) >= 2 and parts[1].isdigit():
        index = int(parts[1])
        name = "Your kernel" if index == drawn_kernel else f"Kernel {index + 1}"
        cells = parts[3:]
        if len(parts) > 2 and parts[2] == "weights" and len(cells) == 2 and all(c.isdigit() for c in cells):
            return f"{name} row {int(cells[0]) + 1}, column {int(cells[1]) + 1}"
        return name
    return _SETTING_LABELS.get(parts[0], parts[0].replace("_", " ").capitalize())


def _pydantic_message(err: Mapping[str, Any]) -> str:
    """A pydantic error in words a student reads at a glance (the API keeps pydantic's own message)."""
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type", "int_from_float"):
        whole = kind.startswith("int")
        if isinstance(given, str) and not given.strip():
            return "is empty: type a " + ("whole number" if whole else "number")
        shown = str(given)[:20]
        return f"{shown!r} is not a {'whole ' if whole else ''}number"
    if kind == "finite_number":
        return "must be a finite number (not infinity or NaN)"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind == "missing":
        return "is missing"
    if kind in ("too_short", "too_long"):
        return str(err.get("msg", "has the wrong length"))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    return str(err.get("msg", "is not valid"))


# Errors a lab form can cause that belong to one of its fields: shown beside it, the last result kept.
FIELD_ERRORS = (ValidationError, InvalidInput, NotFound, OverLimit)


def field_errors(
    exc: ValidationError | ConvScopeError,
    rename: Mapping[str, str] | None = None,
    drawn_kernel: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """A pydantic or domain error -> `[{field, label, message}]`, fields dotted as in the API's errors.

    A domain error's message is already in words (it names what it refers to), so it is kept as written."""
    out: list[dict[str, str]] = []
    if isinstance(exc, ConvScopeError):
        raw = [(exc.field or "", exc.message)]
    else:
        raw = [(".".join(str(p) for p in e["loc"]), _pydantic_message(e)) for e in exc.errors()]
    seen: set[str] = set()
    for field, message in raw:
        for pattern, repl in (rename or {}).items():
            field = re.sub(pattern, repl, field)
        if field in seen:  # e.g. the same channel weight refused for every kernel
            continue
        seen.add(field)
        out.append({"field": field, "label": field_label(field, drawn_kernel, labels), "message": message})
    return out


def _errors_response(
    request: Request, template: str, errors: list[dict[str, str]], box: str, status_code: int = 422
) -> HTMLResponse:
    """The page's field_errors block (422, or the domain error's status), swapped into the error box instead of
    the result, which stays as it was."""
    ctx = {"errors": errors, "kept": True}
    response = render(request, template, ctx, status_code, block="field_errors")
    response.headers["HX-Retarget"] = f"#{box}"
    response.headers["HX-Reswap"] = "innerHTML"
    return response


def _validate(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """The form through the API's model: the same checks and names, laxly (form fields are text)."""
    return model.model_validate(data, strict=False, context=FORM_CONTEXT)


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


# ------------------------------------------------------------------------------------ /conv


CONV_PAGE = "pages/conv.html"
# Form fields that are the page's own state, not the request's: the cell the step view shows, the grid sizes.
CONV_VIEW_STATE = ("focus_row", "focus_col", "in_rows", "in_cols", "k_rows", "k_cols")


def _controls_context(
    input_cells: list[list[str]], kernel_cells: list[list[str]], settings: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "in_cells": input_cells,
        "k_cells": kernel_cells,
        "in_rows": len(input_cells),
        "in_cols": len(input_cells[0]),
        "k_rows": len(kernel_cells),
        "k_cols": len(kernel_cells[0]),
        "s": settings,
        "padding_modes": PADDING_MODES,
        "padding_descriptions": PADDING_DESCRIPTIONS,
        "max_grid": svc.MAX_GRID,
        "max_kernel": svc.MAX_PLAYGROUND_KERNEL,
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


def _settings_of(req: Mapping[str, Any]) -> dict[str, Any]:
    """The settings controls' values: what was sent, else the model's defaults (one default, the API's)."""
    fields = ConvolveRequest.model_fields
    names = ("padding", "amount", "stride", "dilation", "flip", "relu", "pool", "pool_size", "pool_stride")
    out = {n: req.get(n, fields[n].default) for n in names}
    out["pool"] = out["pool"] or ""
    out["pool_stride"] = "" if out["pool_stride"] is None else out["pool_stride"]
    out["flip"] = out["flip"] in (True, "on", "true", "1")
    out["relu"] = out["relu"] in (True, "on", "true", "1")
    if out["padding"] not in PADDING_DESCRIPTIONS:
        out["padding"] = fields["padding"].default
    return out


def _focus(form: Mapping[str, Any]) -> tuple[int, int]:
    def one(name: str) -> int:
        text = str(form.get(name) or "0")
        return int(text) if text.isdigit() and len(text) < 4 else 0

    return one("focus_row"), one("focus_col")


def _preset_context(name: str) -> dict[str, Any]:
    p = svc.get_preset(name)
    params = svc.PlaygroundParams(
        p.input.astype(np.float64), p.kernel.astype(np.float64), p.padding, p.amount, p.stride, p.dilation,
        p.flip, p.relu, p.pool, p.pool_size,
    )  # fmt: skip
    wrong = {(d.row, d.col) for d in p.differences}
    slide_cells = (
        [[{"text": format_number(v), "wrong": (r, c) in wrong} for c, v in enumerate(row)]
         for r, row in enumerate(p.slide_grid)]
        if p.slide_grid is not None
        else None
    )  # fmt: skip
    settings = {"padding": p.padding, "amount": p.amount, "stride": p.stride, "dilation": p.dilation,
                "flip": p.flip, "relu": p.relu, "pool": p.pool, "pool_size": p.pool_size}  # fmt: skip
    ctx = _controls_context(_grid_text(params.input), _grid_text(params.kernel), _settings_of(settings))
    ctx.update({"preset": p, "preset_name": p.name, "slide_cells": slide_cells})
    ctx.update(_result_context(svc.run_playground(params), p.focus))
    return ctx


@router.get("/conv", response_class=HTMLResponse)
def conv_page(request: Request, preset: str = DEFAULT_PRESET) -> HTMLResponse:
    """The matrix playground, opened on a lecture preset (the vertical edge by default); HTMX gets the workspace."""
    ctx = _preset_context(preset)
    ctx["presets"] = svc.list_presets()
    return render_page_or_block(request, CONV_PAGE, "workspace", ctx)


@router.post("/conv/result", response_class=HTMLResponse)
def conv_result(request: Request, form: FormDep) -> HTMLResponse:
    """Recompute the output as the grids or settings change; an error goes beside its field, not over the result."""
    data = unflatten(form.multi_items(), CONV_VIEW_STATE)
    try:
        body = _validate(ConvolveRequest, data)
        outcome = svc.run_playground(body.params())
    except FIELD_ERRORS as exc:
        return _errors_response(request, CONV_PAGE, field_errors(exc), "conv-errors")
    return render(request, CONV_PAGE, _result_context(outcome, _focus(form)), block="result")


def _resized(grid: Any, rows: int, cols: int) -> list[list[str]]:
    """The top-left of the old grid (as typed, valid or not), new cells 0."""
    old = grid if isinstance(grid, list) else []
    out = [["0"] * cols for _ in range(rows)]
    for r, row in enumerate(old[:rows]):
        if isinstance(row, list):
            for c, v in enumerate(row[:cols]):
                out[r][c] = str(v)
    return out


def _size(form: Mapping[str, Any], name: str, largest: int, default: int) -> int:
    text = str(form.get(name) or "")
    return min(max(int(text), 1), largest) if text.isdigit() and len(text) < 4 else default


@router.post("/conv/resize", response_class=HTMLResponse)
def conv_resize(request: Request, form: FormDep) -> HTMLResponse:
    """New grid sizes (the size menus): keep the cells that still fit, fill the rest with 0, recompute."""
    data = unflatten(form.multi_items(), CONV_VIEW_STATE)
    data["input"] = _resized(
        data.get("input"), _size(form, "in_rows", svc.MAX_GRID, 6), _size(form, "in_cols", svc.MAX_GRID, 6)
    )
    data["kernel"] = _resized(
        data.get("kernel"),
        _size(form, "k_rows", svc.MAX_PLAYGROUND_KERNEL, 3),
        _size(form, "k_cols", svc.MAX_PLAYGROUND_KERNEL, 3),
    )
    ctx = _controls_context(data["input"], data["kernel"], _settings_of(data))
    ctx["presets"] = svc.list_presets()
    try:
        body = _validate(ConvolveRequest, data)
        ctx.update(_result_context(svc.run_playground(body.params())))
    except FIELD_ERRORS as exc:
        ctx["errors"] = field_errors(exc)
    return render(request, CONV_PAGE, ctx, status_code=422 if "errors" in ctx else 200, block="workspace")


# --------------------------------------------------------------------------------- /filters


FILTERS_PAGE = "pages/filters.html"
# The drawn kernel is kernels.0 of the form (used only while "use it" is ticked); library kernels follow it.
DRAWN_KERNEL = 0
DRAWN_LABEL = "your kernel"
FILTERS_VIEW_STATE = ("custom", "ck_size", "channel_weights.0", "channel_weights.1", "channel_weights.2")
# An error about one kernel's channel weights is an error about the page's one set of R, G, B weights.
FILTERS_RENAME = {r"^kernels\.\d+\.channel_weights\.(\d+)$": r"channel_weights.\1"}


def _filters_request(form: Any, channels: int | None) -> dict[str, Any]:
    """The lab's form -> a FilterRequest body (the API's), with the drawn kernel and R, G, B weights folded in."""
    use_drawn = form.get("custom") in ("on", "true", "1")
    items = [
        (k, v) for k, v in form.multi_items() if use_drawn or not k.startswith(f"kernels.{DRAWN_KERNEL}.")
    ]
    data = unflatten(items, FILTERS_VIEW_STATE)
    kernels = data.get("kernels")
    if isinstance(kernels, list):
        for k in kernels:
            if isinstance(k, dict) and "weights" in k and "name" not in k:
                k.setdefault("label", DRAWN_LABEL)
        weights = [str(form.get(f"channel_weights.{i}") or "1").strip() for i in range(3)]
        # R, G, B weights mean something only for a 3-D kernel on a colour image (greyscale: 3-D equals grey).
        if data.get("mode") == "3d" and channels != 1 and weights != ["1", "1", "1"]:
            for k in kernels:
                if isinstance(k, dict):
                    k["channel_weights"] = weights
    data["format"] = "json"
    return data


def _filters_result_context(
    outcome: svc.FilterOutcome, body: FilterRequest, pictures: PictureStore
) -> dict[str, Any]:
    maps = []
    for m in outcome.maps:
        recipe = f"filter-map:{m.cmap}:{m.vmin!r}:{m.vmax!r}"
        url = pictures.lazy_url(recipe, m.values, lambda m=m: encode_png(svc.map_picture(m)))  # type: ignore[misc]
        maps.append({"map": m, "url": url, "stats": m.stats()})
    image = outcome.image
    source_url = pictures.lazy_url("filter-source", image, lambda: encode_png(to_uint8_image(image)))
    return {
        "outcome": outcome,
        "maps": maps,
        "source_url": source_url,
        # the same request for /api/v1/filter: filters.js fetches one map's numbers for the hover readout
        "api_json": json.dumps(body.model_dump(mode="json", exclude_defaults=True) | {"format": "json"}),
        "flat_length": sum(int(m.values.size) for m in outcome.maps),
        "kernels_used": [{"name": k.name, "shape": list(k.weights.shape), "cells": _kernel_text(k.weights)}
                         for k in outcome.kernels],
    }  # fmt: skip


def _kernel_text(w: NDArray[np.floating]) -> list[list[list[str]]]:
    grids = w if w.ndim == 3 else w[None]
    return [_grid_text(g) for g in grids]


def _drawn_cells(size: int) -> list[list[str]]:
    """A drawn-kernel grid of odd size with 1 in the centre (the identity)."""
    return [["1" if (r, c) == (size // 2, size // 2) else "0" for c in range(size)] for r in range(size)]


@router.get("/filters", response_class=HTMLResponse)
def filters_page(
    request: Request, store: ImageStoreDep, pictures: PicturesDep, image_id: str | None = None
) -> HTMLResponse:
    """The filter lab: library and drawn kernels on an uploaded or sample image (Sobel x and y to start)."""
    images = store.list_images()
    chosen = image_id or (images[0].id if images else None)
    first = FilterRequest.model_validate(
        {"image_id": chosen or "", "kernels": [{"name": "sobel_x"}, {"name": "sobel_y"}], "max_side": 256}
    )
    ctx: dict[str, Any] = {
        "images": images,
        "image_id": chosen,
        "kernels": svc.list_kernels(),
        "req": first,
        "ticked": [k.name for k in first.kernels],
        "padding_modes": PADDING_MODES,
        "ck_size": 3,
        "ck_cells": _drawn_cells(3),
        "drawn": DRAWN_KERNEL,
        "max_filter_kernel": svc.MAX_FILTER_KERNEL,
    }
    if chosen:
        ctx.update(_filters_result_context(svc.run_filter(store, first.params("page")), first, pictures))
    return render(request, FILTERS_PAGE, ctx)


@router.post("/filters/run", response_class=HTMLResponse)
def filters_run(request: Request, store: ImageStoreDep, pictures: PicturesDep, form: FormDep) -> HTMLResponse:
    """Apply the chosen kernels and show the feature maps side by side; errors go beside their fields."""
    image_id = str(form.get("image_id") or "")
    try:
        channels = store.get(image_id).channels if image_id else None
        body = _validate(FilterRequest, _filters_request(form, channels))
        # A plain def: FastAPI runs it in a worker thread, so decoding, filtering and encoding stay off the loop.
        outcome = svc.run_filter(store, body.params("page"))
    except FIELD_ERRORS as exc:
        errors = field_errors(exc, FILTERS_RENAME, DRAWN_KERNEL if form.get("custom") else None)
        for e in errors:
            if e["field"] == "kernels" and not any(k.startswith("kernels.") for k in form):
                e["message"] = "tick at least one kernel (or draw your own and tick “use it”)"
        status = exc.status_code if isinstance(exc, ConvScopeError) else 422
        return _errors_response(request, FILTERS_PAGE, errors, "filters-errors", status)
    return render(request, FILTERS_PAGE, _filters_result_context(outcome, body, pictures), block="result")


@router.get("/filters/kernel-editor", response_class=HTMLResponse)
def filters_kernel_editor(
    request: Request, ck_size: int = Query(3, ge=1, le=svc.MAX_FILTER_KERNEL)
) -> HTMLResponse:
    """A drawn-kernel grid of an odd size 1..11 (centre 1, so it starts as the identity)."""
    if ck_size % 2 == 0:
        raise InvalidInput("the drawn kernel's size must be odd, 1 to 11", field="ck_size")
    ctx = {"ck_size": ck_size, "ck_cells": _drawn_cells(ck_size), "drawn": DRAWN_KERNEL}
    return render(request, FILTERS_PAGE, ctx, block="kernel_editor")


# ------------------------------------------------------------------------------------ /cost


COST_PAGE = "pages/cost.html"
# The calculator's words for its fields (the playground's `kernel` is a grid, this one is a size).
COST_LABELS = {"kernel": "Kernel size", "filters": "Conv filters", "fc_outputs": "FC outputs"}


def _cost_context(query: CostQuery) -> dict[str, Any]:
    cmp = query.compare()
    longest = max(cmp.fc_multiplications, cmp.conv_multiplications)
    return {
        "cmp": cmp,
        "lines": cmp.lines(),
        # Linear bars, to scale: the convolution's bar is a hairline beside the FC layer's, which is the point.
        "bar_fc": 100.0 * cmp.fc_multiplications / longest,
        "bar_conv": 100.0 * cmp.conv_multiplications / longest,
    }


@router.get("/cost", response_class=HTMLResponse)
def cost_page(request: Request) -> HTMLResponse:
    """The FC-vs-conv calculator (GET /api/v1/cost's query, validated by the same CostQuery), defaulting to the
    lecture's 256x256 example. HTMX gets the result block; an error goes beside its field."""
    raw = dict(request.query_params)
    ctx: dict[str, Any] = {
        "presets": svc.cost_presets(),
        "q": {**CostQuery.model_validate({}).model_dump(), **raw},
    }
    ctx["q"]["fc_outputs"] = raw.get("fc_outputs", "")
    try:
        query = CostQuery.model_validate(raw)
        ctx.update(_cost_context(query))
    except FIELD_ERRORS as exc:
        errors = field_errors(exc, labels=COST_LABELS)
        if is_htmx(request):
            return _errors_response(request, COST_PAGE, errors, "cost-errors")
        ctx["errors"] = errors
        return render(request, COST_PAGE, ctx, status_code=422)
    ctx["placeholder_outputs"] = query.height * query.width
    return render_page_or_block(request, COST_PAGE, "result", ctx)
