"""Explanation speed, each figure a ratio against a reference measured in the same run.

1. Grad-CAM on ResNet-50 at 224x224 vs one bare forward (target <= 1.5x), beside pytorch-grad-cam,
   TorchCAM and Captum's LayerGradCam on the same model and input.
2. A full occlusion map (16 px window, stride 8, 224x224: 27 x 27 = 729 windows) vs Captum's ``Occlusion``
   with ``perturbations_per_eval`` batching, same model, same batch size (target: no slower).
3. Progressive occlusion: time to the first coarse map vs the full map (target <= 0.1), and the coarse
   map's correlation with the full one.

4. A comparison (the default methods and the random map, RISE deletion/insertion, about 224 steps per curve) on
   the built-in nodule CNN and on EfficientNet-Lite0 at their own input size, as a ratio to one bare forward:
   "before" = each map's two curves in their own batches, every step's image evaluated (the loop this app ran
   until the curves were shared), "after" = :func:`app.core.explanation.faithfulness.evaluate_maps` (shared
   batches, equal images once). Both must give the same curves; the images sent through the network are counted.

Run:  .venv/bin/python bench/bench_explain.py            (ResNet-18 for the occlusion part: see --occlusion-model)
      .venv/bin/python bench/bench_explain.py --only-compare   (part 4 alone)
      .venv/bin/python bench/bench_explain.py --quick    (fewer repeats)
Untrained (seeded) weights: speed does not depend on the weights. CPU only; the machine may be shared, so
each timing is the median of interleaved repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.explanation import cam, occlusion


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up (allocator, lazy init)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved so that load on a shared machine hits all alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_grad_cam(repeats: int) -> None:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchCamGradCAM

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        target = int(model(x).argmax())

    def bare_forward() -> object:
        with torch.inference_mode():
            return model(x)

    def ours() -> object:
        return cam.compute_cams(model, x, ["gradcam"], "layer4", target).maps["gradcam"]

    lib = GradCAM(model=model, target_layers=[model.layer4])

    def pytorch_grad_cam() -> object:
        out = lib(x, [ClassifierOutputTarget(target)])
        model.zero_grad(set_to_none=True)
        return out

    def torchcam() -> object:
        with TorchCamGradCAM(model, target_layer="layer4") as extractor:
            scores = model(x)
            return extractor(target, scores)

    captum_cam = LayerGradCam(model, model.layer4)

    def captum() -> object:
        return captum_cam.attribute(x, target=target)

    times = _median_times(
        {
            "bare forward (inference_mode)": bare_forward,
            "ConvScope Grad-CAM": ours,
            "pytorch-grad-cam GradCAM": pytorch_grad_cam,
            "TorchCAM GradCAM": torchcam,
            "Captum LayerGradCam": captum,
        },
        repeats,
    )
    # Agreement with the reference library on this very input (raw maps, before its resize/normalisation).
    lib(x, [ClassifierOutputTarget(target)])
    acts = lib.activations_and_grads.activations[0].numpy()
    grads = lib.activations_and_grads.gradients[0].numpy()
    raw_lib = np.maximum(lib.get_cam_image(x, model.layer4, None, acts, grads, False), 0)  # type: ignore[arg-type]
    lib.activations_and_grads.release()
    model.zero_grad(set_to_none=True)
    raw_ours = ours()
    assert isinstance(raw_ours, np.ndarray)
    diff = float(np.abs(raw_ours - raw_lib).max())
    base = times["bare forward (inference_mode)"]
    print(f"\n1. Grad-CAM, ResNet-50 (untrained, seeded), 1x3x224x224, target layer4, median of {repeats}")
    print(f"   {'method':34s} {'seconds':>9s} {'x forward':>10s}")
    for name, t in times.items():
        print(f"   {name:34s} {t:9.4f} {t / base:10.2f}")
    verdict = "PASS" if times["ConvScope Grad-CAM"] / base <= 1.5 else "FAIL"
    print(f"   target: ConvScope <= 1.5x forward -> {verdict}")
    print(
        f"   max |ConvScope - pytorch-grad-cam| on the raw 7x7 map: {diff:.3g} (map max {float(raw_lib.max()):.3g})"
    )


def bench_occlusion(model_name: str, batch: int, repeats: int) -> None:
    from captum.attr import Occlusion

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        target = int(model(x).argmax())

    def prob(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(t), dim=1)

    captum_occ = Occlusion(prob)
    results: dict[str, np.ndarray] = {}

    def ours() -> object:
        results["ours"] = occlusion.occlusion(model, x, target, window=16, stride=8, batch_size=batch).map
        return results["ours"]

    def captum() -> object:
        with torch.no_grad():
            out = captum_occ.attribute(
                x,
                sliding_window_shapes=(3, 16, 16),
                strides=(3, 8, 8),
                baselines=0,
                target=target,
                perturbations_per_eval=batch,
            )
        results["captum"] = out[0, 0].numpy()
        return out

    first: list[float] = []
    coarse: dict[str, np.ndarray] = {}

    def progressive() -> object:
        t0 = time.perf_counter()

        def on_partial(part: occlusion.PartialMap) -> None:
            if "map" not in coarse:
                first.append(time.perf_counter() - t0)
                coarse["map"] = part.map
                coarse["fraction"] = np.array(part.fraction)

        coarse.clear()
        return occlusion.occlusion(
            model, x, target, window=16, stride=8, batch_size=batch, progressive=True, on_partial=on_partial
        )

    times = _median_times(
        {"ConvScope occlusion": ours, "Captum Occlusion": captum, "ConvScope progressive": progressive},
        repeats,
    )
    diff = float(np.abs(results["ours"] - results["captum"]).max())
    t_first = statistics.median(first)
    corr = float(np.corrcoef(coarse["map"].ravel(), results["ours"].ravel())[0, 1])
    print(
        f"\n2. Occlusion, {model_name} (untrained, seeded), 224x224, window 16, stride 8, 729 windows, "
        f"batches of {batch}, median of {repeats}"
    )
    print(f"   ConvScope occlusion         {times['ConvScope occlusion']:8.2f} s")
    print(
        f"   Captum Occlusion            {times['Captum Occlusion']:8.2f} s  (perturbations_per_eval={batch})"
    )
    ratio = times["ConvScope occlusion"] / times["Captum Occlusion"]
    print(
        f"   ratio ConvScope / Captum    {ratio:8.2f}   target <= 1.0 -> {'PASS' if ratio <= 1.0 else 'FAIL'}"
    )
    print(
        f"   max |ConvScope - Captum| over the map: {diff:.3g} (map max {float(np.abs(results['captum']).max()):.3g})"
    )
    print("\n3. Progressive occlusion (same model and settings)")
    print(
        f"   first coarse map after      {t_first:8.2f} s  ({100 * float(coarse['fraction']):.1f}% of the windows)"
    )
    print(f"   full map (non-progressive)  {times['ConvScope occlusion']:8.2f} s")
    print(f"   progressive run, to the end {times['ConvScope progressive']:8.2f} s")
    first_ratio = t_first / times["ConvScope occlusion"]
    print(
        f"   ratio first / full          {first_ratio:8.3f}   target <= 0.1 -> {'PASS' if first_ratio <= 0.1 else 'FAIL'}"
    )
    print(f"   Pearson r, coarse vs full   {corr:8.3f}")


def _before_curves(
    model: torch.nn.Module, x: torch.Tensor, maps: dict[str, np.ndarray], target: int, batch: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The per-map loop as it was: rise_blur per map, each curve's every step evaluated, batches per curve."""
    from app.core.explanation import faithfulness as fa

    _, _, h, w = x.shape
    step = fa.rise_step_pixels((h, w))
    n = fa.protocol_steps("rise", (h, w), 16)
    counts = torch.clamp(torch.arange(n + 1) * step, max=h * w).long()
    out = {}
    for name, sal in maps.items():
        ranks = torch.from_numpy(fa.pixel_ranks(sal, (h, w), 0, "rise"))
        blurred = fa.rise_blur(x)
        curves = []
        for start, end in ((x, torch.zeros_like(x)), (blurred, x)):
            probs = []
            for s in range(0, len(counts), batch):
                masks = (ranks[None, None] < counts[s : s + batch, None, None, None]).to(x.dtype)
                b = (start * (1 - masks) + end * masks).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    probs.append(torch.softmax(model(b).float(), dim=1)[:, target])
            curves.append(torch.cat(probs).numpy())
        out[name] = (curves[0], curves[1])
    return out


