"""Latency of filtering a 512x512 image through POST /api/v1/filter vs bare torch conv2d, same process.

Run:  .venv/bin/python bench/bench_filter.py [--repeats 15]

Prints median milliseconds for a 3x3 and an 11x11 kernel: the API (in-process TestClient, format=npy and
format=png), the core's apply_kernels, and F.pad + F.conv2d on the same array; then ratios API / conv2d.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.core.convolution.arithmetic import KernelInput, apply_kernels
from app.main import create_app


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the app shares 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    pixels = (rng.random((512, 512)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp) / "data", torch_threads=args.threads))
        with TestClient(app) as client:
            # a real 512x512 photo compresses like class material; noise would make PNG encoding look worse
            photos = [r for r in app.state.image_store.list_images() if (r.width, r.height) == (512, 512)]
            if photos:
                image_id, source = photos[0].id, f"sample {photos[0].name!r}"
            else:
                up = client.post("/api/v1/images", files={"file": ("bench.png", buf.getvalue(), "image/png")})
                up.raise_for_status()
                image_id, source = up.json()["id"], "uniform noise"
            image = app.state.image_store.load(image_id)
            if image.ndim == 3:
                # the API's grey mode uses BT.601 luma; bare conv2d gets the same plane
                image = np.tensordot(image, np.array([0.299, 0.587, 0.114], np.float32), axes=([2], [0]))
            image = np.ascontiguousarray(image, dtype=np.float32)
            print(
                f"{source}: {image.shape} float32, torch threads {torch.get_num_threads()}, repeats {args.repeats}"
            )
            print(
                f"{'kernel':>7} {'conv2d':>9} {'core':>9} {'API npy':>9} {'API png':>9} {'npy/conv':>9} {'png/conv':>9}"
            )
            for k in (3, 11):
                weights = rng.normal(size=(k, k)).round(3)
                x = torch.from_numpy(image)[None, None]
                w = torch.from_numpy(weights.astype(np.float32))[None, None]
                pad = k // 2

                def bare(x: torch.Tensor = x, w: torch.Tensor = w, pad: int = pad) -> object:
                    with torch.inference_mode():
                        return F.conv2d(F.pad(x, (pad,) * 4), w)

                def core(weights: np.ndarray = weights) -> object:
                    return apply_kernels(image, [KernelInput("k", weights)], mode="grey", padding="zeros")

                body = {
                    "image_id": image_id,
                    "kernels": [{"weights": weights.tolist()}],
                    "padding": "zeros",
                    "mode": "grey",
                }

                def api(fmt: str, body: dict[str, object] = body) -> Callable[[], object]:
                    def call() -> object:
                        r = client.post("/api/v1/filter", json={**body, "format": fmt})
                        r.raise_for_status()
                        return r.content

                    return call

                got = np.load(io.BytesIO(api("npy")()))  # type: ignore[arg-type]
                np.testing.assert_allclose(got[0], bare()[0, 0].numpy(), atol=1e-4)  # type: ignore[index]
                t_bare = median_ms(bare, args.repeats)
                t_core = median_ms(core, args.repeats)
                t_npy = median_ms(api("npy"), args.repeats)
                t_png = median_ms(api("png"), args.repeats)
                print(
                    f"{k:>4}x{k:<2} {t_bare:9.2f} {t_core:9.2f} {t_npy:9.2f} {t_png:9.2f} "
                    f"{t_npy / t_bare:9.1f} {t_png / t_bare:9.1f}"
                )
    print("times are median milliseconds; ratios are API time / bare conv2d time measured above")


if __name__ == "__main__":
    main()
