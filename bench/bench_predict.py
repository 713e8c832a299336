"""Median latency of POST /api/v1/predict next to the bare model(x) time, measured in the same process.

Run: .venv/bin/python bench/bench_predict.py [--repeat 30]
Prints, per model, the API median, the bare forward median and their ratio (the API's overhead: decoding the
stored image, preprocessing, the forward pass, softmax, JSON).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app


def _median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    photo = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app(Settings(data_dir=tmp))) as client:
        image_id = client.post(
            "/api/v1/images", files={"file": ("bench.png", buffer.getvalue(), "image/png")}
        ).json()["id"]
        registry = client.app.state.registry  # type: ignore[attr-defined]
        store = client.app.state.image_store  # type: ignore[attr-defined]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{'model':<12} {'API median ms':>14} {'model(x) ms':>12} {'ratio':>6}")
        for name, weights in (("resnet18", "untrained"), ("nodule-cnn", "auto")):
            body = {"image_id": image_id, "model": name, "weights": weights, "k": 5}
            for _ in range(3):
                assert client.post("/api/v1/predict", json=body).status_code == 200
            loaded = registry.get(name, weights)
            x = loaded.prepare(store.load(image_id)).tensor

            def call_api(body: dict[str, object] = body) -> None:
                client.post("/api/v1/predict", json=body)

            def bare(loaded: object = loaded, x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    loaded.module(x)  # type: ignore[attr-defined]

            # Interleaved, so that load from other processes hits both sides alike.
            api_times, raw_times = [], []
            for _ in range(args.repeat):
                api_times.append(_median_ms(call_api, 1))
                raw_times.append(_median_ms(bare, 1))
            api, raw = statistics.median(api_times), statistics.median(raw_times)
            print(f"{name:<12} {api:>14.2f} {raw:>12.2f} {api / raw:>6.2f}")


if __name__ == "__main__":
    main()
