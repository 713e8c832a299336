"""The convolution lab's pages: one template each with named blocks, forms validated by the API's own models."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

HX = {"HX-Request": "true"}


def _form(rows: list[list[float]], kernel: list[list[float]], **settings: str) -> dict[str, str]:
    """The playground's form as the page posts it: cells under the API's dotted names, view state beside them."""
    data = {"in_rows": str(len(rows)), "in_cols": str(len(rows[0])), "k_rows": str(len(kernel)),
            "k_cols": str(len(kernel[0])), "padding": "none", "amount": "0", "stride": "1", "dilation": "1",
            "focus_row": "0", "focus_col": "0"}  # fmt: skip
    data.update({f"input.{r}.{c}": str(v) for r, row in enumerate(rows) for c, v in enumerate(row)})
    data.update({f"kernel.{r}.{c}": str(v) for r, row in enumerate(kernel) for c, v in enumerate(row)})
    data.update(settings)
    return data


def _output_cells(html: str) -> list[str]:
    return re.findall(r'class="out-cell[^"]*"[^>]*>([^<]*)</td>', html)


def _errors(text: str) -> list[tuple[str, str]]:
    """(data-field, visible text) of each message in a field_errors block."""
    return [
        (f, html.unescape(re.sub(r"<[^>]+>", "", item)))
        for f, item in re.findall(r'<li data-field="([^"]*)">(.*?)</li>', text, re.S)
    ]


def test_conv_page_defaults_to_vertical_edge(client: TestClient) -> None:
    r = client.get("/conv")
    assert r.status_code == 200
    assert "/static/js/conv.js" in r.text and "/static/css/conv.css" in r.text
    assert _output_cells(r.text) == ["0", "30", "30", "0"] * 4
    assert "⌊(6 + 2·0 − 1·(3−1) − 1) / 1⌋ + 1" in r.text
    assert "(1 x 10) + (0 x 10) + (-1 x 0)" in r.text
    assert "flips" in r.text
    # the cells carry the API's field names
    assert 'name="input.0.0" value="10"' in r.text and 'name="kernel.2.2" value="-1"' in r.text
    assert r.headers["vary"] == "HX-Request"


def test_presets_by_url_full_page_or_workspace_block(client: TestClient) -> None:
    page = client.get("/conv", params={"preset": "small_nodule"})
    assert page.status_code == 200 and "<html" in page.text and 'id="conv-workspace"' in page.text
    block = client.get("/conv", params={"preset": "small_nodule"}, headers=HX)
    assert block.status_code == 200 and "<html" not in block.text and 'id="conv-workspace"' not in block.text
    assert 'data-slide-wrong="true"' in block.text
    assert "correct 5" in block.text
    assert "5" in _output_cells(block.text)
    edge = client.get("/conv", params={"preset": "vertical_edge"}, headers=HX)
    assert 'data-slide-wrong="false"' in edge.text
    assert client.get("/conv", params={"preset": "nope"}, headers=HX).status_code == 404
    # the preset menu pushes its URL, so reload and Back land on a full page of that preset
    assert 'hx-get="/conv"' in page.text and 'hx-push-url="true"' in page.text


def test_result_block_with_relu_pool_flatten(client: TestClient) -> None:
    grid = [[1, -2, 3], [-4, 5, -6], [7, -8, 9]]
    r = client.post("/conv/result", data=_form(grid, [[1]], relu="on", pool="max", pool_size="2", pool_stride="1"),
                    headers=HX)  # fmt: skip
    assert r.status_code == 200, r.text
    assert "<html" not in r.text and 'id="conv-form"' not in r.text  # only the result block
    assert 'id="conv-relu"' in r.text
    assert r.text.count('class="pool-win ') == 4
    pooled = re.search(r'id="conv-pooled">(.*?)</table>', r.text, re.S)
    assert pooled is not None
    assert re.findall(r">(-?\d+)</td>", pooled.group(1)) == ["5", "5", "7", "9"]
    flat = re.search(r'id="conv-flat"[^>]*>(.*?)</ol>', r.text, re.S)
    assert flat is not None and re.findall(r"<li>([^<]*)</li>", flat.group(1)) == ["5", "5", "7", "9"]
    # a scrollable list is reachable by keyboard (axe: scrollable-region-focusable)
    assert re.search(r'id="conv-flat" tabindex="0" aria-label="flattened vector, 4 values', r.text)


@pytest.mark.parametrize(
    ("change", "api_change", "field", "words"),
    [
        ({"input.1.1": "abc"}, {"input": [[1, 2], [3, "abc"]]}, "input.1.1", "Input row 2, column 2: 'abc' is not a number"),
        ({"kernel.0.0": "inf"}, {"kernel": [[float("inf")]]}, "kernel.0.0", "Kernel row 1, column 1: must be a finite number"),
        ({"input.0.0": ""}, {"input": [["", 2], [3, 4]]}, "input.0.0", "Input row 1, column 1: is empty: type a number"),
        ({"stride": "0"}, {"stride": 0}, "stride", "Stride: must be at least 1"),
        ({"dilation": "5"}, {"dilation": 5}, "dilation", "Dilation: must be at most 4"),
        ({"pool_size": "9"}, {"pool_size": 9}, "pool_size", "Pool size: must be at most 8"),
        ({"amount": "-1"}, {"amount": -1}, "amount", "Padding amount: must be at least 0"),
        ({"padding": "mirror"}, {"padding": "mirror"}, "padding", "Padding: must be one of"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named_as_the_api_names_it_and_said_in_words(
    client: TestClient, change: dict[str, str], api_change: dict[str, Any], field: str, words: str
) -> None:
    data = _form([[1, 2], [3, 4]], [[1]])
    data.update(change)
    r = client.post("/conv/result", data=data, headers=HX)
    assert r.status_code == 422
    # into the error box beside the form: the last good result stays where it is
    assert r.headers["HX-Retarget"] == "#conv-errors" and r.headers["HX-Reswap"] == "innerHTML"
    assert 'id="conv-output"' not in r.text
    errors = _errors(r.text)
    assert [f for f, _ in errors] == [field]
    assert errors[0][1].startswith(words), errors
    assert "between 0" not in r.text and "Field:" not in r.text
    # one model: the JSON twin refuses the same request naming the same field
    body = json.dumps({"input": [[1, 2], [3, 4]], "kernel": [[1]], **api_change})  # inf as Infinity
    api = client.post("/api/v1/convolve", content=body, headers={"content-type": "application/json"})
    assert api.status_code == 422 and api.json()["error"]["field"] == field


def test_kernel_larger_than_input(client: TestClient) -> None:
    r = client.post("/conv/result", data=_form([[1, 2], [3, 4]], [[1, 1, 1]] * 3), headers=HX)
    assert r.status_code == 422
    assert [f for f, _ in _errors(r.text)] == ["kernel"]
    assert _errors(r.text)[0][1].startswith("Kernel: ")


def test_resize_keeps_cells(client: TestClient) -> None:
    data = _form([[1, 2], [3, 4]], [[2]])
    data.update({"in_rows": "3", "in_cols": "3"})
    r = client.post("/conv/resize", data=data, headers=HX)
    assert r.status_code == 200
    assert 'name="input.2.2" value="0"' in r.text and 'name="input.1.1" value="4"' in r.text
    assert _output_cells(r.text) == ["2", "4", "0", "6", "8", "0", "0", "0", "0"]
    # a bad cell survives a resize as typed, marked, with no result computed from it
    bad = client.post("/conv/resize", data={**data, "input.0.1": "x"}, headers=HX)
    assert bad.status_code == 422 and 'name="input.0.1" value="x"' in bad.text
    assert [f for f, _ in _errors(bad.text)] == ["input.0.1"]


def _filter_form(image_id: str, **extra: Any) -> dict[str, Any]:
    """The filter lab's form: library kernels ticked as kernels.N.name (N >= 1), the drawn kernel is kernels.0."""
    data: dict[str, Any] = {"image_id": image_id, "kernels.8.name": "sobel_x", "kernels.18.name": "cross",
                            "mode": "per_channel", "max_side": "128", "ck_size": "3", "padding": "reflect",
                            "stride": "1", "pool": "", "pool_size": "2", "scale": "each", "limits": "robust",
                            **{f"kernels.0.weights.{r}.{c}": "1" for r in range(3) for c in range(3)},
                            **{f"channel_weights.{i}": "1" for i in range(3)}}  # fmt: skip
    data.update(extra)
    return data


