"""The convolution lab's pages and HTMX partials."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

HX = {"HX-Request": "true"}


def _form(rows: list[list[float]], kernel: list[list[float]], **settings: str) -> dict[str, str]:
    data = {"in_rows": str(len(rows)), "in_cols": str(len(rows[0])), "k_rows": str(len(kernel)),
            "k_cols": str(len(kernel[0])), "padding": "none", "amount": "0", "stride": "1", "dilation": "1"}  # fmt: skip
    data.update({f"in_{r}_{c}": str(v) for r, row in enumerate(rows) for c, v in enumerate(row)})
    data.update({f"k_{r}_{c}": str(v) for r, row in enumerate(kernel) for c, v in enumerate(row)})
    data.update(settings)
    return data


def _output_cells(html: str) -> list[str]:
    return re.findall(r'class="out-cell[^"]*"[^>]*>([^<]*)</td>', html)


def test_conv_page_defaults_to_vertical_edge(client: TestClient) -> None:
    r = client.get("/conv")
    assert r.status_code == 200
    assert "/static/js/conv.js" in r.text and "/static/css/conv.css" in r.text
    assert _output_cells(r.text) == ["0", "30", "30", "0"] * 4
    assert "⌊(6 + 2·0 − 1·(3−1) − 1) / 1⌋ + 1" in r.text
    assert "(1 x 10) + (0 x 10) + (-1 x 0)" in r.text
    assert "flips" in r.text


def test_presets_show_slide_corrections(client: TestClient) -> None:
    r = client.get("/conv/preset", params={"name": "small_nodule"}, headers=HX)
    assert r.status_code == 200
    assert 'data-slide-wrong="true"' in r.text
    assert "correct 5" in r.text
    assert "5" in _output_cells(r.text)
    edge = client.get("/conv/preset", params={"name": "vertical_edge"}, headers=HX)
    assert 'data-slide-wrong="false"' in edge.text
    assert client.get("/conv/preset", params={"name": "nope"}, headers=HX).status_code == 404


def test_result_partial_with_relu_pool_flatten(client: TestClient) -> None:
    grid = [[1, -2, 3], [-4, 5, -6], [7, -8, 9]]
    r = client.post("/conv/result", data=_form(grid, [[1]], relu="on", pool="max", pool_size="2", pool_stride="1"),
                    headers=HX)  # fmt: skip
    assert r.status_code == 200, r.text
    assert 'id="conv-relu"' in r.text
    assert r.text.count('class="pool-win ') == 4
    pooled = re.search(r'id="conv-pooled">(.*?)</table>', r.text, re.S)
    assert pooled is not None
    assert re.findall(r">(-?\d+)</td>", pooled.group(1)) == ["5", "5", "7", "9"]
    flat = re.search(r'id="conv-flat">(.*?)</ol>', r.text, re.S)
    assert flat is not None and re.findall(r"<li>([^<]*)</li>", flat.group(1)) == ["5", "5", "7", "9"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"in_1_1": "abc"}, "in_1_1"),
        ({"k_0_0": "inf"}, "k_0_0"),
        ({"in_0_0": ""}, "in_0_0"),
        ({"stride": "0"}, "stride"),
        ({"k_rows": "9"}, "k_rows"),
        ({"in_rows": "17"}, "in_rows"),
    ],
)
def test_bad_cells_give_422_partial_naming_field(
    client: TestClient, change: dict[str, str], field: str
) -> None:
    data = _form([[1, 2], [3, 4]], [[1]])
    data.update(change)
    r = client.post("/conv/result", data=data, headers=HX)
    assert r.status_code == 422
    assert f"<code>{field}</code>" in r.text


def test_kernel_larger_than_input(client: TestClient) -> None:
    r = client.post("/conv/result", data=_form([[1, 2], [3, 4]], [[1, 1, 1]] * 3), headers=HX)
    assert r.status_code == 422 and "<code>kernel</code>" in r.text


def test_resize_keeps_cells(client: TestClient) -> None:
    data = _form([[1, 2], [3, 4]], [[2]])
    data.update({"in_rows": "3", "in_cols": "3"})
    r = client.post("/conv/resize", data=data, headers=HX)
    assert r.status_code == 200
    assert 'name="in_2_2" value="0"' in r.text and 'name="in_1_1" value="4"' in r.text
    assert _output_cells(r.text) == ["2", "4", "0", "6", "8", "0", "0", "0", "0"]


def test_filters_page_and_run(client: TestClient, sample_image_id: str) -> None:
    page = client.get("/filters", params={"image_id": sample_image_id})
    assert page.status_code == 200
    assert "Sobel-like 0.25/0.5 (lecture)" in page.text
    assert "/static/js/filters.js" in page.text
    assert 'class="colorbar"' in page.text
    data = {"image_id": sample_image_id, "kernel": ["sobel_x", "cross"], "mode": "per_channel", "max_side": "128",
            "custom": "on", "ck_size": "3", **{f"ck_{r}_{c}": "1" for r in range(3) for c in range(3)}}  # fmt: skip
    r = client.post("/filters/run", data=data, headers=HX)
    assert r.status_code == 200, r.text
    assert r.text.count('class="fmap-img"') == 9
    assert r.text.count('class="colorbar"') == 9
    assert "data-api=" in r.text
    three = client.post("/filters/run", data={**data, "mode": "3d", "cw_0": "1", "cw_1": "0", "cw_2": "-1"},
                        headers=HX)  # fmt: skip
    assert three.text.count('class="fmap-img"') == 3
    bad = client.post("/filters/run", data={**data, "ck_1_1": "x"}, headers=HX)
    assert bad.status_code == 422 and "<code>ck_1_1</code>" in bad.text
    none = client.post("/filters/run", data={"image_id": sample_image_id}, headers=HX)
    assert none.status_code == 422 and "<code>kernel</code>" in none.text


def test_filters_on_a_greyscale_image_in_colour_modes(client: TestClient, gray_image_id: str) -> None:
    # The page's R, G, B weights gave a 422 naming kernels[0].channel_weights, a field the page lacks,
    # and the result said "R, G and B separately" above a single greyscale map.
    data = {
        "image_id": gray_image_id,
        "kernel": "sobel_x",
        "mode": "3d",
        "cw_0": "1",
        "cw_1": "0",
        "cw_2": "-1",
    }
    r = client.post("/filters/run", data=data, headers=HX)
    assert r.status_code == 200, r.text
    assert r.text.count('class="fmap-img"') == 1
    assert "Greyscale image: one channel" in r.text and "channel_weights" not in r.text
    per_channel = client.post("/filters/run", data={**data, "mode": "per_channel"}, headers=HX)
    assert "R, G and B separately" not in per_channel.text


def test_kernel_editor_sizes(client: TestClient) -> None:
    r = client.get("/filters/kernel-editor", params={"ck_size": 5}, headers=HX)
    assert r.status_code == 200 and r.text.count("ck-cell") == 25
    assert client.get("/filters/kernel-editor", params={"ck_size": 4}, headers=HX).status_code == 422


def test_cost_page_lecture_defaults(client: TestClient) -> None:
    r = client.get("/cost", params={"fc_outputs": 65536})
    assert r.status_code == 200
    assert "589,824" in r.text and "4,294,967,296" in r.text and "0.01 %" in r.text
    ct = client.get("/cost", params={"height": 512, "width": 512}, headers=HX)
    assert "262,144" in ct.text and 'id="cost-result-body"' in ct.text and "<html" not in ct.text
    assert client.get("/cost", params={"kernel": 0}, headers=HX).status_code == 422


def test_cost_fc_outputs_follow_the_image_size_until_typed(client: TestClient) -> None:
    small = client.get(
        "/cost", params={"height": 256, "width": 256, "fc_outputs": ""}, headers={"HX-Request": "true"}
    )
    large = client.get(
        "/cost", params={"height": 512, "width": 512, "fc_outputs": ""}, headers={"HX-Request": "true"}
    )
    assert small.status_code == large.status_code == 200
    assert "4,294,967,296" in small.text  # 65,536 x 65,536
    assert "68,719,476,736" in large.text  # 262,144 x 262,144: the default grew with the image
    typed = client.get(
        "/cost", params={"height": 512, "width": 512, "fc_outputs": "10"}, headers={"HX-Request": "true"}
    )
    assert "2,621,440" in typed.text  # 262,144 inputs x 10 outputs
    bad = client.get("/cost", params={"fc_outputs": "ten"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "fc_outputs" in bad.text
    page = client.get("/cost").text
    assert 'placeholder="H x W = 65536"' in page
