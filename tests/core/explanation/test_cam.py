"""CAM methods: they find the blob, agree with pytorch-grad-cam, and leave the model as they found it."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from app.core.explanation import cam

SPATIAL_METHODS = [m for m in cam.METHODS if m != "random"]
LIBRARY = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", SPATIAL_METHODS)
def test_peak_falls_on_the_blob(
    method: str,
    channels: int,
    blob_centre: tuple[int, int],
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
) -> None:
    model = blob_net(in_channels=channels)
    x = blob_image(channels=channels)
    res = cam.compute_cams(model, x, [method], layer="features", target=1)
    m = res.maps[method]
    assert m.shape == (1, 32, 32)
    assert m.dtype == np.float32
    peak = np.unravel_index(int(m[0].argmax()), m[0].shape)
    assert abs(peak[0] - blob_centre[0]) <= 1 and abs(peak[1] - blob_centre[1]) <= 1
    # Raw maps are ReLU'd but not normalised.
    assert m.min() >= 0


def test_random_baseline_is_seeded_noise(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image()
    a = cam.compute_cams(model, x, ["random"], "features", seed=3).maps["random"]
    b = cam.compute_cams(model, x, ["random"], "features", seed=3).maps["random"]
    c = cam.compute_cams(model, x, ["random"], "features", seed=4).maps["random"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (1, 32, 32)


def test_default_target_is_top1(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image()
    res = cam.compute_cams(model, x, ["gradcam"], "features")
    assert res.targets == [int(model(x).argmax())] == [1]
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def _library_raw(method: str, model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, target: int):
    """pytorch-grad-cam's map before its resize/normalisation, and its final normalised map."""
    lib = LIBRARY[method](model=model, target_layers=[layer])
    try:
        targets = [ClassifierOutputTarget(target)]
        final = lib(x, targets)
        acts = lib.activations_and_grads.activations[0].numpy()
        grads_list = lib.activations_and_grads.gradients
        grads = grads_list[0].numpy() if grads_list else None
        if method in ("scorecam", "ablationcam"):
            raw = None  # their weights need extra forwards: compare the final maps only
        elif method == "eigencam":
            # The library keeps whichever sign its SVD returned; ours flips the projection so that its
            # largest magnitude is positive (Seg-Eigen-CAM's rule). Same rule on the library's projection,
            # then the library's own scaling to its picture.
            projection = lib.get_cam_image(x, layer, targets, acts, grads, False)
            flip = np.abs(projection.min(axis=(1, 2))) > np.abs(projection.max(axis=(1, 2)))
            raw = np.maximum(np.where(flip[:, None, None], -projection, projection), 0)
            final = scale_cam_image(scale_cam_image(raw, (x.shape[-1], x.shape[-2])))
        else:
            raw = np.maximum(lib.get_cam_image(x, layer, targets, acts, grads, False), 0)
    finally:
        lib.activations_and_grads.release()
    return raw, final


@pytest.mark.parametrize("method", list(LIBRARY))
def test_agrees_with_pytorch_grad_cam(method: str, small_cnn: Callable[..., nn.Module]) -> None:
    model = small_cnn(seed=1)
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    target = 3
    ours = cam.compute_cams(model, x, [method], "features", target=target).maps[method]
    raw, final = _library_raw(method, model, model.features, x, target)
    if raw is not None:
        np.testing.assert_allclose(ours, raw, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(raw).max())))
    # The library's picture: normalise, resize (OpenCV bilinear), normalise again.
    picture = cam.normalise(cam.upsample(cam.normalise(ours), (24, 24)))
    np.testing.assert_allclose(picture, final, atol=1e-4)


def _numpy_eigen_cam(acts: np.ndarray) -> np.ndarray:
    """Eigen-CAM from numpy's SVD (LAPACK through numpy, not torch): per sample, the centred (hw, K) matrix
    projected on its first right-singular vector, the sign fixed so the largest magnitude is positive."""
    out = []
    for sample in acts.astype(np.float64):
        k, h, w = sample.shape
        matrix = sample.reshape(k, h * w).T
        matrix = matrix - matrix.mean(axis=0)
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vt[0]
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        out.append(np.maximum(projection, 0).reshape(h, w))
    return np.asarray(out)