def test_filters_page_shows_pictures_by_url(client: TestClient, sample_image_id: str) -> None:
    page = client.get("/filters", params={"image_id": sample_image_id})
    assert page.status_code == 200
    assert "Sobel-like 0.25/0.5 (lecture)" in page.text
    assert "/static/js/filters.js" in page.text
    assert 'class="colorbar"' in page.text
    # no picture inlined: the input and both maps come from content-keyed URLs, rendered on first request
    assert "data:image" not in page.text
    urls = re.findall(r'<img src="(/pictures/[0-9a-f]{32}\.png)"', page.text)
    assert len(urls) == 3
    for url in urls:
        pic = client.get(url)
        assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
        assert pic.content.startswith(b"\x89PNG")
    assert len(page.content) < 100_000
    # the form starts from the API's defaults: reflect padding, robust limits
    assert re.search(r'<option value="reflect" selected>', page.text)
    assert re.search(r'<option value="robust" selected>', page.text)
    assert "Padding: reflect" in page.text


def test_filters_run(client: TestClient, sample_image_id: str) -> None:
    data = _filter_form(sample_image_id, custom="on")
    r = client.post("/filters/run", data=data, headers=HX)
    assert r.status_code == 200, r.text
    assert "<html" not in r.text and 'id="filters-form"' not in r.text
    assert r.text.count('class="fmap-img"') == 9
    assert r.text.count('class="colorbar"') == 9
    assert "data:image" not in r.text
    api = re.search(r'data-api="([^"]*)"', r.text)
    assert api is not None and "your kernel" in api.group(1)
    three = client.post("/filters/run", data={**data, "mode": "3d", "channel_weights.0": "1",
                                              "channel_weights.1": "0", "channel_weights.2": "-1"}, headers=HX)  # fmt: skip
    assert three.text.count('class="fmap-img"') == 3
    # without "use it" the drawn kernel's cells are not sent on
    plain = client.post("/filters/run", data={**data, "custom": ""}, headers=HX)
    assert plain.text.count('class="fmap-img"') == 6


