"""The /network, /receptive-fields and /milestones pages: one template per page whose regions are blocks, the
view's state in the URL, pictures by URL, bars for layers with no map, and errors that name their field."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.core.imaging.rendering import colorize, value_limits

MODEL = "resnet18"
HX = {"HX-Request": "true"}
PICTURE = re.compile(r'(?:src|href)="(/pictures/[0-9a-f]{32}\.png)"')


def hx(target: str, trigger_name: str | None = None) -> dict[str, str]:
    headers = {**HX, "HX-Target": target}
    if trigger_name:
        headers["HX-Trigger-Name"] = trigger_name
    return headers


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def png_array(client: TestClient, url: str) -> np.ndarray:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", url
    assert "immutable" in r.headers["cache-control"]
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


class _Nesting(HTMLParser):
    """Records interactive elements inside <summary> and elements with ARIA tree roles."""

    def __init__(self) -> None:
        super().__init__()
        self.summary_depth = 0
        self.nested: list[str] = []
        self.roles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        role = dict(attrs).get("role")
        if role in ("tree", "treeitem", "group"):
            self.roles.append(role)
        if tag == "summary":
            self.summary_depth += 1
        elif self.summary_depth and tag in ("button", "a", "input", "select"):
            self.nested.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "summary":
            self.summary_depth -= 1


def test_network_page_pictures_by_url_and_a_tree_without_nested_controls(
    client: TestClient, sample_image_id: str
) -> None:
    r = client.get(
        "/network",
        params={"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": "layer1"},
    )
    assert r.status_code == 200, r.text
    html = r.text
    assert "data:image" not in html
    assert len(r.content) < 100_000
    assert "layer4" in html and "Untrained: random weights" in html and "UNTRAINED" in html
    # Names and shapes are cut short in the narrow tree; the full ones are in the tooltips.
    assert 'title="output shape 64×112×112"' in html and 'value="layer1"' in html
    # A block's rows come when it is first opened.
    assert 'data-layer="layer1.0.conv1"' not in html and 'hx-vals=\'{"node": "layer1"}\'' in html
    rows = client.get(
        "/network/tree", params={"model": MODEL, "weights": "untrained", "node": "layer1.0"}, headers=HX
    )
    assert rows.status_code == 200 and "<html" not in rows.text
    assert 'title="layer1.0.conv1"' in rows.text and 'title="output shape 64×56×56"' in rows.text
    assert client.get("/network/tree", params={"model": MODEL, "node": "nope"}, headers=HX).status_code == 404
    assert html.count('class="fmap"') == 32 and "Early" in html and "Late" in html
    urls = PICTURE.findall(html)
    assert len(urls) >= 32 + 64  # feature maps, early/late, learned filters
    # axe's "nested-interactive" and "aria-required-children": no control inside a summary, no tree roles.
    parser = _Nesting()
    parser.feed(html)
    assert parser.nested == [] and parser.roles == []
    assert '<details class="tree-fold"' in html


def test_a_tile_is_the_channel_drawn_on_its_own_scale(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": "layer3"}
    html = client.get("/network", params=params).text
    first = re.search(r'class="fmap" name="channel" value="(\d+)".*?src="(/pictures/[0-9a-f]+\.png)"', html)
    assert first is not None
    channel, url = int(first.group(1)), first.group(2)
    service = client.app.state.network_service  # type: ignore[attr-defined]
    loaded = service.model(MODEL, "untrained")
    _, maps = service.layer_activation(loaded, sample_image_id, "layer3")
    lo, hi = value_limits(maps[channel])
    expected = colorize(maps[channel], "viridis", lo, hi)
    picture = png_array(client, url)
    # layer3 is 14x14: blown up by nearest neighbour, so every block of the tile is one unit's colour.
    factor = picture.shape[0] // expected.shape[0]
    np.testing.assert_array_equal(
        picture[::factor, ::factor][: expected.shape[0], : expected.shape[1]], expected
    )


def test_regions_are_blocks_of_the_page_with_the_state_url(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get(
        "/network", params={**params, "layer": "layer3", "sort": "max"}, headers=hx("network-view")
    )
    assert r.status_code == 200
    assert 'data-layer="layer3"' in r.text and "<html" not in r.text and 'class="tree"' not in r.text
    assert r.text.count('class="fmap"') == 32
    pushed = query(r.headers["HX-Push-Url"])
    assert urlsplit(r.headers["HX-Push-Url"]).path == "/network"
    assert pushed["layer"] == "layer3" and pushed["sort"] == "max" and pushed["model"] == MODEL
    assert "HX-Replace-Url" not in r.headers
    # The URL pushed renders the whole page (reload, bookmark, Back with no snapshot).
    full = client.get(r.headers["HX-Push-Url"])
    assert "<html" in full.text and 'data-layer="layer3"' in full.text and 'class="tree"' in full.text
    restore = client.get(
        r.headers["HX-Push-Url"], headers={**hx("network-view"), "HX-History-Restore-Request": "true"}
    )
    assert "<html" in restore.text and "HX-Push-Url" not in restore.headers
    # A slider step replaces the history entry, and the URL names the layer, not the slider position.
    r = client.get("/network", params={**params, "depth": 0}, headers=hx("network-view", "depth"))
    assert 'data-layer="conv1"' in r.text and "HX-Push-Url" not in r.headers
    assert query(r.headers["HX-Replace-Url"])["layer"] == "conv1"
    assert "depth" not in query(r.headers["HX-Replace-Url"])
    # An unknown target gets the page (never a fragment the address bar could show unstyled).
    assert "<html" in client.get("/network", params=params, headers=hx("somewhere")).text


def test_channel_view_is_part_of_the_state(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": "layer1"}
    r = client.get(
        "/network", params={**params, "channel": 4, "opacity": 0.3}, headers=hx("channel-view", "channel")
    )
    assert r.status_code == 200 and "channel 4" in r.text and "colorbar" in r.text and "<html" not in r.text
    assert 'id="channel-opacity"' in r.text and ">0.30</output>" in r.text
    assert query(r.headers["HX-Push-Url"])["channel"] == "4"
    assert query(r.headers["HX-Push-Url"])["opacity"] == "0.3"
    r = client.get(
        "/network", params={**params, "channel": 4, "opacity": 0.5}, headers=hx("channel-view", "opacity")
    )
    assert "HX-Replace-Url" in r.headers and "HX-Push-Url" not in r.headers
    overlay, alone = PICTURE.findall(r.text)
    assert png_array(client, overlay).shape == png_array(client, alone).shape == (224, 224, 3)
    # Reloading that URL shows the same channel.
    assert "channel 4" in client.get(r.headers["HX-Replace-Url"]).text


def test_bad_fields_are_named_once_with_the_dotted_spelling(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": "layer1"}
    for extra, field in (
        ({"cmap": "jet"}, "cmap"),
        ({"channel": 4, "opacity": 3}, "opacity"),
        ({"channel": 4, "vmin": "nan"}, "vmin"),
        ({"sort": "median"}, "sort"),
        ({"channel": 999}, "channel"),
    ):
        r = client.get("/network", params={**params, **extra}, headers=hx("network-view"))
        assert r.status_code == 422, (extra, r.text)
        assert f"<code>{field}</code>" in r.text
        assert "HX-Push-Url" not in r.headers  # a failed request never lands in the address bar
    r = client.get("/network", params={**params, "layer": "nope"}, headers=hx("network-view"))
    assert r.status_code == 404 and "nope" in r.text


def test_layers_without_a_map_are_bars_with_class_names(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get("/network", params={**params, "layer": "fc", "sort": "max"}, headers=hx("network-view"))
    assert r.status_code == 200
    assert 'class="fmap"' not in r.text and "Class scores" in r.text
    labels = re.findall(r'class="bar-label" title="([^"]+)"', r.text)
    values = [float(v) for v in re.findall(r'class="bar-value num">([^<]+)<', r.text)]
    assert len(labels) == 32 and values == sorted(values, reverse=True)
    service = client.app.state.network_service  # type: ignore[attr-defined]
    loaded = service.model(MODEL, "untrained")
    logits = service.activations(loaded, sample_image_id).capture.output.reshape(-1).numpy()
    top = int(np.argmax(logits))
    assert labels[0] == loaded.categories[top]
    assert values[0] == float(f"{logits[top]:.4g}")
    # The global pooling before it has units, not classes: bars labelled by unit, no picture.
    r = client.get("/network", params={**params, "layer": "avgpool"}, headers=hx("network-view"))
    assert "Units of" in r.text and 'title="unit 0"' in r.text and not PICTURE.search(r.text)


def test_filters_and_zoom_are_blocks_and_not_pages(client: TestClient) -> None:
    params = {"model": MODEL, "weights": "untrained"}
    r = client.get("/network/filters", params={**params, "layer": "layer1.0.conv2"}, headers=HX)
    assert r.status_code == 200 and "per input channel" in r.text and "<html" not in r.text
    assert len(re.findall(r'class="ftile"', r.text)) == 64 and "data:image" not in r.text
    r = client.get("/network/filter", params={**params, "layer": "conv1", "index": 2}, headers=HX)
    assert r.status_code == 200 and "kernel-values" in r.text and "(red)" in r.text
    kernels = PICTURE.findall(r.text)
    assert len(kernels) == 3 and png_array(client, kernels[0]).shape[0] >= 200
    # Typed into the address bar, a region's URL leads to its page.
    r = client.get("/network/filters", params=params, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/network?")
    r = client.get("/network/filters", params={**params, "sort": "loudest"}, headers=HX)
    assert r.status_code == 422 and "<code>sort</code>" in r.text


def test_receptive_fields_page_blocks_and_sizes(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get("/receptive-fields", params=params)
    assert r.status_code == 200 and "data:image" not in r.text and len(r.content) < 100_000
    assert 'id="rf-clickable"' in r.text and "<svg" in r.text and "VGG point" in r.text
    # The page opens on the centre unit of a convolution half-way down, already probed.
    assert 'class="rf-box"' in r.text and "Effective" in r.text
    # layer4's field (435 px on a 224-px input) outgrows the image; conv1's (7 px) does not.
    table = client.get("/receptive-fields/table", params=params, headers=HX)
    assert table.status_code == 200 and "<html" not in table.text and "rf-table" not in r.text
    rows = dict(
        re.findall(
            r'<td class="mono">([^<]+)</td><td>[^<]*</td><td class="mono">[^<]*</td>\s*<td class="num">(.*?)</td>',
            table.text,
        )
    )
    assert "larger than the image" in rows["layer4.1.conv2"] and "larger than the image" not in rows["conv1"]
    r = client.get(
        "/receptive-fields", params={**params, "layer": "layer1", "y": 5, "x": 6}, headers=hx("rf-probe")
    )
    assert r.status_code == 200 and "<html" not in r.text and "Unit (5, 6)" in r.text
    assert {k: query(r.headers["HX-Push-Url"])[k] for k in ("layer", "y", "x")} == {
        "layer": "layer1",
        "y": "5",
        "x": "6",
    }
    assert "Unit (5, 6)" in client.get(r.headers["HX-Push-Url"]).text
    r = client.get("/receptive-fields", params={**params, "layer": "layer4"}, headers=hx("rf-click"))
    assert 'data-layer="layer4"' in r.text and "Unit (3, 3)" in r.text and "(larger than the image)" in r.text
    erf = [u for u in PICTURE.findall(r.text)]
    assert len(erf) == 3 and all(png_array(client, u).shape[:2] == (224, 224) for u in erf)
    r = client.get("/receptive-fields", params={**params, "layer": "layer1", "y": 99}, headers=hx("rf-probe"))
    assert r.status_code == 422 and "<code>y</code>" in r.text


def test_milestones(client: TestClient, sample_image_id: str) -> None:
    r = client.get("/milestones")
    assert r.status_code == 200
    for name in (
        "AlexNet",
        "VGG-16",
        "GoogLeNet",
        "ResNet-50",
        "SqueezeNet",
        "MobileNet",
        "DenseNet",
        "EfficientNet",
    ):
        assert name in r.text
    assert "Transfer learning" in r.text
    params = {
        "model_a": "squeezenet1_1",
        "model_b": MODEL,
        "weights": "untrained",
        "image_id": sample_image_id,
    }
    r = client.get("/milestones", params=params, headers=hx("compare"))
    assert r.status_code == 200, r.text
    assert r.text.count('class="compare-side"') == 2 and "Top 5" in r.text and "<html" not in r.text
    assert "data:image" not in r.text and PICTURE.search(r.text)
    assert query(r.headers["HX-Push-Url"])["model_b"] == MODEL
    full = client.get(r.headers["HX-Push-Url"])
    assert "<html" in full.text and full.text.count('class="compare-side"') == 2
    r = client.get("/milestones", params={**params, "depth": 2}, headers=hx("compare"))
    assert r.status_code == 422 and "<code>depth</code>" in r.text


def test_early_late_and_bars_with_a_single_convolution(client: TestClient, sample_image_id: str) -> None:
    arch = {
        "name": "one conv",
        "in_channels": 1,
        "input_size": [32, 32],
        "categories": ["a", "b"],
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            {"type": "relu"},
            {"type": "global_avgpool"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 2},
        ],
    }
    files = {"architecture": ("a.json", json.dumps(arch), "application/json")}
    name = client.post("/api/v1/models", files=files).json()["name"]
    r = client.get("/network", params={"model": name, "image_id": sample_image_id})
    assert r.status_code == 200, r.text
    assert "Early" in r.text and "Late:" not in r.text and "only one convolution" in r.text
    loaded = client.app.state.registry.get(name)  # type: ignore[attr-defined]
    last = [n for n, _ in loaded.module.named_modules() if n][-1]
    r = client.get(
        "/network",
        params={"model": name, "image_id": sample_image_id, "layer": last},
        headers=hx("network-view"),
    )
    assert re.findall(r'class="bar-label" title="([^"]+)"', r.text) == ["a", "b"]


def test_a_model_change_swaps_the_whole_body_of_each_page(client: TestClient, sample_image_id: str) -> None:
    params = {"model": "squeezenet1_1", "weights": "untrained", "image_id": sample_image_id}
    for path, target in (("/network", "network-body"), ("/receptive-fields", "rf-body")):
        r = client.get(path, params=params, headers=hx(target))
        assert r.status_code == 200, r.text
        html = r.text
        assert "<html" not in html and 'id="network-controls"' in html and "SqueezeNet" in html
        # The pickers are rendered from the request, so they agree with the URL pushed.
        assert re.search(r'<option value="squeezenet1_1" selected', html)
        assert query(r.headers["HX-Push-Url"])["model"] == "squeezenet1_1"
        assert "data:image" not in html and len(r.content) < 100_000


def test_the_feature_view_says_when_a_field_outgrows_the_image(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    deep = client.get("/network", params={**params, "layer": "layer4"}, headers=hx("network-view")).text
    shallow = client.get("/network", params={**params, "layer": "layer1"}, headers=hx("network-view")).text
    assert "Each unit sees 435×435 input pixels <span" in deep and "(larger than the image)" in deep
    assert (
        "Each unit sees 43×43 input pixels (theoretical" in shallow
        and "(larger than the image)" not in shallow
    )


def test_a_deep_network_stays_under_the_html_budget(client: TestClient, sample_image_id: str) -> None:
    # DenseNet-121 has 433 modules: its tree and its receptive-field table are loaded a block at a time.
    params = {"model": "densenet121", "weights": "untrained", "image_id": sample_image_id}
    for url, headers in (
        ("/network", {}),
        ("/receptive-fields", {}),
        ("/receptive-fields/table", HX),
        ("/network/tree", {**HX, "X-Node": ""}),
    ):
        extra = {"node": "features.denseblock3"} if url == "/network/tree" else {}
        r = client.get(url, params={**params, **extra}, headers=headers)
        assert r.status_code == 200, (url, r.text[:300])
        assert len(r.content) < 100_000, (url, len(r.content))
        assert "data:image" not in r.text


# --- counts: MACs and other operations, defined beside the numbers ------------------------------------------------

DEFINITION = "multiply-accumulates of convolutions, linear layers and matrix products"


def _data_value(html: str, marker: str) -> int:
    match = re.search(marker + r'[^>]*data-value="(\d+)"', html)
    assert match, marker
    return int(match.group(1))


def test_network_totals_and_rows_show_other_operations_as_the_api_counts_them(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    api = client.get(f"/api/v1/models/{MODEL}/summary", params={"weights": "untrained"}).json()
    totals = api["totals"]
    assert totals["other_ops"] > 0 and totals["uncounted_types"] == []
    html = " ".join(client.get("/network", params=params).text.split())
    assert _data_value(html, 'id="total-macs"') == totals["macs"]
    assert _data_value(html, 'id="total-other-ops"') == totals["other_ops"]
    assert f"{totals['other_ops']:,}" in html
    assert DEFINITION in html and "normalisation, pooling and activations" in html
    assert "residual connections are not" in html and "Incomplete count" not in html
    # Each row carries both figures, equal to the API's, for a block and (fetched on opening) for a leaf.
    layer1 = next(c for c in api["tree"]["children"] if c["name"] == "layer1")
    assert (
        f'title="MACs {layer1["macs"]}"' in html and f'title="other operations {layer1["other_ops"]}"' in html
    )
    rows = client.get("/network/tree", params={**params, "node": "layer1.0"}, headers=HX).text
    bn1 = next(c for c in layer1["children"][0]["children"] if c["name"] == "layer1.0.bn1")
    assert bn1["macs"] == 0 and bn1["other_ops"] > 0
    assert f'title="other operations {bn1["other_ops"]}"' in rows


def test_an_incomplete_count_says_so_and_names_the_types() -> None:
    from app.web.templating import get_templates

    env = get_templates().env
    macro = env.get_template("macros/counts.html").module.uncounted_note  # type: ignore[attr-defined]
    html = " ".join(str(macro(["MysteryAttention", "Odd"])).split())
    assert "Incomplete count" in html and "MysteryAttention, Odd" in html and "lower bounds" in html
    assert str(macro([])).strip() == ""


def test_milestones_and_models_say_what_the_figures_count(client: TestClient, sample_image_id: str) -> None:
    params = {
        "model_a": "squeezenet1_1",
        "model_b": MODEL,
        "weights": "untrained",
        "image_id": sample_image_id,
    }
    html = " ".join(client.get("/milestones", params=params).text.split())
    for name in ("squeezenet1_1", MODEL):
        totals = client.get(f"/api/v1/models/{name}/summary", params={"weights": "untrained"}).json()[
            "totals"
        ]
        side = html.split(f'data-model="{name}"', 1)[1]
        assert _data_value(side, 'class="total-macs"') == totals["macs"]
        assert _data_value(side, 'class="total-other-ops"') == totals["other_ops"]
    assert DEFINITION in html and "GFLOPs is torchvision" in html
    models = " ".join(client.get("/models").text.split())
    assert "GFLOPs is torchvision" in models and "multiply-accumulates (MACs)" in models


# --- a module called more than once: "called N times" and the call control ----------------------------------------

RELU = "layer1.0.relu"  # ResNet's BasicBlock runs its one ReLU twice: after bn1 and after the residual sum


def _call_options(html: str) -> list[tuple[str, bool, str]]:
    form = re.search(r'<form id="(?:call-controls|rf-call-form)".*?</form>', html, re.S)
    assert form, "no call control"
    return [
        (value, bool(selected), text)
        for value, selected, text in re.findall(
            r'<option value="(-?\d+)"( selected)?>([^<]*)</option>', form.group(0)
        )
    ]


def test_a_layer_called_twice_offers_its_calls_and_shows_the_one_chosen(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": RELU}
    html = client.get("/network", params=params).text
    # The tree says which modules run more than once (the block's rows are fetched when it is opened).
    rows = client.get("/network/tree", params={**params, "node": "layer1.0"}, headers=HX).text
    assert re.search(r'data-layer="layer1\.0\.relu"[^>]*>relu <span class="calls">\(called 2 times\)', rows)
    assert "(called 2 times)" not in rows.split('data-layer="layer1.0.conv1"')[1].split("</li>")[0]
    # The control lists each call with its shape; by default the last call is shown, and the page says so.
    options = _call_options(html)
    assert [(v, s) for v, s, _ in options] == [("0", False), ("1", True)]
    shape = re.search(r"\(ReLU, ([\d×]+)\)", html).group(1)
    assert all(text.endswith(": " + shape) for _, _, text in options) and "(last)" in options[1][2]
    assert "called 2 times; call 1, the last, shown" in html
    # Call 0 and call 1 are different maps (before and after the residual sum), both as the API gives them.
    tiles = {}
    for call in (0, 1):
        r = client.get("/network", params={**params, "call": call}, headers=hx("network-view", "call"))
        assert r.status_code == 200, r.text
        assert query(r.headers["HX-Push-Url"])["call"] == str(call)
        assert f"call {call}, the {'first' if call == 0 else 'last'}, shown" in r.text
        tiles[call] = png_array(client, PICTURE.search(r.text).group(1))
        api = client.post(
            "/api/v1/features",
            json={
                "model": MODEL,
                "weights": "untrained",
                "image_id": sample_image_id,
                "layer": RELU,
                "call": call,
                "per_page": 1,
            },
        ).json()
        assert api["call"] == call and api["calls"] == 2
        assert f"max {api['channels'][0]['max']:.3g}" in r.text
    assert not np.array_equal(tiles[0], tiles[1])
    # The pushed URL renders the same view as a whole page.
    full = client.get(f"/network?{urlencode({**params, 'call': 0})}").text
    assert "call 0, the first, shown" in full and _call_options(full)[0][1]
    # A call the module does not have is named by the field the control sends.
    bad = client.get("/network", params={**params, "call": 5}, headers=hx("network-view", "call"))
    assert bad.status_code == 422 and "<code>call</code>" in bad.text and "2 times" in bad.text
    # A module that runs once has no control.
    once = client.get("/network", params={**params, "layer": "layer1.0.conv1"}, headers=hx("network-view"))
    assert 'id="call-controls"' not in once.text and "called" not in once.text


def test_efficientnet_lite_swish_calls_have_their_own_shapes(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": "efficientnet_lite0", "image_id": sample_image_id, "layer": "_swish"}
    html = client.get("/network", params=params).text
    options = _call_options(html)
    assert len(options) == 2 and options[1][1]
    assert "×" in options[0][2] and options[0][2].split(": ")[1] != options[1][2].split(": ")[1]
    first = client.get("/network", params={**params, "call": 0}, headers=hx("network-view", "call")).text
    last = client.get("/network", params={**params, "call": 1}, headers=hx("network-view", "call")).text
    shape0 = re.search(r", ([\d×]+)\)</span></h2>", first)
    shape1 = re.search(r", ([\d×]+)\)</span></h2>", last)
    assert shape0 and shape1 and shape0.group(1) != shape1.group(1)
    assert shape0.group(1) in options[0][2] and shape1.group(1) in options[1][2]


def test_receptive_fields_offer_the_call_of_a_layer_called_twice(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": RELU}
    html = client.get("/receptive-fields", params=params).text
    assert f'<option value="{RELU}" selected>{RELU} (called 2 times)</option>' in html
    assert [s for _, s, _ in _call_options(html)] == [False, True]
    assert "called 2 times; call 1, the last, shown" in html
    maps = {}
    for call in (0, 1):
        r = client.get("/receptive-fields", params={**params, "call": call}, headers=hx("rf-click"))
        assert r.status_code == 200, r.text
        assert query(r.headers["HX-Push-Url"])["call"] == str(call)
        assert f"call {call}, the {'first' if call == 0 else 'last'}, shown" in r.text
        maps[call] = png_array(client, re.search(r'id="rf-clickable"[^>]*src="([^"]+)"', r.text).group(1))
        api = client.post(
            "/api/v1/receptive-field",
            json={
                "model": MODEL,
                "weights": "untrained",
                "image_id": sample_image_id,
                "layer": RELU,
                "call": call,
            },
        ).json()
        assert f"normalised to its maximum ({api['erf_max']:.4g})" in r.text
    assert not np.array_equal(maps[0], maps[1])
    bad = client.get("/receptive-fields", params={**params, "call": 2}, headers=hx("rf-click"))
    assert bad.status_code == 422 and "<code>call</code>" in bad.text


def test_a_typed_url_with_a_call_the_layer_lacks_shows_the_page_with_the_message_beside_the_control(
    client: TestClient, sample_image_id: str
) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id, "layer": RELU, "call": 5}
    for path, form in (("/network", "call-controls"), ("/receptive-fields", "rf-call-form")):
        r = client.get(path, params=params)
        assert r.status_code == 422 and "<html" in r.text
        control = re.search(rf'<form id="{form}".*?</form>', r.text, re.S).group(0)
        assert (
            'aria-invalid="true"' in control and "2 times" in control and 'class="field-message"' in control
        )
        # The view shown is the default call (the last), and says so.
        assert "call 1, the last, shown" in r.text and _call_options(r.text)[1][1]
    # A module that runs once has no control: the message stands on its own.
    r = client.get("/network", params={**params, "layer": "layer1.0.conv1", "call": 1})
    assert r.status_code == 422 and 'id="call-controls"' not in r.text
    assert re.search(r'<p class="field-message" role="alert">[^<]*once', r.text)
