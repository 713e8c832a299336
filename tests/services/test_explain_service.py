"""The explanation service on a cached model shared by concurrent requests."""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from app.core.explanation import occlusion
from app.errors import InvalidInput, OverLimit
from app.schemas.explain import cam_summary
from app.services import explain
from app.services.jobs import JobManager

SMALL_MODELS = ("nodule-cnn", "digit-cnn", "squeezenet1_1")


@pytest.fixture
def loaded(registry: Any) -> Any:
    names = set(registry.names())
    return registry.get(next(m for m in SMALL_MODELS if m in names))


def test_concurrent_requests_on_one_model(
    loaded: Any, image_store: Any, sample_image_id: str, gray_image_id: str
) -> None:
    images = [image_store.load(sample_image_id), image_store.load(gray_image_id)]
    jobs = [
        (img, method, target)
        for img in images
        for method, target in (("gradcam", 0), ("layercam", 1), ("eigencam", None))
    ]
    expected = [explain.explain_cam(loaded, img, m, t).raw for img, m, t in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(explain.explain_cam, loaded, img, m, t) for _ in range(2) for img, m, t in jobs
        ]
        results = [f.result().raw for f in futures]
    for i, raw in enumerate(results):
        np.testing.assert_allclose(raw, expected[i % len(jobs)], rtol=1e-5, atol=1e-7)
    for name, module in loaded.module.named_modules():
        assert not module._forward_hooks, name
    assert all(not p.requires_grad and p.grad is None for p in loaded.module.parameters())


def test_cam_picture_modes(loaded: Any, image_store: Any, sample_image_id: str) -> None:
    outcome = explain.explain_cam(loaded, image_store.load(sample_image_id), "gradcam")
    shown = outcome.prepared.shown
    feature = explain.cam_picture(outcome.raw, shown, 0.5, "inferno", "raw", "feature")
    assert feature.values.shape == outcome.raw.shape
    np.testing.assert_array_equal(feature.values, outcome.raw)
    # Raw values keep their own scale: colours run from 0 to the map's maximum (1 for an all-zero map).
    expected_top = float(outcome.raw.max()) if outcome.raw.max() > 0 else 1.0
    assert feature.vmin == 0.0 and feature.vmax == pytest.approx(expected_top)
    assert feature.heatmap.shape == shown.shape and feature.overlay.shape == shown.shape
    upsampled = explain.cam_picture(outcome.raw, shown, 1.0, "viridis", "normalised", "input")
    assert upsampled.values.shape == shown.shape[:2]
    assert upsampled.vmin == 0.0 and upsampled.vmax == 1.0
    # Opacity 1 shows the heat map alone; 0 the image alone.
    np.testing.assert_array_equal(upsampled.overlay, upsampled.heatmap)
    np.testing.assert_array_equal(explain.cam_picture(outcome.raw, shown, 0.0).overlay, shown)
    with pytest.raises(InvalidInput):
        explain.cam_picture(outcome.raw, shown, 0.5, "jet")


def test_occlusion_defaults_scale_with_the_input() -> None:
    # The lecture's numbers at 224 px, and exact multiples where the proportion 16/224 = 1/14 is whole.
    assert explain.occlusion_defaults((224, 224)) == (16, 8)
    assert explain.occlusion_defaults((112, 112)) == (8, 4)
    assert explain.occlusion_defaults((448, 448)) == (32, 16)
    assert explain.occlusion_defaults((28, 28)) == (2, 1)
    # A non-square input follows its shorter side (the window must fit along both).
    assert explain.occlusion_defaults((300, 112)) == explain.occlusion_defaults((112, 300)) == (8, 4)
    for side in range(8, 1025):
        window, stride = explain.occlusion_defaults((side, side))
        # Nearest whole pixel to the lecture's proportion; the stride is half the window (at least 1 px).
        assert abs(window - side / 14) <= 0.5 or window == 2, (side, window)
        assert 2 <= window <= side and stride >= 1 and abs(stride - window / 2) <= 0.5, (side, stride)
        # The windows tile the whole image: no pixel is never hidden.
        starts = occlusion.window_starts(side, window, stride)
        assert starts[0] == 0 and starts[-1] + window >= side, (side, window, stride)