def test_filters_errors_name_the_api_field_and_say_it_in_words(
    client: TestClient, sample_image_id: str
) -> None:
    bad = client.post("/filters/run", data=_filter_form(sample_image_id, custom="on", **{"kernels.0.weights.1.1": "x"}),
                      headers=HX)  # fmt: skip
    assert bad.status_code == 422 and bad.headers["HX-Retarget"] == "#filters-errors"
    assert _errors(bad.text) == [
        ("kernels.0.weights.1.1", "Your kernel row 2, column 2: 'x' is not a number")
    ]
    api = client.post("/api/v1/filter", json={"image_id": sample_image_id,
                                              "kernels": [{"weights": [[1, 1, 1], [1, "x", 1], [1, 1, 1]]}]})  # fmt: skip
    assert api.status_code == 422 and api.json()["error"]["field"] == "kernels.0.weights.1.1"
    stride = client.post("/filters/run", data=_filter_form(sample_image_id, stride="0"), headers=HX)
    assert _errors(stride.text) == [("stride", "Stride: must be at least 1")]
    weights = client.post("/filters/run", data=_filter_form(sample_image_id, mode="3d", **{"channel_weights.2": "b"}),
                          headers=HX)  # fmt: skip
    assert _errors(weights.text) == [("channel_weights.2", "3-D weight for B: 'b' is not a number")]
    gone = client.post("/filters/run", data=_filter_form("0" * 64), headers=HX)
    assert gone.status_code == 404 and gone.headers["HX-Retarget"] == "#filters-errors"
    assert [f for f, _ in _errors(gone.text)] == ["image_id"]
    big = client.post("/filters/run", data=_filter_form(sample_image_id, max_side="4097"), headers=HX)
    assert _errors(big.text) == [("max_side", "Work at: must be at most 4096")]
    none = client.post("/filters/run", data={"image_id": sample_image_id}, headers=HX)
    assert none.status_code == 422
    assert [f for f, _ in _errors(none.text)] == ["kernels"]
    assert "tick at least one kernel" in none.text


