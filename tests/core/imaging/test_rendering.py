from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from app.core.imaging import rendering


def _matplotlib_rgb(name: str, fractions: np.ndarray) -> np.ndarray:
    """The oracle: matplotlib's own colour map at ``fractions`` in [0, 1], quantised to its 256 entries."""
    table = colormaps[name](np.round(np.asarray(fractions) * 255).astype(int))[..., :3]
    return np.round(table * 255).astype(np.uint8)


@pytest.mark.parametrize(("cmap", "mpl_name"), [("viridis", "viridis"), ("magma", "magma"), ("gray", "gray")])
def test_colorize_matches_matplotlib(cmap: str, mpl_name: str) -> None:
    values = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 8.0]])  # spans its own range: 0 -> first colour, 8 -> last
    rgb = rendering.colorize(values, cmap)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, _matplotlib_rgb(mpl_name, values / 8.0))
    # Explicit limits: values outside them are clipped to the end colours.
    clipped = rendering.colorize(values, cmap, vmin=1.0, vmax=3.0)
    np.testing.assert_array_equal(clipped, _matplotlib_rgb(mpl_name, np.clip((values - 1.0) / 2.0, 0, 1)))


def test_diverging_map_puts_zero_in_the_middle() -> None:
    values = np.array([[-1.0, 0.0, 4.0, -4.0]])
    vmin, vmax = rendering.signed_limits(values)
    assert (vmin, vmax) == (-4.0, 4.0)
    rgb = rendering.colorize(values, "rdbu")
    # Symmetric limits: -4 -> 0, 0 -> 0.5, 4 -> 1 along matplotlib's reversed RdBu (blue ... white ... red).
    np.testing.assert_array_equal(rgb, _matplotlib_rgb("RdBu_r", (values + 4.0) / 8.0))
    assert rgb[0, 2, 0] > rgb[0, 2, 2]  # positive is red
    assert rgb[0, 3, 2] > rgb[0, 3, 0]  # negative is blue
    assert rgb[0, 1].min() > 230  # zero is (nearly) white


def test_flat_map_does_not_divide_by_zero() -> None:
    with np.errstate(all="raise"):  # a division by a zero span would raise here
        rgb = rendering.colorize(np.full((3, 3), 5.0))
    # One colour everywhere: a flat map spans a unit range around its value, so it sits mid-scale.
    np.testing.assert_array_equal(
        rgb, np.broadcast_to(_matplotlib_rgb("viridis", np.array([0.5]))[0], (3, 3, 3))
    )


def test_unknown_cmap_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown colour map"):
        rendering.colorize(np.zeros((2, 2)), "jet")


def test_png_round_trip_and_grid() -> None:
    tiles = [np.full((4, 5, 3), i * 40, np.uint8) for i in range(5)]
    grid = rendering.tile_grid(tiles, ncols=3, pad=1)
    assert grid.shape == (4 * 2 + 1, 5 * 3 + 2, 3)
    png = rendering.encode_png(grid)
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert (back == grid).all()


def test_overlay_resizes_heat_to_image() -> None:
    base = np.zeros((20, 30, 3), np.uint8)
    heat = np.full((5, 5, 3), 200, np.uint8)
    out = rendering.overlay(base, heat, 0.5)
    assert out.shape == (20, 30, 3)
    assert out[10, 15, 0] == 100


def test_npy_loads_without_pickle() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert (np.load(io.BytesIO(rendering.encode_npy(arr)), allow_pickle=False) == arr).all()


def test_css_gradient_lists_stops() -> None:
    css = rendering.cmap_css_gradient("magma", stops=5)
    assert css.startswith("linear-gradient(to right") and css.count("rgb(") == 5
