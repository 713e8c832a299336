"""Benchmark the inside-the-network views on ResNet-50 at 224x224 (random weights are fine for timing).

Prints, each next to the bare forward pass measured in the same run:
- time to the first feature-map grid on a cold service (layer tree, receptive fields and every
  activation from one forward pass, then rendering a page of 32 maps), and capture + render alone;
- time to switch layers once the forward pass is cached (rendering only);
- peak memory (RSS) with three zoo models loaded and one image captured through each.

Run: .venv/bin/python bench/bench_network.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from app.config import Settings
from app.services.images import ImageStore
from app.services.models import ModelRegistry
from app.services.network import NetworkService


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args()

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="convscope-bench-")), model_cache_size=4)
    settings.ensure_dirs()
    store = ImageStore(settings)
    store.ensure_samples()
    registry = ModelRegistry(settings)
    image = next(r for r in store.list_images() if r.mode == "RGB" and r.width >= 224)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; image {image.name!r} {image.width}x{image.height}"
    )
    rss0, _ = rss_mib()

    loaded = registry.get(args.model, "untrained")
    x = loaded.prepare(store.load(image.id)).tensor
    print(f"model {loaded.display_name} ({loaded.weights_status}), input {tuple(x.shape)}")

    def bare() -> None:
        with torch.inference_mode():
            loaded.module(x)

    def first_grid() -> None:
        # A fresh service: nothing cached (tree, receptive fields and activations come from one pass).
        NetworkService(registry, store).features(
            args.model, "untrained", image.id, "layer1", per_page=32, with_grid=True
        )

    service = NetworkService(registry, store)

    def capture_and_render() -> None:
        # Structure cached, activations not (another image of the same size): capture + render.
        service._activations.clear()
        service.features(args.model, "untrained", image.id, "layer1", per_page=32, with_grid=True)

    layers = ["layer1", "layer2.3", "layer3", "layer4.2.conv2", "conv1", "layer2"]

    def switch() -> None:
        for layer in layers:
            service.features(args.model, "untrained", image.id, layer, per_page=32, with_grid=True)

    bare()  # warm-up (allocator, kernels)
    first_grid()
    # The machine is shared: each repeat measures the bare forward right next to the others, and the
    # ratios are taken within a repeat, then the median over repeats is reported.
    rows: dict[str, list[float]] = {"forward": [], "cold": [], "capture": [], "switch": []}
    for _ in range(args.repeats):
        rows["forward"].append(timed(bare, 1))
        rows["cold"].append(timed(first_grid, 1))
        rows["capture"].append(timed(capture_and_render, 1))
        passes = service.forward_passes
        rows["switch"].append(timed(switch, 1) / len(layers))
        assert service.forward_passes == passes, "switching layers must not run the model again"
    cached_mib = service.activations(loaded, image.id).capture.nbytes / 2**20

    def med(key: str) -> float:
        return statistics.median(rows[key])

    def ratio(key: str) -> float:
        return statistics.median(a / b for a, b in zip(rows[key], rows["forward"], strict=True))

    print()
    print(f"{'measure (median of ' + str(args.repeats) + ')':60s} {'seconds':>9s} {'x forward':>10s}")
    print(f"{'bare forward (inference_mode)':60s} {med('forward'):9.3f} {1.0:10.2f}")
    label = "first grid, cold (one pass: tree + RF + capture; render 32)"
    print(f"{label:60s} {med('cold'):9.3f} {ratio('cold'):10.2f}")
    label = "first grid, structure cached (capture + render 32)"
    print(f"{label:60s} {med('capture'):9.3f} {ratio('capture'):10.2f}")
    label = "switch layer, activations cached (render 32 + grid PNG)"
    print(f"{label:60s} {med('switch'):9.3f} {ratio('switch'):10.2f}")
    print(f"cached activations of one image (every module): {cached_mib:.0f} MiB")

    # Memory: three zoo models loaded, one image captured through each.
    zoo = [args.model, "vgg16", "densenet121"]
    for name in zoo:
        service.features(name, "untrained", image.id, None, per_page=8)
    rss, peak = rss_mib()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"RSS before loading models: {rss0:.0f} MiB")
    print(
        f"with {', '.join(zoo)} loaded + one capture each: RSS {rss:.0f} MiB, peak (VmHWM) {peak:.0f} MiB, ru_maxrss {maxrss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