def test_filters_on_a_greyscale_image_in_colour_modes(client: TestClient, gray_image_id: str) -> None:
    # The page's R, G, B weights gave a 422 naming kernels[0].channel_weights, a field the page lacks,
    # and the result said "R, G and B separately" above a single greyscale map.
    data = {"image_id": gray_image_id, "kernels.8.name": "sobel_x", "mode": "3d", "channel_weights.0": "1",
            "channel_weights.1": "0", "channel_weights.2": "-1"}  # fmt: skip
    r = client.post("/filters/run", data=data, headers=HX)
    assert r.status_code == 200, r.text
    assert r.text.count('class="fmap-img"') == 1
    assert "Greyscale image: one channel" in r.text and "channel_weights" not in r.text
    per_channel = client.post("/filters/run", data={**data, "mode": "per_channel"}, headers=HX)
    assert "R, G and B separately" not in per_channel.text


def test_kernel_editor_sizes(client: TestClient) -> None:
    r = client.get("/filters/kernel-editor", params={"ck_size": 5}, headers=HX)
    assert r.status_code == 200 and r.text.count("ck-cell") == 25
    assert 'name="kernels.0.weights.4.4"' in r.text and "<html" not in r.text
    assert client.get("/filters/kernel-editor", params={"ck_size": 4}, headers=HX).status_code == 422


def test_cost_page_lecture_defaults(client: TestClient) -> None:
    r = client.get("/cost", params={"fc_outputs": 65536})
    assert r.status_code == 200
    assert "589,824" in r.text and "4,294,967,296" in r.text and "0.01 %" in r.text
    ct = client.get("/cost", params={"height": 512, "width": 512}, headers=HX)
    assert "262,144" in ct.text and 'id="cost-result-body"' in ct.text and "<html" not in ct.text
    assert 'hx-replace-url="true"' in r.text


def test_cost_ratio_is_plain_and_bars_are_linear(client: TestClient) -> None:
    # Log-scaled bars drew 589,824 at 60 % of the length of 4,294,967,296: now the ratio is said in words and
    # the bars are to scale (the convolution's is 0.0137 % of the FC layer's).
    r = client.get("/cost")
    assert "7,282 times as many multiplications as" in r.text
    widths = dict(re.findall(r'id="cost-bar-(fc|conv)" data-style="width: ([0-9.]+)%"', r.text))
    assert float(widths["fc"]) == 100.0
    assert float(widths["conv"]) == pytest.approx(100 * 589_824 / 4_294_967_296, abs=1e-4)
    assert "logarithmic" not in r.text and "linear" in r.text
    # more conv multiplications than FC ones: the longer bar is the convolution's
    many = client.get("/cost", params={"height": 4, "width": 4, "filters": 64, "kernel": 3}, headers=HX)
    widths = dict(re.findall(r'id="cost-bar-(fc|conv)" data-style="width: ([0-9.]+)%"', many.text))
    assert float(widths["conv"]) == 100.0 > float(widths["fc"])
    assert "The convolution needs" in " ".join(many.text.split())


def test_cost_fc_outputs_follow_the_image_size_until_typed(client: TestClient) -> None:
    small = client.get("/cost", params={"height": 256, "width": 256, "fc_outputs": ""}, headers=HX)
    large = client.get("/cost", params={"height": 512, "width": 512, "fc_outputs": ""}, headers=HX)
    assert small.status_code == large.status_code == 200
    assert "4,294,967,296" in small.text  # 65,536 x 65,536
    assert "68,719,476,736" in large.text  # 262,144 x 262,144: the default grew with the image
    typed = client.get("/cost", params={"height": 512, "width": 512, "fc_outputs": "10"}, headers=HX)
    assert "2,621,440" in typed.text  # 262,144 inputs x 10 outputs
    page = client.get("/cost").text
    assert 'placeholder="H x W = 65536"' in page


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"fc_outputs": "ten"}, "fc_outputs", "FC outputs: 'ten' is not a whole number"),
        ({"kernel": "0"}, "kernel", "Kernel size: must be at least 1"),
        ({"stride": "0"}, "stride", "Stride: must be at least 1"),
    ],
)
def test_cost_errors_as_the_api_names_them(
    client: TestClient, params: dict[str, str], field: str, words: str
) -> None:
    r = client.get("/cost", params=params, headers=HX)
    assert r.status_code == 422 and r.headers["HX-Retarget"] == "#cost-errors"
    assert _errors(r.text) == [(field, words)]
    api = client.get("/api/v1/cost", params=params)
    assert api.status_code == 422 and api.json()["error"]["field"] == field
    # a bookmarked URL with a bad value is a whole page with the message beside the form
    page = client.get("/cost", params=params)
    assert page.status_code == 422 and "<html" in page.text and _errors(page.text) == [(field, words)]


