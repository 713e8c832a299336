"""The explanation pages: /explain, /occlusion (polling job partial, cancel, click-to-hide), /compare."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import colormaps
from PIL import Image

SMALL_MODELS = ("nodule-cnn", "digit-cnn", "squeezenet1_1")
HX = {"HX-Request": "true"}


@pytest.fixture
def model_name(registry: Any) -> str:
    names = set(registry.names())
    return next(m for m in SMALL_MODELS if m in names)


def _poll_url(html: str) -> str | None:
    match = re.search(r'hx-get="([^"]+)"\s+hx-trigger="every 500ms"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def _poll_until_done(client: TestClient, html: str, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    url = _poll_url(html)
    while url is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        html = client.get(url, headers=HX).text
        url = _poll_url(html) or None
    return html


def _shown_image(client: TestClient, html: str, css_class: str) -> np.ndarray:
    """The (H, W, 3) picture an <img class="... css_class ..."> shows, fetched from its /pictures/ URL."""
    found = re.search(rf'<img class="[^"]*\b{re.escape(css_class)}\b[^"]*" src="([^"]+)"', html)
    assert found, f"no <img> of class {css_class}"
    src = found.group(1).replace("&amp;", "&")
    assert src.startswith("/pictures/"), src[:40]  # by URL, never inlined (issue 10, item 2)
    response = client.get(src)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def _matplotlib_table(name: str) -> np.ndarray:
    """The oracle: matplotlib's own 256 colours of a map, as uint8."""
    return np.round(colormaps[name](np.arange(256))[:, :3] * 255).astype(int)


def _distance_to_cmap(rgb: np.ndarray, name: str) -> np.ndarray:
    """For every pixel, the L1 distance to the nearest colour of the map (0 = a colour of the map)."""
    pixels = rgb.reshape(-1, 3).astype(int)
    return np.abs(pixels[:, None, :] - _matplotlib_table(name)[None]).sum(2).min(1)


def test_explain_page_without_image(client: TestClient, model_name: str) -> None:
    r = client.get("/explain", params={"model": model_name})
    assert r.status_code == 200
    html = r.text
    assert "<form" in html and 'name="method"' in html and 'name="layer"' in html
    assert "(default)" in html and "last convolutional block" in html
    assert '<datalist id="explain-categories">' in html
    for cmap in ("viridis", "magma", "inferno"):
        assert f'value="{cmap}"' in html
    assert 'name="opacity"' in html and 'value="raw"' in html and 'value="feature"' in html


def test_explain_page_with_result(client: TestClient, sample_image_id: str, model_name: str) -> None:
    r = client.get("/explain", params={"image_id": sample_image_id, "model": model_name, "k": 3})
    assert r.status_code == 200
    html = r.text
    assert "cam-result" in html and 'data-cmap="viridis"' in html
    heat = _shown_image(client, html, "cam-heatmap")
    overlay = _shown_image(client, html, "cam-overlay")
    # Upsampled to the input's size (the caption says so); every heat-map pixel is a viridis colour, and a
    # normalised map reaches both ends of the scale.
    assert re.search(rf"heat map, {heat.shape[0]}×{heat.shape[1]} values \(upsampled\)", html)
    assert heat.shape == overlay.shape
    distance = _distance_to_cmap(heat, "viridis")
    assert distance.max() <= 2
    ends = _matplotlib_table("viridis")[[0, -1]]
    for end in ends:
        assert (np.abs(heat.reshape(-1, 3).astype(int) - end).sum(1) <= 2).any()
    # The overlay is a blend: neither the bare heat map nor free of it.
    assert not np.array_equal(overlay, heat) and _distance_to_cmap(overlay, "viridis").max() > 2
    assert re.search(r'<ul class="bars topk">', html)
    assert r.headers["vary"] == "HX-Request"


