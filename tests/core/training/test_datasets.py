"""Built-in datasets: seeded, split with a seed, fitted to the model's input size and channels, and saying so."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.training.datasets import (
    DATASETS,
    convert_images,
    load_dataset,
    shape_dataset,
    split_indices,
)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_is_seeded_balanced_and_in_range(name: str) -> None:
    spec = DATASETS[name]
    a = load_dataset(name, (32, 32), spec.channels, seed=3, train_size=24, val_size=12)
    b = load_dataset(name, (32, 32), spec.channels, seed=3, train_size=24, val_size=12)
    c = load_dataset(name, (32, 32), spec.channels, seed=4, train_size=24, val_size=12)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (24, spec.channels, 32, 32) and a.x_val.shape == (12, spec.channels, 32, 32)
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    assert a.categories == list(spec.categories)
    labels = np.concatenate([a.y_train, a.y_val])
    counts = np.bincount(labels, minlength=len(spec.categories))
    assert counts.max() - counts.min() <= 1, counts
    assert a.mean == pytest.approx(a.x_train.mean(axis=(0, 2, 3)), abs=1e-5)


def test_split_is_seeded_disjoint_and_complete() -> None:
    train, val = split_indices(50, 10, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(50))
    again = split_indices(50, 10, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(50, 10, seed=2)[1])
    with pytest.raises(ValueError):
        split_indices(5, 5, seed=1)


def test_the_note_says_how_images_were_fitted() -> None:
    data = load_dataset("digits", (32, 32), 3, seed=1, train_size=20, val_size=10)
    assert data.x_train.shape == (20, 3, 32, 32)
    assert "28x28 greyscale" in data.note
    assert "28x28 → 32x32" in data.note and "1 channel → 3 channels (copied)" in data.note
    assert "20 training / 10 validation" in data.note
    # Copied: the three channels are the same picture.
    assert np.array_equal(data.x_train[:, 0], data.x_train[:, 2])
    same = load_dataset("digits", (28, 28), 1, seed=1, train_size=20, val_size=10)
    assert "no conversion" in same.note
    grey = load_dataset("shapes", (32, 32), 1, seed=1, train_size=12, val_size=6)
    assert "3 channels → 1 channel (luminance" in grey.note


def test_nodules_are_drawn_at_a_square_models_size_not_resized() -> None:
    data = load_dataset("nodules", (64, 64), 1, seed=2, train_size=4, val_size=2)
    assert data.x_train.shape == (4, 1, 64, 64)
    assert "64x64 greyscale" in data.note and "no conversion" in data.note
    wide = load_dataset("nodules", (48, 64), 3, seed=2, train_size=4, val_size=2)
    assert wide.x_train.shape == (4, 3, 48, 64) and "128x128 → 48x64" in wide.note


def test_conversion_rules() -> None:
    rgb = np.zeros((2, 3, 4, 4), np.float32)
    rgb[:, 0] = 1.0  # pure red
    grey, steps = convert_images(rgb, (4, 4), 1)
    assert grey.shape == (2, 1, 4, 4) and np.allclose(grey, 0.299)
    assert steps == ["3 channels → 1 channel (luminance 0.299 R + 0.587 G + 0.114 B)"]
    flat = np.full((1, 1, 8, 8), 0.25, np.float32)
    bigger, steps = convert_images(flat, (16, 12), 1)
    assert bigger.shape == (1, 1, 16, 12) and np.allclose(bigger, 0.25)
    assert steps == ["8x8 → 16x12 (bilinear, antialiased)"]


def test_shapes_have_three_classes_that_differ_in_shape_not_colour() -> None:
    x, y = shape_dataset(60, seed=0)
    assert x.shape == (60, 3, 32, 32) and sorted(set(y.tolist())) == [0, 1, 2]
    # Colour statistics alike across classes: mean brightness of each class within a few percent.
    means = [float(x[y == k].mean()) for k in range(3)]
    assert max(means) - min(means) < 0.08, means
    with pytest.raises(ValueError):
        shape_dataset(-1, seed=0)


def test_generated_sets_are_read_only_and_unknown_names_fail() -> None:
    data = load_dataset("shapes", (32, 32), 3, seed=9, train_size=6, val_size=3)
    data.x_train[0, 0, 0, 0] = 0.5  # the returned arrays are the caller's own copies
    with pytest.raises(KeyError):
        load_dataset("cats", (32, 32), 3, seed=1)
    with pytest.raises(ValueError):
        load_dataset("shapes", (32, 32), 3, seed=1, train_size=0)