class _TinyViT(torch.nn.Module):
    """Patch embedding then attention over the patches: the one spatial map comes before the mixing."""

    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        self.conv_proj = torch.nn.Conv2d(in_channels, 8, kernel_size=16, stride=16)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attention(tokens, tokens, tokens)
        return self.head(mixed.mean(1))


def test_cam_on_a_vision_transformer_is_a_clear_error(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    vit = dataclasses.replace(
        loaded, module=_TinyViT(loaded.in_channels, len(loaded.categories)).eval(), name="tiny-vit"
    )
    image = image_store.load(sample_image_id)
    assert explain.cam_unsupported(loaded) is None
    assert "vision transformer" in (explain.cam_unsupported(vit) or "")
    for call in (
        lambda: explain.explain_cam(vit, image, "gradcam"),
        lambda: explain.compare_methods(vit, image, ["gradcam"]),
    ):
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.field == "model" and "Occlusion" in err.value.message
    # Occlusion does not need a spatial map and still works.
    assert explain.hide_patch(vit, image, 8, 8, None, "zeros", None, 2).box


# --- Bounded jobs (issue 9): estimates, batches of about a second, cancellation, non-finite maps ------------------


class _Counting(torch.nn.Module):
    """A small CNN that records the batch size of every forward and can run code at a given forward."""

    def __init__(self, in_channels: int, classes: int, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, classes)
        )
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(scale)
        self.batches: list[int] = []
        self.on_forward: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        if self.on_forward is not None:
            self.on_forward(len(self.batches))
        return self.head(self.features(x))


def _counting(loaded: Any, name: str, scale: float = 1.0) -> Any:
    module = _Counting(loaded.in_channels, len(loaded.categories), scale).eval()
    return dataclasses.replace(loaded, module=module, name=name, display_name=f"Counting {name}")