def test_vision_transformer_pages_say_why_there_is_no_cam(client: TestClient, sample_image_id: str) -> None:
    for page in ("/explain", "/compare"):
        r = client.get(
            page, params={"image_id": sample_image_id, "model": "vit_b_32", "weights": "untrained"}
        )
        assert r.status_code == 200, r.text
        assert 'class="error-box cam-unsupported"' in r.text and "vision transformer" in r.text
        assert "cam-result" not in r.text and 'name="model"' in r.text


def test_explain_partial_options(client: TestClient, gray_image_id: str, model_name: str) -> None:
    params = {
        "image_id": gray_image_id,
        "model": model_name,
        "weights": "untrained",
        "method": "eigencam",
        "resolution": "feature",
        "normalise": "raw",
        "cmap": "magma",
        "target": "1 · whatever",
        "opacity": 0.8,
    }
    r = client.get("/explain", params=params, headers=HX)
    assert r.status_code == 200
    html = r.text
    assert "<html" not in html  # a partial
    assert "UNTRAINED" in html
    assert 'data-cmap="magma"' in html and "raw map value" in html
    assert "#1</span>" in html  # the typed class is the explained one
    # resolution=feature: the heat map has the layer's own grid, as many values as the feature maps have cells.
    grid = re.search(r"channels of (\d+)×(\d+)", html)
    assert grid, html
    assert f"heat map, {grid.group(1)}×{grid.group(2)} values (the layer's own grid)" in html
    assert _distance_to_cmap(_shown_image(client, html, "cam-heatmap"), "magma").max() <= 2


def test_explain_target_by_name_and_errors(
    client: TestClient, sample_image_id: str, model_name: str, registry: Any
) -> None:
    label = registry.get(model_name).categories[0]
    ok = client.get(
        "/explain", params={"image_id": sample_image_id, "model": model_name, "target": label}, headers=HX
    )
    assert ok.status_code == 200 and "#0</span>" in ok.text
    bad = client.get(
        "/explain",
        params={"image_id": sample_image_id, "model": model_name, "target": "no such class"},
        headers=HX,
    )
    # The error goes next to the target box only (HX-Retarget to its slot): the last map stays on the page.
    assert bad.status_code == 422 and bad.headers["HX-Retarget"] == "#explain-error-target"
    assert bad.headers["HX-Push-Url"] == "false"
    assert 'data-field="target"' in bad.text and "no such class" in bad.text and "cam-result" not in bad.text
    for page in ("/explain", "/compare"):
        params = {"image_id": sample_image_id, "model": model_name, "target": "no such class"}
        full = client.get(page, params=params)
        assert full.status_code == 422 and 'name="model"' in full.text
        slot = re.search(
            r'<span class="field-error" id="[a-z]+-error-target"[^>]*>(.*?)</span></span>', full.text
        )
        assert slot and 'data-field="target"' in slot.group(1) and "no such class" in slot.group(1)
    bad_method = client.get("/explain", params={"model": model_name, "method": "jet"}, headers=HX)
    assert bad_method.status_code == 422 and "gradcam" in bad_method.text
    assert bad_method.headers["HX-Retarget"] == "#explain-error-method"
    # A layer from another model falls back to the default, with a note (the model picker changed).
    other = client.get(
        "/explain", params={"image_id": sample_image_id, "model": model_name, "layer": "layer4.1"}, headers=HX
    )
    assert other.status_code == 200 and "Showing the default layer" in other.text


def test_slow_cam_polls_then_shows_the_map(client: TestClient, sample_image_id: str, model_name: str) -> None:
    layers = client.get(
        "/api/v1/explain/layers", params={"image_id": sample_image_id, "model": model_name}
    ).json()
    small = min(layers["layers"], key=lambda info: info["shape"][0])["name"]
    r = client.get(
        "/explain",
        params={"image_id": sample_image_id, "model": model_name, "method": "ablationcam", "layer": small},
        headers=HX,
    )
    assert r.status_code == 200
    assert 'hx-trigger="every 500ms"' in r.text and "<progress" in r.text and "Cancel" in r.text
    final = _poll_until_done(client, r.text)
    assert 'hx-trigger="every 500ms"' not in final  # polling stopped
    assert "cam-result" in final and 'class="colorbar"' in final


