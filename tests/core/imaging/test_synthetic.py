"""Synthetic data: determinism, shapes and ranges, and that nodules really sit inside the lungs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from app.core.imaging import synthetic
from app.core.imaging.synthetic import Nodule


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_ct_slice_shape_range_and_determinism(size: int) -> None:
    a = synthetic.ct_slice(_rng(3), size, nodules=2)
    b = synthetic.ct_slice(_rng(3), size, nodules=2)
    c = synthetic.ct_slice(_rng(4), size, nodules=2)
    assert a.shape == (size, size)
    assert a.dtype == np.float32
    assert float(a.min()) >= 0.0
    assert float(a.max()) <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ct_anatomy_tissue_contrast() -> None:
    ph = synthetic.ct_phantom(_rng(11), 128, nodules=0)
    img, lungs, body = ph.image, ph.lung_mask, ph.body_mask
    # Two lungs, one on each side of the midline, dark against the surrounding soft tissue.
    labels, count = ndimage.label(lungs)
    assert count == 2
    centres = [np.argwhere(labels == k)[:, 1].mean() for k in (1, 2)]
    assert min(centres) < 64 < max(centres)
    assert img[lungs].mean() < 0.2
    soft_tissue = body & ~ndimage.binary_dilation(lungs, iterations=3)
    assert img[soft_tissue].mean() > img[lungs].mean() + 0.25
    # Air outside the body is darkest; bone (the brightest pixels) lies inside the body.
    assert img[~ndimage.binary_dilation(body, iterations=3)].mean() < 0.05
    assert body[img > 0.85].all()
    assert lungs.sum() > 0.15 * 128 * 128


@pytest.mark.parametrize("seed", range(8))
def test_random_nodules_lie_inside_the_lungs(seed: int) -> None:
    ph = synthetic.ct_phantom(_rng(seed), 128, nodules=2)
    assert len(ph.nodules) == 2
    rr, cc = np.mgrid[:128, :128]
    for nod in ph.nodules:
        assert 3.0 * 0.8**6 <= nod.radius <= 12.0
        assert nod.lung in ("left", "right")
        # "right" lung is on the image's left, as radiologists view axial slices.
        assert (nod.col < 64) == (nod.lung == "right")
        disc = (rr - nod.row) ** 2 + (cc - nod.col) ** 2 <= nod.radius**2
        assert ph.lung_mask[disc].all()
    a, b = ph.nodules
    assert np.hypot(a.row - b.row, a.col - b.col) > a.radius + b.radius


def test_nodule_radii_cover_the_specified_range_and_both_lungs() -> None:
    rng = _rng(5)
    nodules = [n for _ in range(40) for n in synthetic.ct_phantom(rng, 128, nodules=1).nodules]
    radii = np.array([n.radius for n in nodules])
    assert radii.min() < 5.0
    assert radii.max() > 10.0
    assert {n.lung for n in nodules} == {"left", "right"}


def test_same_seed_same_slice_with_and_without_nodule() -> None:
    without = synthetic.ct_phantom(_rng(21), 128, nodules=0)
    with_one = synthetic.ct_phantom(_rng(21), 128, nodules=1)
    nod = with_one.nodules[0]
    diff = np.abs(with_one.image - without.image) > 0.05
    assert diff.any()
    rows, cols = np.nonzero(diff)
    # The only change is the nodule itself (plus the blur's reach of about two pixels).
    dist = np.hypot(rows - nod.row, cols - nod.col)
    assert dist.max() <= nod.radius + 3.0
    # The nodule is clearly brighter than the lung around it.
    assert (
        with_one.image[round(nod.row), round(nod.col)] > without.image[round(nod.row), round(nod.col)] + 0.25
    )


def test_explicit_nodules_are_drawn_where_asked() -> None:
    base = synthetic.ct_phantom(_rng(2), 128, nodules=0)
    rows, cols = np.nonzero(ndimage.distance_transform_edt(base.lung_mask) > 8)
    spot = Nodule(row=float(rows[0]), col=float(cols[0]), radius=5.0)
    placed = synthetic.ct_phantom(_rng(2), 128, nodules=[spot])
    assert placed.nodules == (spot,)
    r, c = int(spot.row), int(spot.col)
    assert placed.image[r, c] > base.image[r, c] + 0.25


def test_ct_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        synthetic.ct_slice(_rng(0), 16)
    with pytest.raises(ValueError):
        synthetic.ct_slice(_rng(0), 64, nodules=-1)


def test_sample_ct_slice_has_two_nodules_and_is_fixed() -> None:
    img = synthetic.sample_ct_slice()
    assert img.shape == (256, 256)
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, synthetic.sample_ct_slice())
    assert len(synthetic.ct_phantom(_rng(7), 256, nodules=2).nodules) == 2


@pytest.mark.parametrize("digit", range(10))
def test_render_digit_shape_range_determinism(digit: int) -> None:
    a = synthetic.render_digit(digit, _rng(digit))
    b = synthetic.render_digit(digit, _rng(digit))
    assert a.shape == (28, 28)
    assert a.dtype == np.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    np.testing.assert_array_equal(a, b)
    # White on black: a bright digit fills some of the frame, most of it stays dark.
    assert float(a.max()) > 0.6
    assert 0.03 < float((a > 0.4).mean()) < 0.5
    assert float(np.median(a[0, :])) < 0.2


def test_render_digit_varies_and_differs_between_digits() -> None:
    rng = _rng(1)
    ones = [synthetic.render_digit(1, rng) for _ in range(10)]
    zeros = [synthetic.render_digit(0, rng) for _ in range(10)]
    # Distortions vary each sample.
    assert len({o.tobytes() for o in ones}) == 10
    # A "1" covers fewer pixels than a "0" on average.
    assert np.mean([(o > 0.4).sum() for o in ones]) < np.mean([(z > 0.4).sum() for z in zeros])
    with pytest.raises(ValueError):
        synthetic.render_digit(10, rng)


def test_sample_digit_and_sizes() -> None:
    img = synthetic.sample_digit(3, 112)
    assert img.shape == (112, 112)
    assert img.dtype == np.float32
    assert float(img.max()) > 0.9 and float(img[0].max()) < 0.1
    np.testing.assert_array_equal(img, synthetic.sample_digit(3, 112))
    assert not np.array_equal(img, synthetic.sample_digit(8, 112))
    assert synthetic.render_digit(5, _rng(0), size=56).shape == (56, 56)


def test_sample_shapes_colour_and_edges() -> None:
    img = synthetic.sample_shapes(256)
    assert img.shape == (256, 256, 3)
    assert img.dtype == np.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # Several distinct flat colours (background + shapes), i.e. it is really in colour.
    colours = {tuple(np.round(px, 2)) for px in img.reshape(-1, 3)[::37]}
    assert len(colours) >= 5
    assert float(np.abs(img[..., 0] - img[..., 2]).max()) > 0.5
    # Sharp edges: a large horizontal gradient somewhere.
    assert float(np.abs(np.diff(img.mean(axis=2), axis=1)).max()) > 0.3


def test_nodule_dataset_balanced_and_deterministic() -> None:
    x, y = synthetic.nodule_dataset(24, seed=5, size=64)
    assert x.shape == (24, 1, 64, 64)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert y.shape == (24,)
    assert set(y.tolist()) == {0, 1}
    assert int(y.sum()) == 12
    x2, y2 = synthetic.nodule_dataset(24, seed=5, size=64)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = synthetic.nodule_dataset(24, seed=6, size=64)
    assert not np.array_equal(x, x3)


def test_digit_dataset_balanced_and_deterministic() -> None:
    x, y = synthetic.digit_dataset(50, seed=3)
    assert x.shape == (50, 1, 28, 28)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [5] * 10
    x2, y2 = synthetic.digit_dataset(50, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