@pytest.mark.parametrize("seed", range(6))
def test_eigen_cam_is_the_first_principal_component(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    # Post-ReLU activations with structure (a few channels share a spatial pattern) plus noise, batch of 2.
    pattern = torch.rand(2, 1, 7, 5, generator=gen)
    acts = torch.relu(
        torch.rand(2, 12, 1, 1, generator=gen) * pattern + 0.3 * torch.randn(2, 12, 7, 5, generator=gen)
    )
    ours = cam._eigen_maps(acts)
    assert ours.shape == (2, 7, 5) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _numpy_eigen_cam(acts.numpy()), rtol=1e-4, atol=1e-5)
    # The sign rule is applied, not inherited: negating the centred data leaves the map unchanged.
    np.testing.assert_allclose(cam._eigen_maps(-acts), ours, rtol=1e-4, atol=1e-5)


def test_eigen_cam_treats_nan_as_zero() -> None:
    acts = torch.relu(torch.randn(1, 6, 4, 4, generator=torch.Generator().manual_seed(0)))
    broken = acts.clone()
    broken[0, 2, 1, 1] = float("nan")
    acts[0, 2, 1, 1] = 0.0
    np.testing.assert_allclose(cam._eigen_maps(broken), cam._eigen_maps(acts), rtol=1e-5, atol=1e-7)


def test_grad_cam_agrees_on_a_resnet() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = cam.compute_cams(model, x, ["gradcam"], "layer4").maps["gradcam"]
    target = int(model(x).argmax())
    raw, _ = _library_raw("gradcam", model, model.layer4, x, target)
    np.testing.assert_allclose(ours, raw, rtol=1e-4, atol=1e-6)


def test_many_methods_share_one_pass_and_match_single_calls(small_cnn: Callable[..., nn.Module]) -> None:
    model = small_cnn(seed=4)
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(5))
    methods = list(cam.METHODS)
    together = cam.compute_cams(model, x, methods, "features", target=2, batch_size=5)
    for m in methods:
        alone = cam.compute_cams(model, x, [m], "features", target=2).maps[m]
        np.testing.assert_allclose(together.maps[m], alone, rtol=1e-5, atol=1e-7)


def test_model_state_is_restored(
    small_cnn: Callable[..., nn.Module], assert_model_clean: Callable[[nn.Module], None]
) -> None:
    model = small_cnn(seed=0)
    model.train()
    model.fc.bias.requires_grad_(False)  # a user-frozen parameter must stay frozen
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    running = model.features[1].running_mean.clone()
    x = torch.randn(1, 3, 16, 16)
    cam.compute_cams(model, x, list(cam.METHODS), "features", batch_size=7)
    assert all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert_model_clean(model)
    # Eval mode during the call: batch-norm statistics were not updated.
    torch.testing.assert_close(model.features[1].running_mean, running)


def test_state_restored_after_an_error(
    small_cnn: Callable[..., nn.Module], assert_model_clean: Callable[[nn.Module], None]
) -> None:
    model = small_cnn(seed=0)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="target"):
        cam.compute_cams(model, x, ["gradcam"], "features", target=99)
    assert_model_clean(model)
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training

    def cancel() -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        cam.compute_cams(model, x, ["scorecam"], "features", check=cancel)
    assert_model_clean(model)
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_method_and_layer(
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
    assert_model_clean: Callable[[nn.Module], None],
) -> None:
    model, x = blob_net(), blob_image()
    with pytest.raises(KeyError):
        cam.compute_cams(model, x, ["nocam"], "features")
    with pytest.raises(KeyError):
        cam.compute_cams(model, x, ["gradcam"], "features.9")
    with pytest.raises(ValueError, match=r"\d-D output"):
        cam.compute_cams(model, x, ["gradcam"], "fc")
    assert_model_clean(model)