def test_unflatten_builds_the_api_body_from_dotted_fields() -> None:
    from app.web.convolution import unflatten

    items = [("input.0.0", " 1 "), ("input.0.1", "\u22122"), ("input.1.0", "3"), ("input.1.1", ""),
             ("kernels.7.name", "sobel_x"), ("kernels.3.name", "cross"), ("pool", ""), ("focus_row", "2")]  # fmt: skip
    body = unflatten(items, ignore=("focus_row",))
    # cells keep their text (the model validates it, an empty cell included), numeric keys become lists in
    # index order, an empty setting takes the model's default, view state is not sent on
    assert body == {"input": [["1", "-2"], ["3", ""]], "kernels": [{"name": "cross"}, {"name": "sobel_x"}]}


@pytest.mark.parametrize(
    ("field", "drawn", "label"),
    [
        ("input.0.0", None, "Input row 1, column 1"),
        ("kernel.6.2", None, "Kernel row 7, column 3"),
        ("input.3", None, "Input row 4"),
        ("kernels.0.weights.10.0", 0, "Your kernel row 11, column 1"),
        ("kernels.2.weights.0.0", 0, "Kernel 3 row 1, column 1"),
        ("kernels.1.name", 0, "Kernel 2"),
        ("channel_weights.1", None, "3-D weight for G"),
        ("pool_stride", None, "Pool stride"),
        ("max_side", None, "Work at"),
        (None, None, "Request"),
    ],
)
def test_field_labels_say_what_the_user_sees(field: str | None, drawn: int | None, label: str) -> None:
    from app.web.convolution import field_label

    assert field_label(field, drawn) == label


@pytest.mark.parametrize(
    "junk",
    [
        {"0": "1"},
        {"input.0": "5", "input.0.1": "3"},
        {"input.0.1": "3", "input.0": "5"},
        {"input": "x", "kernel.a.b": "1"},
        {"kernels.0": "abc", "kernels.x.name": "sobel_x"},
        {"kernels.1.name.deep": "1", "mode": "3d", "channel_weights.0": "nan"},
        {"input.0.0": "1e400", "kernel.0.0": "1", "stride": "99999999999999999999"},
        {"input" + ".0" * 50_000: "1"},  # deeper than Python's recursion limit
    ],
)
def test_any_form_gets_an_answer_never_a_500(
    client: TestClient, sample_image_id: str, junk: dict[str, str]
) -> None:
    for url in ("/conv/result", "/conv/resize", "/filters/run"):
        data = {"image_id": sample_image_id, **junk} if url == "/filters/run" else junk
        r = client.post(url, data=data, headers=HX)
        assert r.status_code in (200, 404, 422), (url, r.status_code, r.text[:300])
    if sum(map(len, junk)) < 2000:  # a URL has a length limit of its own
        assert client.get("/cost", params=junk, headers=HX).status_code in (200, 422)


def test_the_shrunk_image_cache_is_bounded_in_bytes_and_hands_out_copies() -> None:
    import numpy as np

    from app.services.convolution import _ShrunkCache

    one = np.zeros((64, 64), np.float32)  # 16 KiB
    cache = _ShrunkCache(max_bytes=3 * one.nbytes)
    for i in range(5):
        cache.put((f"img{i}", 64, 64), one + i)
    assert cache.get(("img0", 64, 64)) is None  # least recently used went first
    kept = cache.get(("img4", 64, 64))
    assert kept is not None and float(kept[0, 0]) == 4.0
    kept[0, 0] = -1  # a copy: the cached array is unchanged
    again = cache.get(("img4", 64, 64))
    assert again is not None and float(again[0, 0]) == 4.0
    cache.put(("huge", 1, 1), np.zeros((256, 256), np.float32))  # more than half the budget: not cached
    assert cache.get(("huge", 1, 1)) is None