def test_occlusion_batches_are_about_a_second_and_cancel_acts_within_one(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    counting = _counting(loaded, "counting-cancel")
    macs = explain.forward_macs(counting)
    counting.module.batches.clear()  # count the job's forwards only
    # An assumed speed of 3 forwards a second: batches of 3 windows (about one second of work each).
    manager = JobManager(workers=1, max_seconds=None, macs_per_second=3 * macs)
    settings = explain.OcclusionSettings(window=8, stride=4, progressive=False)
    cancel_at = 4  # the 4th forward: the unoccluded input, then 3 batches of 3 windows
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def on_forward(n: int) -> None:
        ready.wait(10)
        if n == cancel_at:
            manager.cancel(holder["job"].id)

    counting.module.on_forward = on_forward
    job = explain.submit_occlusion(manager, counting, image_store.load(sample_image_id), settings)
    holder["job"] = job
    ready.set()
    assert job.estimate is not None and job.estimate.batch_size == 3
    done = manager.wait(job.id, timeout=60)
    assert done.status == "cancelled" and done.result is None
    # Cancelled during the 4th forward: that batch finishes, no other starts.
    assert len(counting.module.batches) == cancel_at
    assert counting.module.batches == [1, 3, 3, 3]
    manager.shutdown()


def test_occlusion_estimate_counts_the_forwards_it_runs(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    counting = _counting(loaded, "counting-count")
    explain.forward_macs(counting)
    counting.module.batches.clear()  # count the job's forwards only
    manager = JobManager(workers=1, max_seconds=3600.0, macs_per_second=1e12)
    settings = explain.OcclusionSettings(window=16, stride=8, progressive=True)
    job = explain.submit_occlusion(manager, counting, image_store.load(sample_image_id), settings)
    done = manager.wait(job.id, timeout=60)
    assert done.status == "done", done.error
    assert job.estimate is not None
    assert sum(counting.module.batches) == job.estimate.forward_passes
    assert job.estimate.detail["windows"] == done.result["windows"]  # type: ignore[index]
    manager.shutdown()


def test_slow_cam_estimate_bounds_its_forwards_and_refuses_past_the_limit(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    counting = _counting(loaded, "counting-scorecam")
    image = image_store.load(sample_image_id)
    macs = explain.forward_macs(counting)
    explain.layer_choices(counting, counting.prepare(image).tensor)  # traced once, then cached
    counting.module.batches.clear()  # count the job's forwards only
    manager = JobManager(workers=1, max_seconds=3600.0, macs_per_second=2 * macs)
    job = explain.submit_cam_job(manager, counting, image, "scorecam", None, "features.1", 2, {}, cam_summary)
    done = manager.wait(job.id, timeout=60)
    assert done.status == "done", done.error
    assert job.estimate is not None and job.estimate.batch_size == 2
    assert max(counting.module.batches[1:]) <= 2
    assert sum(counting.module.batches) <= job.estimate.forward_passes
    # The same job with a limit of 1 forward's time: refused before queueing, naming the layer to change.
    strict = JobManager(workers=1, max_seconds=1.0, macs_per_second=macs)
    with pytest.raises(OverLimit) as err:
        explain.submit_cam_job(strict, counting, image, "ablationcam", None, "features.1", 2, {}, cam_summary)
    assert err.value.field == "layer" and "max_job_seconds" in err.value.message
    assert strict.active() == []
    # A comparison in the request (no job) is bounded the same way.
    with pytest.raises(OverLimit) as cmp_err:
        explain.compare_methods(
            counting, image, ["gradcam"], layer="features.1", steps=8, limits=strict, protocol="convscope"
        )
    assert cmp_err.value.field == "steps"
    manager.shutdown()
    strict.shutdown()


def test_plan_occlusion_refuses_with_the_estimate_and_a_setting_that_fits(loaded: Any, registry: Any) -> None:
    macs = explain.forward_macs(loaded)
    manager = JobManager(workers=1, max_seconds=100.0, macs_per_second=float(macs))  # 100 forwards at most
    h, w = loaded.input_size
    tight = explain.OcclusionSettings(window=2, stride=2)
    with pytest.raises(OverLimit) as err:
        explain.plan_occlusion(manager, registry, loaded.name, loaded.weights_status, tight, "me")
    extra = err.value.extra
    assert extra["windows"] == (h // 2) * (w // 2) and extra["forward_passes"] == extra["windows"] + 2
    assert extra["limit"] == "max_job_seconds" and extra["maximum"] == 100.0
    assert err.value.field == "stride" and "larger stride or window" in err.value.message
    # The suggested window and stride do fit.
    import re

    found = re.search(r"window (\d+) px with stride (\d+) px", err.value.message)
    assert found is not None
    fits = explain.OcclusionSettings(window=int(found.group(1)), stride=int(found.group(2)))
    estimate = explain.plan_occlusion(manager, registry, loaded.name, loaded.weights_status, fits, "me")
    assert estimate.seconds is not None and estimate.seconds <= 100.0
    manager.shutdown()


def test_forward_macs_are_traced_once_per_model(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _counting(loaded, "counting-once")
    calls: list[int] = []
    real = explain.job_cost.model_macs

    def counted(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
        calls.append(1)
        return real(model, shape)

    monkeypatch.setattr(explain.job_cost, "model_macs", counted)
    first = explain.forward_macs(counting)
    assert explain.forward_macs(counting) == first and len(calls) == 1


def test_a_torchvision_model_is_estimated_without_loading_it(registry: Any) -> None:
    before = registry.loaded_keys()
    spec, macs = explain.planned_forward_macs(registry, "squeezenet1_1", "untrained")
    assert registry.loaded_keys() == before  # traced on the meta device
    assert macs == explain.forward_macs(registry.get("squeezenet1_1", "untrained"))
    assert spec.name == "squeezenet1_1"


def test_non_finite_maps_are_a_clear_422_naming_the_model(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    huge = _counting(loaded, "counting-huge", scale=3e38)
    image = image_store.load(sample_image_id)
    for call in (
        lambda: explain.explain_cam(huge, image, "gradcam"),
        lambda: explain.compare_methods(huge, image, ["gradcam"], steps=4),
        lambda: explain.hide_patch(huge, image, 8, 8),
    ):
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.field == "model" and "Counting counting-huge" in err.value.message
        assert "not finite" in err.value.message
    manager = JobManager(workers=1)
    job = explain.submit_occlusion(
        manager, huge, image, explain.OcclusionSettings(window=32, stride=32, progressive=False)
    )
    done = manager.wait(job.id, timeout=60)
    assert done.status == "failed" and "not finite" in (done.error or "")
    json.dumps(done.to_dict(), allow_nan=False)  # what the API sends is valid JSON
    manager.shutdown()


# --- Issue 10: caches bounded by Settings, the score explained ---------------------------------------------------


def test_caches_are_cachetools_lrus_sized_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from cachetools import LRUCache

    from app.config import Settings

    monkeypatch.setattr(
        explain, "get_settings", lambda: Settings(explain_layer_cache_entries=2, explain_macs_cache_entries=3)
    )
    explain._layer_cache.cache_clear()
    explain._macs_cache.cache_clear()
    try:
        layers, macs = explain._layer_cache(), explain._macs_cache()
        assert isinstance(layers, LRUCache) and layers.maxsize == 2
        assert isinstance(macs, LRUCache) and macs.maxsize == 3
        for i in range(5):
            explain._remember_macs((f"m{i}", (3, 8, 8)), i)
        assert len(macs) == 3 and ("m4", (3, 8, 8)) in macs and ("m0", (3, 8, 8)) not in macs
    finally:
        explain._layer_cache.cache_clear()
        explain._macs_cache.cache_clear()


def test_resolve_score_prefers_the_logit_only_when_saturated() -> None:
    assert explain.resolve_score(None, 0.999) == "logit"
    assert explain.resolve_score("auto", 0.98) == "probability"
    assert explain.resolve_score("probability", 1.0) == "probability"
    assert explain.resolve_score("logit", 0.2) == "logit"
    with pytest.raises(InvalidInput) as err:
        explain.resolve_score("odds", 0.5)
    assert err.value.field == "score"


def test_occlusion_of_a_saturated_model_follows_the_logit() -> None:
    """p = 1.000 everywhere: hiding a patch moves the probability by ~0 but the logit clearly (and 'auto' says so)."""

    class Saturated(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = 40.0 + 10.0 * x[:, :, 4:8, 4:8].mean(dim=(1, 2, 3))
            return torch.stack([s, torch.zeros_like(s)], dim=1)

    x = torch.ones(1, 1, 12, 12)
    prob = occlusion.occlusion(Saturated(), x, window=4, stride=4, score="probability")
    auto = occlusion.occlusion(Saturated(), x, window=4, stride=4, score="auto")
    assert prob.score == "probability" and float(np.abs(prob.drops).max()) < 1e-6
    assert auto.score == "logit" and auto.probability == pytest.approx(50.0)
    assert float(auto.drops.max()) == pytest.approx(10.0, abs=1e-4)  # the window over the evidence


def test_tied_share_counts_pixels_that_share_a_value() -> None:
    assert explain.tied_share(np.arange(16.0)) == 0.0
    half = np.concatenate([np.zeros(8), np.arange(1.0, 9.0)])
    assert explain.tied_share(half) == 0.5
    assert explain.tied_share(np.array([1.0, 1.0, 2.0, 2.0])) == 1.0


def test_compare_notes_maps_whose_order_is_mostly_the_tie_break(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    image = image_store.load(sample_image_id)
    outcome = explain.compare_methods(loaded, image, ["gradcam", "eigencam"], protocol="convscope", steps=4)
    tied = [n for n in outcome.notes if "share their value" in n]
    expected = [
        f"{r.method.name} {explain.tied_share(r.normalised):.0%}"
        for r in outcome.rows[:-1]
        if explain.tied_share(r.normalised) >= explain.TIED_NOTE and float(r.raw.max()) > 0
    ]
    assert bool(tied) == bool(expected)
    for item in expected:
        assert item in tied[0] and "seeded random order" in tied[0]
    assert outcome.protocol == "convscope" and outcome.steps == 4