def test_concurrent_calls_do_not_corrupt_each_other(
    small_cnn: Callable[..., nn.Module], assert_model_clean: Callable[[nn.Module], None]
) -> None:
    model = small_cnn(seed=7)
    inputs = [torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    methods = ["gradcam", "layercam", "eigencam", "ablationcam"]
    expected = [cam.compute_cams(model, x, methods, "features", target=i).maps for i, x in enumerate(inputs)]
    results: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for rep in range(3):
                for i, x in enumerate(inputs):
                    results[(worker, rep * 10 + i)] = cam.compute_cams(
                        model, x, methods, "features", target=i
                    ).maps
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2 * 3 * len(inputs)
    for (_, key), maps in results.items():
        for m in methods:
            np.testing.assert_allclose(maps[m], expected[key % 10][m], rtol=1e-5, atol=1e-7)
    assert_model_clean(model)
    assert all(p.requires_grad for p in model.parameters())


def test_batch_of_two_with_one_target_each(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x1 = blob_net(), blob_image()
    x = torch.cat([x1, torch.flip(x1, dims=[3])])
    res = cam.compute_cams(model, x, ["gradcam"], "features", target=[1, 1])
    m = res.maps["gradcam"]
    np.testing.assert_allclose(m[1], m[0][:, ::-1], rtol=1e-4, atol=1e-7)


def test_layers_and_default_layer(
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
    small_cnn: Callable[..., nn.Module],
    assert_model_clean: Callable[[nn.Module], None],
) -> None:
    model, x = blob_net(), blob_image()
    layers = cam.trace_layers(model, x)
    assert [info.name for info in layers] == ["features.0", "features.1", "features", "pool"]
    assert layers[0].shape == (2, 32, 32)
    # The generic rule climbs from the last ReLU to its whole block, and skips global pooling.
    assert cam.default_layer(model, x) == "features"
    assert cam.default_layer(small_cnn(), torch.randn(1, 3, 16, 16)) == "features"
    assert_model_clean(model)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", "layer4"), ("squeezenet1_1", "features"), ("mobilenet_v3_small", "features.12")],
)
def test_default_layer_for_torchvision_families(name: str, expected: str) -> None:
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    assert cam.default_layer(model, x) == expected
    # The chosen layer really has a spatial map.
    infos = {i.name: i for i in cam.trace_layers(model, x)}
    assert infos[expected].shape[1] >= 2 and infos[expected].shape[2] >= 2


def test_upsample_and_normalise() -> None:
    m = np.array([[0.0, 2.0], [4.0, 6.0]], dtype=np.float32)
    n = cam.normalise(m)
    assert n.min() == 0 and abs(float(n.max()) - 1) < 1e-6
    up = cam.upsample(m, (4, 4))
    assert up.shape == (4, 4)
    # Half-pixel centres: the corners keep the corner values.
    assert up[0, 0] == 0 and up[-1, -1] == 6
    batch = cam.upsample(np.stack([m, 2 * m]), (8, 6))
    assert batch.shape == (2, 8, 6)
    np.testing.assert_allclose(batch[1], 2 * batch[0])


class _SharedActivation(torch.nn.Module):
    """One ReLU module called twice (as ResNet blocks and EfficientNet's swish do)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def test_shared_module_uses_its_last_call(assert_model_clean: Callable[[nn.Module], None]) -> None:
    model = _SharedActivation().eval()
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    res = cam.compute_cams(model, x, ["gradcam", "ablationcam"], "act", target=0)
    assert res.activation_shape == (1, 6, 12, 12)
    # Ablation-CAM replaces only the last call: its weights equal a manual per-channel ablation.
    with torch.no_grad():
        acts = model.act(model.conv2(model.act(model.conv1(x))))
        y = model.fc(acts.mean(dim=(2, 3)))[0, 0]
        weights = []
        for c in range(6):
            ablated = acts.clone()
            ablated[:, c] = 0
            weights.append((y - model.fc(ablated.mean(dim=(2, 3)))[0, 0]) / y)
        expected = torch.relu((torch.stack(weights)[:, None, None] * acts[0]).sum(0)).numpy()
    np.testing.assert_allclose(res.maps["ablationcam"][0], expected, rtol=1e-4, atol=1e-6)
    assert_model_clean(model)


def test_eigen_cam_on_a_large_map_needs_no_hw_by_hw_matrix() -> None:
    """A 256 x 256 map with 4 channels: the full SVD pytorch-grad-cam calls would build a 65536 x 65536 U
    (16 GiB); the thin one gives the same first singular vector. Checked against an independent eigenvector of
    the (K, K) covariance, up to the sign an SVD is free to choose."""
    acts = torch.randn(1, 4, 256, 256, generator=torch.Generator().manual_seed(0))
    acts[:, 0, 100:140, 60:90] += 5.0
    ours = cam._eigen_maps(acts)
    assert ours.shape == (1, 256, 256) and ours.dtype == np.float32
    flat = acts[0].reshape(4, -1).T.double().numpy()
    flat -= flat.mean(axis=0)
    _, vectors = np.linalg.eigh(flat.T @ flat)
    projection = (flat @ vectors[:, -1]).reshape(256, 256)
    candidates = [np.maximum(projection, 0), np.maximum(-projection, 0)]
    errors = [float(np.abs(ours[0] - c).max()) for c in candidates]
    assert min(errors) < 1e-3 * float(np.abs(projection).max()), errors


def test_the_app_does_not_import_the_reference_libraries() -> None:
    # grad-cam, captum and torchcam are test/bench extras: a plain install does not have them.
    app_root = Path(cam.__file__).resolve().parents[2]
    imports = re.compile(r"^\s*(from|import)\s+(pytorch_grad_cam|captum|torchcam)\b", re.MULTILINE)
    offenders = [
        str(p.relative_to(app_root)) for p in app_root.rglob("*.py") if imports.search(p.read_text())
    ]
    assert offenders == []


def test_call_picks_one_run_of_a_shared_module(assert_model_clean: Callable[[nn.Module], None]) -> None:
    """``call=0`` gives the CAM of the first run of the shared ReLU (4 channels after conv1), computed by hand;
    the default is the last run (6 channels), as before."""
    model = _SharedActivation().eval()
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    first = cam.compute_cams(model, x, ["gradcam", "ablationcam"], "act", target=0, call=0)
    assert (first.call, first.calls) == (0, 2)
    assert first.activation_shape == (1, 4, 12, 12)
    last = cam.compute_cams(model, x, ["gradcam"], "act", target=0)
    assert (last.call, last.calls, last.activation_shape) == (1, 2, (1, 6, 12, 12))
    assert cam.compute_cams(model, x, ["gradcam"], "act", target=0, call=-2).activation_shape == (
        1,
        4,
        12,
        12,
    )
    # By hand: Grad-CAM at the first run (a leaf after the first ReLU, the rest of the network on top of it).
    with torch.no_grad():
        a0 = model.act(model.conv1(x))
    leaf = a0.clone().requires_grad_(True)
    score = model.fc(model.act(model.conv2(leaf)).mean(dim=(2, 3)))[0, 0]
    (grad,) = torch.autograd.grad(score, leaf)
    expected = torch.relu((grad.mean(dim=(2, 3))[:, :, None, None] * a0).sum(dim=1))[0].numpy()
    np.testing.assert_allclose(first.maps["gradcam"][0], expected, rtol=1e-4, atol=1e-6)
    # Ablation-CAM zeroes channels of the first run only.
    with torch.no_grad():
        y = float(first.logits[0, 0])
        weights = []
        for c in range(4):
            ablated = a0.clone()
            ablated[:, c] = 0
            weights.append((y - float(model.fc(model.act(model.conv2(ablated)).mean(dim=(2, 3)))[0, 0])) / y)
    expected_ab = torch.relu((torch.tensor(weights)[:, None, None] * a0[0]).sum(0)).numpy()
    np.testing.assert_allclose(first.maps["ablationcam"][0], expected_ab, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="runs 2 times"):
        cam.compute_cams(model, x, ["gradcam"], "act", call=2)
    assert_model_clean(model)


def test_trace_layers_reports_calls() -> None:
    model = _SharedActivation().eval()
    infos = {i.name: i for i in cam.trace_layers(model, torch.zeros(1, 1, 12, 12))}
    assert infos["act"].calls == 2
    assert infos["act"].call_shapes == ((4, 12, 12), (6, 12, 12))
    assert infos["act"].shape == (6, 12, 12)
    assert infos["act"].label == "act (called 2 times)"
    assert infos["conv1"].calls == 1 and infos["conv1"].label == "conv1"