def test_occlusion_page_job_and_patch(
    client: TestClient, sample_image_id: str, model_name: str, registry: Any
) -> None:
    page = client.get("/occlusion", params={"image_id": sample_image_id, "model": model_name})
    assert page.status_code == 200
    html = page.text
    assert 'id="occlusion-image"' in html and "/static/js/explain.js" in html
    assert 'name="window"' in html and 'name="stride"' in html and 'name="baseline"' in html
    assert "Cancel" not in html
    size = min(registry.get(model_name).input_size)
    started = client.post(
        "/occlusion/run",
        data={
            "image_id": sample_image_id,
            "model": model_name,
            "window": str(size // 4),
            "stride": str(size // 8),
            "baseline": "mean",
            "progressive": "on",
        },
        headers=HX,
    )
    assert started.status_code == 200
    assert 'hx-trigger="every 500ms"' in started.text and "Cancel" in started.text
    final = _poll_until_done(client, started.text)
    assert "occlusion-result" in final and 'data-cmap="rdbu"' in final
    assert 'hx-trigger="every 500ms"' not in final
    patch = client.get(
        "/occlusion/patch",
        params={
            "image_id": sample_image_id,
            "model": model_name,
            "y": size // 2,
            "x": size // 2,
            "window": size // 4,
        },
        headers=HX,
    )
    assert patch.status_code == 200 and "after hiding" in patch.text and "→" in patch.text


def test_occlusion_cancel_button(
    client: TestClient, sample_image_id: str, model_name: str, hold_job_workers: Any
) -> None:
    """Cancelled while queued behind workers that cannot finish, so the click cannot lose a race to the job."""
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    release, blockers = hold_job_workers(jobs)
    try:
        started = client.post(
            "/occlusion/run",
            data={"image_id": sample_image_id, "model": model_name, "window": "4", "stride": "2"},
            headers=HX,
        )
        job_id = re.search(r'data-job-id="([0-9a-f]+)"', started.text)
        assert job_id
        cancelled = client.post(f"/occlusion/job/{job_id.group(1)}/cancel", headers=HX)
        assert cancelled.status_code == 200
        assert 'data-status="cancelled"' in cancelled.text
    finally:
        release.set()
    for blocker in blockers:
        assert jobs.wait(blocker.id, timeout=60).status == "done"
    final = _poll_until_done(client, cancelled.text, timeout=120)
    assert 'data-status="cancelled"' in final and "Cancelled" in final
    assert jobs.get(job_id.group(1)).status == "cancelled" and jobs.get(job_id.group(1)).result is None


def test_occlusion_run_needs_an_image(client: TestClient, model_name: str) -> None:
    r = client.post("/occlusion/run", data={"model": model_name}, headers=HX)
    assert r.status_code == 422 and "Pick an image" in r.text


def test_compare_page(client: TestClient, sample_image_id: str, model_name: str) -> None:
    r = client.get(
        "/compare",
        params=[
            ("image_id", sample_image_id),
            ("model", model_name),
            ("methods", "gradcam"),
            ("methods", "layercam"),
            ("steps", "4"),
        ],
    )
    assert r.status_code == 200
    html = r.text
    assert html.count('class="compare-tile') == 4  # input + 2 methods + random
    assert "Random baseline" in html and "Deletion AUC" in html and "Insertion AUC" in html
    assert "shared scale" in html and 'class="colorbar"' in html
    empty = client.get("/compare", params={"model": model_name})
    assert empty.status_code == 200 and 'type="checkbox" name="methods"' in empty.text


def test_compare_page_with_a_slow_method_polls(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    layers = client.get(
        "/api/v1/explain/layers", params={"image_id": sample_image_id, "model": model_name}
    ).json()
    small = min(layers["layers"], key=lambda info: info["shape"][0])["name"]
    r = client.get(
        "/compare",
        params=[
            ("image_id", sample_image_id),
            ("model", model_name),
            ("methods", "ablationcam"),
            ("layer", small),
            ("steps", "4"),
        ],
        headers=HX,
    )
    assert r.status_code == 200 and 'hx-trigger="every 500ms"' in r.text
    final = _poll_until_done(client, r.text)
    assert "compare-result" in final and "Ablation-CAM" in final and "Random baseline" in final


def test_progressive_caption_reads_as_english() -> None:
    from types import SimpleNamespace

    from app.web.templating import get_templates

    job = SimpleNamespace(
        id="j1",
        status="running",
        ended=False,
        progress=0.3,
        error=None,
        partial=SimpleNamespace(step=2, fraction=0.27),
    )
    html = (
        get_templates()
        .get_template("partials/explain_job.html")
        .render(
            job=job,
            poll_url="/p",
            cancel_url="/c",
            job_page="occlusion",
            partial_uri="/pictures/0.png",
            vmin=-1.0,
            vmax=1.0,
        )
    )
    assert "one window in 2 along each axis evaluated (27% of them)" in html
    assert "2th" not in html


def test_occlusion_page_shows_the_estimate_and_the_refusal(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    page = client.get("/occlusion", params={"image_id": sample_image_id, "model": model_name, "window": "8"})
    assert page.status_code == 200
    found = re.search(r'data-forward-passes="(\d+)"', page.text)
    assert found and int(found.group(1)) > 2 and "forward passes, about" in page.text
    client.app.state.jobs.max_seconds = 1e-9  # type: ignore[attr-defined]
    refused = client.post(
        "/occlusion/run",
        data={"image_id": sample_image_id, "model": model_name, "window": "8", "stride": "4"},
        headers=HX,
    )
    # The error partial goes where the job would be, with the estimate and the limit's name.
    assert refused.status_code == 422
    assert 'data-code="over_limit"' in refused.text and "max_job_seconds" in refused.text
    assert "forward passes" in refused.text and "would take about" in refused.text


def test_slow_cam_page_shows_a_full_queue(client: TestClient, sample_image_id: str, model_name: str) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    jobs.max_queued = 0
    r = client.get(
        "/explain",
        params={"image_id": sample_image_id, "model": model_name, "method": "scorecam"},
        headers=HX,
    )
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "max_queued_jobs" in r.text and 'name="layer"' in r.text  # the layer picker stays


# --- Idempotent starts (issue 9 follow-up): opening or refreshing a page follows its running job ----------------


def _job_id(html: str) -> str:
    match = re.search(
        r'class="card job [^"]*" id="job-([0-9a-f]+)"', html
    )  # the progress card, not a Busy list
    assert match, html[:2000]
    return match.group(1)


def test_reloading_a_page_follows_its_job_and_busy_offers_cancel(
    client: TestClient, sample_image_id: str, model_name: str, hold_job_workers: Any
) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    jobs.max_per_client = 3
    # Another client's jobs hold every worker: what the pages start stays queued while the test looks.
    release, _ = hold_job_workers(jobs)
    layers = client.get(
        "/api/v1/explain/layers", params={"image_id": sample_image_id, "model": model_name}
    ).json()
    small = min(layers["layers"], key=lambda info: info["shape"][0])["name"]
    compare = [("image_id", sample_image_id), ("model", model_name), ("methods", "ablationcam")]
    compare += [("layer", small), ("steps", "4")]
    explain = {"image_id": sample_image_id, "model": model_name, "method": "scorecam", "layer": small}
    run = {"image_id": sample_image_id, "model": model_name, "window": "8", "stride": "4"}
    try:
        pages = [client.get("/compare", params=compare) for _ in range(4)]  # the QA report's four GETs
        assert [p.status_code for p in pages] == [200] * 4
        assert len({_job_id(p.text) for p in pages}) == 1
        assert len({_job_id(client.get("/explain", params=explain, headers=HX).text) for _ in range(2)}) == 1
        assert len({_job_id(client.post("/occlusion/run", data=run, headers=HX).text) for _ in range(2)}) == 1
        mine = [j for j in jobs.active() if j.client != "someone-else"]
        assert sorted(j.kind for j in mine) == ["cam", "compare", "occlusion"]
        # The share of three is used: other work is refused with each job named and a Cancel button for it.
        busy = client.get("/compare", params=[*compare[:-1], ("steps", "5")], headers=HX)
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert "a slow CAM (/explain)" in busy.text and "a method comparison (/compare)" in busy.text
        for job in mine:
            assert f'data-job-id="{job.id}"' in busy.text
        cancel = re.search(r'hx-post="(/compare/job/[0-9a-f]+/cancel)"', busy.text)
        assert cancel
        assert 'data-status="cancelled"' in client.post(cancel.group(1), headers=HX).text
        # With that room the other comparison starts; the old one, ended, is not reused by a reload.
        assert client.get("/compare", params=[*compare[:-1], ("steps", "5")], headers=HX).status_code == 200
        jobs.max_per_client = 4
        reloaded = client.get("/compare", params=compare, headers=HX)
        assert reloaded.status_code == 200 and _job_id(reloaded.text) != _job_id(pages[0].text)
    finally:
        release.set()
        for job in jobs.active():
            jobs.cancel(job.id)


# --- Issue 10: pictures by URL, one request model, history-safe URLs, the score explained ------------------------


def _pictures(html: str) -> list[str]:
    return [src.replace("&amp;", "&") for src in re.findall(r'<img [^>]*src="([^"]+)"', html)]


@pytest.mark.parametrize("htmx", [False, True])
def test_pages_show_pictures_by_url_and_stay_small(
    client: TestClient, sample_image_id: str, model_name: str, htmx: bool
) -> None:
    """No data URI on /explain, /compare, /occlusion (page or block); every picture is fetchable; < 100 KB."""
    headers = HX if htmx else {}
    pages = {
        "/explain": [("image_id", sample_image_id), ("model", model_name)],
        "/compare": [("image_id", sample_image_id), ("model", model_name), ("protocol", "convscope")],
        "/occlusion": [("image_id", sample_image_id), ("model", model_name)],
    }
    for path, params in pages.items():
        r = client.get(path, params=params, headers=headers)
        assert r.status_code == 200, (path, r.text[:500])
        assert "data:image" not in r.text, path
        assert len(r.content) < 100_000, (path, len(r.content))
        pics = [src for src in _pictures(r.text) if src.startswith("/pictures/")]
        assert pics, path
        for src in pics:
            got = client.get(src)
            assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n", src
            assert "immutable" in got.headers["cache-control"]
    patch = client.get(
        "/occlusion/patch",
        params={"image_id": sample_image_id, "model": model_name, "y": 10, "x": 10},
        headers=HX,
    )
    assert patch.status_code == 200 and "data:image" not in patch.text and _pictures(patch.text)


def test_job_and_action_urls_never_land_in_history_and_render_a_page_if_opened(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    page = client.get("/occlusion", params={"model": model_name}).text
    run = re.search(r'<button[^>]*id="occlusion-run"[^>]*>', page)
    assert run and 'hx-push-url="false"' in run.group(0)
    # Opened directly (reload, bookmark, an old history entry): a redirect to the page of the same view.
    for url, expected in (
        ("/occlusion/run?model=x", "/occlusion?model=x"),
        ("/explain/job/abc?model=x&method=scorecam", "/explain?model=x&method=scorecam"),
        ("/compare/job/abc?methods=gradcam", "/compare?methods=gradcam"),
        ("/occlusion/job/abc", "/occlusion"),
        (f"/occlusion/patch?image_id={sample_image_id}&y=3&x=4", f"/occlusion?image_id={sample_image_id}"),
    ):
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == expected, url
    followed = client.get(f"/occlusion/run?model={model_name}")
    assert followed.status_code == 200 and "<html" in followed.text and 'id="occlusion-form"' in followed.text
    # A history restore (htmx asks again with HX-Request) gets the whole page, not a block.
    restore = client.get(
        "/explain", params={"model": model_name}, headers={**HX, "HX-History-Restore-Request": "true"}
    )
    assert "<html" in restore.text and 'id="explain-form"' in restore.text
    # The polling card and its Cancel button never push a URL (they sit inside a form that does).
    started = client.get(
        "/explain",
        params={"image_id": sample_image_id, "model": model_name, "method": "scorecam"},
        headers=HX,
    )
    card = re.search(r'<div class="card job[^>]*>', started.text)
    assert card and 'hx-push-url="false"' in card.group(0)
    cancel = re.search(r"<button[^>]*>Cancel</button>", started.text)
    assert cancel and 'hx-push-url="false"' in cancel.group(0)
    client.app.state.jobs.cancel(_job_id(started.text))  # type: ignore[attr-defined]


def test_explain_controls_push_replace_and_debounce(client: TestClient, model_name: str) -> None:
    html = client.get("/explain", params={"model": model_name}).text
    form = re.search(r"<form id=\"explain-form\"[^>]*>", html)
    assert form
    # The form submits (Enter in the target box: one entry); discrete choices push; the target box has no change
    # trigger of its own, which made Enter send two requests and two entries.
    assert 'hx-trigger="submit, change from:select[name=image_id]' in form.group(0)
    assert "name=target" not in form.group(0) and 'hx-trigger="submit, change"' not in form.group(0)
    method = re.search(r'<select name="method"[^>]*>', html)
    slider = re.search(r'<input type="range"[^>]*>', html)
    assert method and slider
    for control in (method.group(0), slider.group(0)):
        # "unset", not "false": htmx reads hx-push-url first, and "false" there would also cancel the replace.
        assert 'hx-push-url="unset"' in control and 'hx-replace-url="true"' in control
        assert "delay:" in control
    assert 'name="opacity"' in slider.group(0) and "alpha" not in html
    assert 'id="explain-opacity-value"' in html


def test_a_layer_without_a_spatial_map_is_named_as_such(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    r = client.get(
        "/explain", params={"image_id": sample_image_id, "model": model_name, "layer": "classifier"}
    )
    assert r.status_code == 200
    note = re.search(r'<p class="note note-warn layer-note">(.*?)</p>', r.text, re.S)
    assert note, r.text[:3000]
    text = note.group(1)
    assert "has no spatial map" in text and "is not a layer" not in text
    assert "(default: " in text and "Showing the default layer" in text
    api = client.post(
        "/api/v1/explain/cam",
        json={"image_id": sample_image_id, "model": model_name, "layer": "classifier", "format": "json"},
    )
    assert api.status_code == 422 and api.json()["error"]["field"] == "layer"
    assert "has no spatial map" in api.json()["error"]["message"]


def test_one_field_one_name_one_default_one_spelling(
    client: TestClient, sample_image_id: str, model_name: str, registry: Any
) -> None:
    from app.schemas.explain import CompareRequest, PatchRequest
    from app.services import explain as svc

    # Compare steps: one default, the page's field shows it, the API's model has it.
    page = client.get("/compare", params={"model": model_name}).text
    steps = re.search(r'<input type="number" name="steps" value="(\d+)"', page)
    assert (
        steps
        and int(steps.group(1)) == CompareRequest.model_fields["steps"].default == svc.DEFAULT_STEPS == 16
    )
    # The patch window: the occlusion map's window by default, on the page, in the API and in the service.
    loaded = registry.get(model_name)
    window, _ = svc.occlusion_defaults(loaded.input_size)
    occ = client.get("/occlusion", params={"model": model_name}).text
    assert re.search(rf'name="window" value="{window}"', occ)
    assert PatchRequest.model_fields["window"].default is None
    api = client.post(
        "/api/v1/explain/occlusion/patch",
        json={"image_id": sample_image_id, "model": model_name, "y": 5, "x": 5},
    )
    assert api.status_code == 200 and api.json()["window"] == window
    box = api.json()["box"]
    assert box[2] - box[0] == window
    # A bad value: the same dotted field name from the page (next to the field) and from the API.
    for path, params, body, field in (
        ("/explain", {"opacity": "2"}, {"opacity": 2.0}, "opacity"),
        ("/explain", {"cmap": "jet"}, {"cmap": "jet"}, "cmap"),
        ("/compare", {"steps": "2"}, {"steps": 2}, "steps"),
    ):
        r = client.get(path, params={"model": model_name, "image_id": sample_image_id, **params}, headers=HX)
        page_name = path.strip("/")
        assert r.status_code == 422 and r.headers["HX-Retarget"] == f"#{page_name}-error-{field}", (
            path,
            field,
        )
        assert f'data-field="{field}"' in r.text
        full = client.get(path, params={"model": model_name, **params})
        assert full.status_code == 422 and 'id="' + page_name + '-form"' in full.text
        api_path = "/api/v1/explain/cam" if path == "/explain" else "/api/v1/explain/compare"
        j = client.post(api_path, json={"image_id": sample_image_id, "model": model_name, **body})
        assert j.status_code == 422 and j.json()["error"]["field"] == field, j.json()


def test_saturated_probabilities_are_explained_through_the_logit(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    """The nodule CNN sits at p = 1.000: hiding a patch barely moves p, but it moves the logit; say which is shown."""
    api = client.post(
        "/api/v1/explain/occlusion/patch",
        json={"image_id": sample_image_id, "model": model_name, "y": 30, "x": 30, "window": 20},
    ).json()
    top = api["before"][0]["probability"]
    expected = "logit" if top >= 0.99 else "probability"
    assert api["score"] == expected
    prob = client.post(
        "/api/v1/explain/occlusion/patch",
        json={
            "image_id": sample_image_id,
            "model": model_name,
            "y": 30,
            "x": 30,
            "window": 20,
            "score": "probability",
        },
    ).json()
    assert prob["score"] == "probability"
    assert prob["target_before"] == pytest.approx(prob["probability_before"])
    logit = client.post(
        "/api/v1/explain/occlusion/patch",
        json={
            "image_id": sample_image_id,
            "model": model_name,
            "y": 30,
            "x": 30,
            "window": 20,
            "score": "logit",
        },
    ).json()
    assert logit["score"] == "logit"
    # Not the probability: a logit is unbounded, and log-odds of the two classes give back p for two classes.
    assert logit["probability_before"] == pytest.approx(prob["probability_before"])
    page = client.get(
        "/occlusion/patch",
        params={"image_id": sample_image_id, "model": model_name, "y": 30, "x": 30, "score": "logit"},
        headers=HX,
    )
    assert 'data-score="logit"' in page.text and "score before softmax" in page.text
    cam = client.post(
        "/api/v1/explain/cam", json={"image_id": sample_image_id, "model": model_name, "format": "json"}
    ).json()
    assert cam["score"] == "logit" and isinstance(cam["target_logit"], float)
    explain_page = client.get("/explain", params={"image_id": sample_image_id, "model": model_name}).text
    assert 'data-score="logit"' in explain_page


def test_compare_names_its_protocol_and_tie_break(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    base = [("image_id", sample_image_id), ("model", model_name), ("methods", "gradcam")]
    rise = client.get("/compare", params=base)
    assert rise.status_code == 200 and 'data-protocol="rise"' in rise.text
    assert "gkern(klen=11, nsig=5)" in rise.text and "raster order" in rise.text
    ours = client.get("/compare", params=[*base, ("protocol", "convscope"), ("steps", "8")])
    assert (
        'data-protocol="convscope"' in ours.text and "8 steps" in ours.text and "seeded random" in ours.text
    )
    body = {"image_id": sample_image_id, "model": model_name, "methods": ["gradcam"]}
    j = client.post("/api/v1/explain/compare", json=body).json()
    assert j["protocol"] == "rise" and "raster order" in j["tie_break"] and j["score"] == "probability"
    # A map with many tied pixels (Grad-CAM's ReLU zeros) says that part of its order is the tie-break's.
    tied = [n for n in j["notes"] if "share their value" in n]
    assert all("raster order" in n for n in tied)
    assert j["steps"] == len(j["fractions"]) - 1 and j["step_pixels"] >= 1
    j2 = client.post("/api/v1/explain/compare", json={**body, "protocol": "convscope", "steps": 8}).json()
    assert j2["protocol"] == "convscope" and j2["steps"] == 8 and "seeded" in j2["tie_break"]
    with_images = client.post("/api/v1/explain/compare", json={**body, "images": True}).json()
    url = with_images["methods"][0]["overlay_url"]
    assert url.startswith("/pictures/") and client.get(url).status_code == 200


def test_a_layer_called_twice_has_a_call_picker_and_each_call_its_own_map(
    client: TestClient, sample_image_id: str
) -> None:
    """EfficientNet-Lite0's `_swish` runs at the stem and at the head: the picker says so, a call picker lists
    both calls with their shapes, the chosen call is the one computed (its shape), shown and kept in the URL."""
    base = f"/explain?image_id={sample_image_id}&model=efficientnet_lite0&layer=_swish&resolution=feature"
    html = client.get(base).text
    assert re.search(r'<option value="_swish" selected>_swish \(called 2 times\)', html), html[:2000]
    picker = re.search(r'<select name="call".*?</select>', html, re.S)
    assert picker is not None
    options = re.findall(r'<option value="(\d)"( selected)?>([^<]+)</option>', picker.group(0))
    assert [(v, t.split(" · ")[0]) for v, _, t in options] == [
        ("0", "1st call (first)"),
        ("1", "2nd call (last)"),
    ]
    stem_shape, head_shape = (t.split(" · ")[1] for _, _, t in options)
    assert stem_shape != head_shape and options[1][1] == " selected"  # no call given: the last
    # The feature-resolution heat map has the grid of the chosen call's activation.
    shapes = {}
    for call, shape in (("0", stem_shape), ("-1", head_shape), ("1", head_shape)):
        page = client.get(f"{base}&call={call}").text
        assert f"call {int(call) % 2 + 1} of 2" in page  # the heading and the facts say which call
        c, h, w = (int(d) for d in shape.split("×"))
        assert f"{c} channels of {h}×{w}" in page
        assert f"heat map, {h}×{w} values (the layer's own grid)" in page
        assert _shown_image(client, page, "cam-heatmap").shape[2] == 3
        shapes[call] = (h, w)
    assert shapes["0"] != shapes["-1"]
    # A call the layer does not have: said next to the call picker.
    bad = client.get(f"{base}&call=5")
    assert bad.status_code == 422 and 'data-field="call"' in bad.text
    # A layer that runs once: no call picker, and a stray call is ignored.
    once = client.get(f"/explain?image_id={sample_image_id}&model=efficientnet_lite0&layer=_conv_head&call=0")
    assert '<option value="_conv_head" selected>_conv_head · ' in once.text
    assert once.status_code == 200 and 'name="call"' not in once.text


def test_compare_layer_picker_says_called_n_times(client: TestClient) -> None:
    html = client.get("/compare?model=efficientnet_lite0").text
    assert re.search(r'<option value="_swish"[^>]*>_swish \(called 2 times\) · ', html)
    assert re.search(
        r'<option value="_conv_head">_conv_head · ', html
    )  # a layer that runs once: its name alone