def bench_compare(models: list[str], batch: int, repeats: int) -> None:
    import tempfile

    from app.config import Settings
    from app.services.models import ModelRegistry

    print("\n4. Comparison with RISE deletion/insertion: time / one bare forward (same process, interleaved)")
    registry = ModelRegistry(Settings(data_dir=Path(tempfile.mkdtemp())))
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([xx * 4, yy * 4, np.full_like(xx, 90)], axis=2).astype(np.float32) / 255
    rgb[20:40, 24:44] = 250 / 255  # the tests' sample picture
    for name in models:
        _bench_compare_one(registry.get(name), rgb, batch, repeats)


def _bench_compare_one(loaded: Any, rgb: np.ndarray, batch: int, repeats: int) -> None:
    from app.core.explanation import faithfulness as fa
    from app.services import explain

    name = loaded.name
    model = loaded.module
    x = loaded.prepare(rgb).tensor
    methods = [*explain.DEFAULT_COMPARE, "random"]
    res = cam.compute_cams(model, x, methods, explain.resolve_layer(loaded, x, None)[0], None)
    maps = {m: res.maps[m][0] for m in methods}
    target = res.targets[0]
    counted = [0]
    hook = model.register_forward_pre_hook(lambda _m, a: counted.__setitem__(0, counted[0] + a[0].shape[0]))
    before = _before_curves(model, x, maps, target, batch)
    n_before, counted[0] = counted[0], 0
    after = fa.evaluate_maps(model, x, maps, target, protocol="rise", batch_size=batch)
    n_after = counted[0]
    hook.remove()
    worst = max(
        float(
            np.abs(after[m].deletion - before[m][0]).max() + np.abs(after[m].insertion - before[m][1]).max()
        )
        for m in maps
    )

    def bare() -> object:  # 20 forwards: a few ms each, too short to time alone on a shared machine
        with torch.inference_mode():
            for _ in range(20):
                model(x)
        return None

    t = _median_times(
        {
            "bare": bare,
            "before": lambda: _before_curves(model, x, maps, target, batch),
            "after": lambda: fa.evaluate_maps(model, x, maps, target, protocol="rise", batch_size=batch),
        },
        repeats,
    )
    t["bare"] /= 20
    steps = after[methods[0]].steps
    print(
        f"   {name} {tuple(x.shape[1:])}, {len(maps)} maps x 2 curves x {steps + 1} images, batch {batch}: "
        f"bare forward {t['bare'] * 1000:.2f} ms"
    )
    print(f"     before {t['before']:7.2f} s = {t['before'] / t['bare']:7.0f}x forward, {n_before} images")
    print(
        f"     after  {t['after']:7.2f} s = {t['after'] / t['bare']:7.0f}x forward, {n_after} images "
        f"(speed-up {t['before'] / t['after']:.2f}x; largest curve difference {worst:.1e})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--occlusion-model", default="resnet18", help="torchvision model for parts 2 and 3")
    parser.add_argument(
        "--batch", type=int, default=64, help="perturbations per forward, both implementations"
    )
    parser.add_argument("--skip-occlusion", action="store_true")
    parser.add_argument("--only-compare", action="store_true", help="part 4 alone")
    parser.add_argument("--compare-models", default="nodule-cnn,efficientnet_lite0")
    parser.add_argument("--compare-batch", type=int, default=33, help="images per forward in part 4")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only_compare:
        bench_compare(args.compare_models.split(","), args.compare_batch, repeats=1 if args.quick else 3)
        return
    bench_grad_cam(repeats=5 if args.quick else 15)
    bench_compare(args.compare_models.split(","), args.compare_batch, repeats=1 if args.quick else 3)
    if not args.skip_occlusion:
        bench_occlusion(args.occlusion_model, args.batch, repeats=1 if args.quick else 3)


if __name__ == "__main__":
    main()
