"""HTML weight of the pages, and the time to the first picture of /network, next to a bare forward pass.

Prints:
- the bytes of HTML (and how many pictures are inlined as data URIs, how many are served by URL) of `/`,
  `/network` (ResNet-18 on the cat photo, layer1), `/network` as it opens, `/receptive-fields`, `/explain` and
  `/compare`, each against the 100 KB budget of issue 10;
- the time to first picture of /network (ResNet-18, cat, layer1) on a cold service (no activations, no
  pictures cached): the page's HTML plus the first /pictures/ PNG the page names (a page that inlines its
  pictures has its first picture when its HTML has arrived), as a ratio to a bare forward pass of the same model
  on the same input measured in the same run; and the same for an HTMX layer switch once the forward pass is
  cached (the region's HTML and its first picture).

Run: python bench/bench_pages.py [--repeats 5] (through the app in-process with Starlette's TestClient: no
network, no server; weights as the page would use them, random where none are cached).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services.network import NetworkService
from app.services.pictures import PictureStore

MODEL = "resnet18"
BUDGET = 100_000
PICTURE_URL = re.compile(r'(?:src|href)="(/pictures/[0-9a-f]+\.png)"')
DATA_URI = "data:image/"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes-only", action="store_true", help="only the HTML bytes")
    args = parser.parse_args()

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="convscope-bench-pages-")))
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        samples = client.get("/api/v1/samples").json()["images"]
        cat = next(s for s in samples if "chelsea" in s["name"].lower() or "cat" in s["name"].lower())
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; image {cat['name']!r}")

        network_url = f"/network?model={MODEL}&image_id={cat['id']}&layer=layer1"
        pages = [
            ("/", "/"),
            ("/network (resnet18, cat, layer1)", network_url),
            ("/network (as it opens)", "/network"),
            ("/receptive-fields (as it opens)", "/receptive-fields"),
            ("/explain (as it opens)", "/explain"),
            (
                "/explain (resnet18, cat, Grad-CAM)",
                f"/explain?model={MODEL}&image_id={cat['id']}&method=gradcam",
            ),
            ("/compare (as it opens)", "/compare"),
            ("/compare (resnet18, cat)", f"/compare?model={MODEL}&image_id={cat['id']}"),
        ]
        print()
        print(f"{'page':40s} {'HTML bytes':>11s} {'data URIs':>10s} {'by URL':>7s} {'budget':>7s}")
        for label, url in pages:
            r = client.get(url)
            assert r.status_code == 200, (url, r.status_code)
            html = r.text
            ok = "ok" if len(r.content) <= BUDGET else "OVER"
            print(
                f"{label:40s} {len(r.content):11,d} {html.count(DATA_URI):10d} "
                f"{len(set(PICTURE_URL.findall(html))):7d} {ok:>7s}"
            )

        if args.sizes_only:
            return
        loaded = state.registry.get(MODEL, "auto")
        x = state.network_service.net_input(loaded, cat["id"]).tensor

        def bare() -> None:
            with torch.inference_mode():
                loaded.module(x)

        def first_picture(url: str, headers: dict[str, str] | None = None) -> None:
            r = client.get(url, headers=headers or {})
            assert r.status_code == 200
            found = PICTURE_URL.search(r.text)
            if found:  # pictures by URL: the first one the page names
                picture = client.get(found.group(1))
                assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"

        def cold() -> None:
            # A fresh service and picture store: no activations, no structure, no picture cached.
            state.network_service = NetworkService(state.registry, state.image_store)
            state.pictures = PictureStore.from_settings(settings)
            first_picture(network_url)

        switch_headers = {"HX-Request": "true", "HX-Target": "network-view"}
        layers = ["layer2", "layer3", "layer4", "conv1"]

        # Before issue 10 the region had a route of its own; run against such a tree, the bench uses it.
        probe = client.get(f"/network/features?model={MODEL}&layer=conv1", headers=switch_headers)
        region = "/network/features" if probe.status_code == 200 else "/network"

        def switch() -> None:
            for layer in layers:
                first_picture(f"{region}?model={MODEL}&image_id={cat['id']}&layer={layer}", switch_headers)

        bare()
        cold()  # warm-up: the model is loaded once, as in a running server
        rows: dict[str, list[float]] = {"forward": [], "cold": [], "switch": []}
        for _ in range(args.repeats):
            rows["forward"].append(timed(bare))
            rows["cold"].append(timed(cold))
            rows["switch"].append(timed(switch) / len(layers))

        def med(key: str) -> float:
            return statistics.median(rows[key])

        def ratio(key: str) -> float:
            return statistics.median(a / b for a, b in zip(rows[key], rows["forward"], strict=True))

        print()
        print(f"{loaded.display_name} ({loaded.weights_status}), input {tuple(x.shape)}")
        print(
            f"{'time to first picture (median of ' + str(args.repeats) + ')':60s} {'seconds':>9s} {'x forward':>10s}"
        )
        print(f"{'bare forward (inference_mode)':60s} {med('forward'):9.3f} {1.0:10.2f}")
        label = "/network cold: page HTML + first /pictures/ PNG"
        print(f"{label:60s} {med('cold'):9.3f} {ratio('cold'):10.2f}")
        label = f"layer switch ({region}, HTMX) + first picture, cached pass"
        print(f"{label:60s} {med('switch'):9.3f} {ratio('switch'):10.2f}")


if __name__ == "__main__":
    main()
