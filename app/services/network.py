"""Inside the network: summaries, feature maps, learned filters, receptive fields, milestones.

One forward pass serves every layer of one image: ``NetworkService`` keeps a small LRU of captured
activations per (model, weights, image), so moving between layers only re-renders. Structure (the layer
tree and receptive fields) depends only on the model and the input shape and is cached separately; a cold
start gets both from a single forward pass (``app.core.inspection.analysis.analyse``). Every pass that hooks the
module holds ``loaded.lock``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from cachetools import LRUCache

from app.core.imaging.rendering import (
    colorize,
    encode_png,
    overlay,
    resize_to,
    tile_grid,
    to_uint8_image,
    upscale_nearest,
    value_limits,
)
from app.core.inspection import features as feat
from app.core.inspection import filters_view as fv
from app.core.inspection.analysis import analyse
from app.core.inspection.receptive_field import Box, LayerRF, effective_rf, rf_box, stack_vs_large
from app.core.models.hooks import CallNotFound, resolve_call
from app.core.models.layers import (
    LayerInfo,
    LayerNotFound,
    Totals,
    conv_layer_names,
    spatial_layer_names,
    totals,
)
from app.errors import InvalidInput, NotFound
from app.services.images import ImageStore
from app.services.models import LoadedModel, ModelRegistry

TILE_PIXELS = 64  # feature-map tiles are blown up (nearest) to at least this many pixels a side
FILTER_TILE_PIXELS = 48
ZOOM_PIXELS = 240  # an enlarged kernel is about this many pixels a side
MAX_TILE_PIXELS = 96  # grid tiles of larger maps are shrunk to this
# Request fields (sort, scale, cmap, opacity, page sizes) are validated once, by the request models in
# app/schemas/network.py; this module checks only what depends on the model or the image (layer names, channel
# and unit ranges).


class _LRU:
    """A thread-safe LRU (cachetools) bounded by entry count and, optionally, by total bytes (``weigh``).

    A single value larger than the whole byte budget is still kept, alone, until the next put (a page needs its
    own activations for its follow-up requests even on a model whose capture is larger than the budget).
    """

    def __init__(
        self, size: int, max_bytes: int | None = None, weigh: Callable[[Any], int] | None = None
    ) -> None:
        self.size = size
        self._cache: LRUCache[Any, Any] = (
            LRUCache(maxsize=size)
            if max_bytes is None or weigh is None
            else LRUCache(maxsize=max(1, max_bytes), getsizeof=weigh)
        )
        self._oversized: tuple[Any, Any] | None = None
        self.lock = threading.Lock()

    def lookup(self, key: Any) -> Any:
        with self.lock:
            if self._oversized is not None and self._oversized[0] == key:
                return self._oversized[1]
            return self._cache.get(key)

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self._oversized = None
            self._cache.pop(key, None)
            try:
                self._cache[key] = value
            except ValueError:  # larger than the whole budget: kept alone, as the only entry
                self._cache.clear()
                self._oversized = (key, value)
                return
            while len(self._cache) > self.size:
                self._cache.popitem()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        found = self.lookup(key)
        if found is not None:
            return found
        value = make()
        self.put(key, value)
        return value


@dataclass
class NetInput:
    """The tensor a model sees and the picture of it (what overlays are drawn on)."""

    tensor: torch.Tensor  # (1, C, H, W)
    shown: np.ndarray  # (H, W, 3) uint8
    steps: list[str]
    image_id: str | None


@dataclass
class Structure:
    tree: LayerInfo
    totals: Totals
    rf: dict[str, LayerRF]
    conv_layers: list[str]
    spatial_layers: list[str]
    # Modules that run more than once: the theoretical RF of each call (``rf`` holds the last).
    rf_calls: dict[str, list[LayerRF]] = field(default_factory=dict)


@dataclass
class Activations:
    net_input: NetInput
    capture: feat.Capture


@dataclass
class Tile:
    channel: int
    values: np.ndarray  # (h, w) raw map; rendered into a picture only when the browser asks for it
    mean: float
    max: float
    min: float


@dataclass
class Bar:
    """One unit of a layer with no spatial map (flatten, linear, global pooling), drawn as a bar."""

    index: int
    label: str  # the class name for a classifier's logits, else "unit i"
    value: float
    percent: float  # |value| as % of the largest |value| in the layer
    negative: bool


@dataclass
class FeaturePage:
    loaded: LoadedModel
    layer: str
    layer_type: str
    shape: tuple[int, ...]
    sort: str
    scale: str
    cmap: str
    page: feat.Page
    tiles: list[Tile]
    vmin: float | None  # shared range when scale == "layer"
    vmax: float | None
    stats: feat.ChannelStats
    rf: LayerRF | None
    net_input: NetInput
    grid_png: bytes = b""
    calls: int = 1  # how many times the layer runs in one forward pass
    call: int = 0  # the 0-based call shown (the last one unless asked otherwise)
    # Layers whose units have no (y, x) map are bars, not 1x1 "maps" that would all look alike.
    bars: list[Bar] | None = None
    logits: bool = False  # the bars are the model's output: class scores before softmax

    @property
    def spatial(self) -> bool:
        return self.bars is None

    @property
    def larger_than_image(self) -> bool:
        return self.rf is not None and rf_larger_than_image(self.rf, self.net_input)

    def tile_image(self, tile: Tile) -> np.ndarray:
        return NetworkService.tile(tile.values, self.cmap, self.vmin, self.vmax)

    def tile_recipe(self) -> str:
        """Everything a tile's picture depends on besides its values (the URL key of PictureStore)."""
        return f"tile|{self.cmap}|{self.vmin}|{self.vmax}"


@dataclass
class ChannelView:
    loaded: LoadedModel
    layer: str
    channel: int
    values: np.ndarray  # (h, w) raw activation
    vmin: float
    vmax: float
    cmap: str
    opacity: float
    net_input: NetInput

    def recipe(self) -> str:
        return f"channel|{self.cmap}|{self.vmin!r}|{self.vmax!r}|{self.opacity!r}|{_digest(self.net_input.shown)}"

    def map_image(self) -> np.ndarray:
        """The map alone, blown up to the input picture's size (nearest: one block per unit)."""
        heat = colorize(self.values, self.cmap, self.vmin, self.vmax)
        return resize_to(heat, self.net_input.shown.shape[:2], smooth=False)

    def overlay_image(self) -> np.ndarray:
        heat = colorize(self.values, self.cmap, self.vmin, self.vmax)
        return overlay(self.net_input.shown, heat, self.opacity)

    def map_png(self) -> bytes:
        return encode_png(self.map_image())

    def overlay_png(self) -> bytes:
        return encode_png(self.overlay_image())


@dataclass
class FilterView:
    loaded: LoadedModel
    layer: str
    weight_shape: tuple[int, ...]
    first: bool
    sort: str
    page: feat.Page
    tiles: list[tuple[int, np.ndarray, float]]  # (index, uint8 picture (h, w, 3), L2 norm)
    limit: float  # symmetric colour range of per-input-channel kernels
    filter_index: int | None  # for later convs: which output filter's input-channel kernels are shown
    filter_choices: list[tuple[int, float]] = field(default_factory=list)  # (index, norm), by norm
    conv_layers: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[np.ndarray]:
        return [img for _, img, _ in self.tiles]


@dataclass
class FilterZoom:
    loaded: LoadedModel
    title: str
    pictures: list[tuple[int, np.ndarray, list[list[float]]]]  # (input channel, uint8 picture, kernel values)
    limit: float  # symmetric colour range
    first: bool


@dataclass
class RFProbe:
    loaded: LoadedModel
    layer: LayerRF
    y: int
    x: int
    channel: int | None
    box: dict[str, int]
    box_clipped: dict[str, int]
    erf: np.ndarray  # (H, W) |d unit / d input|, raw
    erf_max: float
    erf_extent: dict[str, int] | None  # bounding box of ERF >= 1% of its max
    net_input: NetInput
    cmap: str = "magma"
    call: int = 0  # the 0-based call of the layer probed (the last one unless asked otherwise)
    calls: int = 1  # how many times the layer runs in one forward pass

    @property
    def larger_than_image(self) -> bool:
        return rf_larger_than_image(self.layer, self.net_input)

    def recipe(self) -> str:
        return f"erf|{self.cmap}|{self.box_clipped}|{_digest(self.net_input.shown)}"

    def erf_image(self) -> np.ndarray:
        """The normalised ERF over the input picture, the theoretical box (clipped) outlined in yellow."""
        norm = self.erf / self.erf_max if self.erf_max > 0 else self.erf
        heat = colorize(norm, self.cmap, 0.0, 1.0)
        return _draw_box(overlay(self.net_input.shown, heat, 0.7), Box(**self.box_clipped))

    def erf_png(self) -> bytes:
        return encode_png(self.erf_image())


@dataclass
class MeanMap:
    """The channel-mean of a layer's maps (side-by-side views and the clickable receptive-field map)."""

    layer: str
    mean: np.ndarray  # (h, w)
    vmin: float
    vmax: float
    size: tuple[int, int]  # the input picture's (H, W): the map is blown up to it
    cmap: str = "viridis"

    def recipe(self) -> str:
        return f"mean|{self.cmap}|{self.vmin!r}|{self.vmax!r}|{self.size}"

    def image(self) -> np.ndarray:
        return resize_to(colorize(self.mean, self.cmap, self.vmin, self.vmax), self.size, smooth=False)

    def png(self) -> bytes:
        return encode_png(self.image())


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def rf_larger_than_image(rf: LayerRF, net_input: NetInput) -> bool:
    """True when the theoretical field is taller or wider than the network's input (padding fills the rest)."""
    height, width = net_input.tensor.shape[-2:]
    return rf.size_h > height or rf.size_w > width


def _check_finite(loaded: LoadedModel, capture: feat.Capture) -> None:
    """Refuse (422) a forward pass whose activations overflowed: NaN or infinity cannot be drawn or sent as JSON."""
    for name, tensor in capture.activations.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidInput(
                f"{loaded.display_name} gives activations that are not finite numbers (overflow to infinity or "
                f"NaN) in layer {name} for this image, so they cannot be shown. Its weights are probably too large.",
                field="model",
                layer=name,
            )


def _layer_error(exc: LayerNotFound) -> NotFound:
    return NotFound(str(exc), field="layer", choices=exc.choices)


class NetworkService:
    """Use cases of the /network, /receptive-fields and /milestones pages and their API twins."""

    def __init__(
        self,
        registry: ModelRegistry,
        store: ImageStore,
        cache_size: int = 3,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        self.registry = registry
        self.store = store
        self._structures = _LRU(8)
        # ResNet-50 at 224x224 keeps ~140 MiB of activations per image (every module's output).
        self._activations = _LRU(cache_size, cache_bytes, lambda a: a.capture.nbytes)
        self._inputs = _LRU(16)
        self.forward_passes = 0  # counts captured forward passes (tests and benchmarks read it)

    # --- inputs and caches -------------------------------------------------------------------------------------

    def model(self, name: str | None, weights: str = "auto") -> LoadedModel:
        """``name`` None: the default model."""
        return self.registry.get(name, weights)

    def net_input(self, loaded: LoadedModel, image_id: str | None) -> NetInput:
        """The prepared image, or (no image) a mid-grey input of the model's default size."""
        key = (loaded.name, loaded.weights_status, image_id)

        def make() -> NetInput:
            if image_id:
                prepared = loaded.prepare(self.store.load(image_id))
                return NetInput(prepared.tensor, prepared.shown, prepared.steps, image_id)
            h, w = loaded.input_size
            grey = np.full((h, w, 3) if loaded.in_channels == 3 else (h, w), 0.5, dtype=np.float32)
            prepared = loaded.prepare(grey)
            return NetInput(prepared.tensor, prepared.shown, ["no image: a uniform mid-grey input"], None)

        result: NetInput = self._inputs.get_or_make(key, make)
        return result

    @staticmethod
    def _structure_key(loaded: LoadedModel, x: torch.Tensor) -> tuple[Any, ...]:
        return (loaded.name, loaded.weights_status, id(loaded.module), tuple(x.shape))

    @staticmethod
    def _activation_key(loaded: LoadedModel, image_id: str | None) -> tuple[Any, ...]:
        return (loaded.name, loaded.weights_status, id(loaded.module), image_id)

    def _analyse(self, loaded: LoadedModel, image_id: str | None) -> tuple[Structure, Activations]:
        """One forward pass for tree, receptive fields and every activation; fills both caches."""
        net_input = self.net_input(loaded, image_id)
        with loaded.lock:
            result = analyse(loaded.module, net_input.tensor)
        self.forward_passes += 1
        _check_finite(loaded, result.capture)
        structure = Structure(
            tree=result.tree,
            totals=totals(loaded.module, result.tree),
            rf=result.rf,
            conv_layers=conv_layer_names(result.tree),
            spatial_layers=spatial_layer_names(result.tree),
            rf_calls=result.rf_calls,
        )
        acts = Activations(net_input, result.capture)
        self._structures.put(self._structure_key(loaded, net_input.tensor), structure)
        self._activations.put(self._activation_key(loaded, image_id), acts)
        return structure, acts

    def structure(self, loaded: LoadedModel, image_id: str | None = None) -> Structure:
        """Layer tree, totals and receptive fields for the input shape of ``image_id`` (or the default)."""
        x = self.net_input(loaded, image_id).tensor
        found: Structure | None = self._structures.lookup(self._structure_key(loaded, x))
        if found is not None:
            return found
        return self._analyse(loaded, image_id)[0]

    def activations(self, loaded: LoadedModel, image_id: str | None) -> Activations:
        """Every module's output for this image, from one cached forward pass."""
        found: Activations | None = self._activations.lookup(self._activation_key(loaded, image_id))
        if found is not None:
            return found
        net_input = self.net_input(loaded, image_id)
        if self._structures.lookup(self._structure_key(loaded, net_input.tensor)) is None:
            return self._analyse(loaded, image_id)[1]
        with loaded.lock:
            captured = feat.capture(loaded.module, net_input.tensor, None)
        self.forward_passes += 1
        _check_finite(loaded, captured)
        acts = Activations(net_input, captured)
        self._activations.put(self._activation_key(loaded, image_id), acts)
        return acts

    def layer_activation(
        self, loaded: LoadedModel, image_id: str | None, layer: str, call: int | None = None
    ) -> tuple[Activations, np.ndarray]:
        """``layer``'s maps at ``call`` (0-based; None: the last call of a module that runs several times)."""
        acts = self.activations(loaded, image_id)
        if layer not in acts.capture.activations:
            choices = list(acts.capture.activations)
            raise NotFound(
                f"No layer {layer!r} with a tensor output in {loaded.display_name}. "
                f"Choose one of: {', '.join(choices[:20])}{' ...' if len(choices) > 20 else ''}",
                field="layer",
                choices=choices,
            )
        try:
            return acts, feat.as_maps(acts.capture.at(layer, call))
        except CallNotFound as exc:
            raise InvalidInput(str(exc), field="call") from exc

    def tree_node(self, name: str | None, weights: str, image_id: str | None, node: str) -> LayerInfo:
        """One module of the layer tree, with its children."""
        loaded = self.model(name, weights)
        try:
            return self.structure(loaded, image_id).tree.find(node)
        except LayerNotFound as exc:
            raise NotFound(f"No layer {node!r} in {loaded.display_name}.", field="node") from exc

    # --- summary -----------------------------------------------------------------------------------------------

    def summary(
        self, name: str | None, weights: str = "auto", image_id: str | None = None
    ) -> tuple[LoadedModel, Structure, NetInput]:
        loaded = self.model(name, weights)
        return loaded, self.structure(loaded, image_id), self.net_input(loaded, image_id)

    def default_layer(self, structure: Structure, depth: float = 0.0) -> str:
        """The convolution at relative depth ``depth`` in [0, 1] (0 = first conv, 1 = last)."""
        convs = structure.conv_layers or structure.spatial_layers
        if not convs:
            raise InvalidInput("This model has no layer with a spatial feature map.", field="layer")
        depth = min(max(depth, 0.0), 1.0)
        return convs[round(depth * (len(convs) - 1))]

    # --- feature maps ------------------------------------------------------------------------------------------

    def features(
        self,
        name: str | None,
        weights: str,
        image_id: str | None,
        layer: str | None,
        sort: str = "index",
        page: int = 1,
        per_page: int = 32,
        channels: list[int] | None = None,
        scale: str = "channel",
        cmap: str = "viridis",
        with_grid: bool = False,
        ncols: int = 8,
        call: int | None = None,
        depth: int | None = None,
    ) -> FeaturePage:
        """A page of channel maps of ``layer`` (sorted by index, mean, max or std), or of the ``depth``-th
        convolution. A layer with no spatial map (flatten, linear, global pooling) comes as bars."""
        loaded = self.model(name, weights)
        self.activations(loaded, image_id)  # a cold start fills both caches in one pass
        structure = self.structure(loaded, image_id)
        if depth is not None:
            layer = self.conv_at(structure, depth)
        layer = layer or self.default_layer(structure)
        acts, maps = self.layer_activation(loaded, image_id, layer, call)
        stats = feat.channel_stats(maps)
        if channels:
            bad = [c for c in channels if not 0 <= c < maps.shape[0]]
            if bad:
                raise InvalidInput(f"channel {bad[0]} out of range 0..{maps.shape[0] - 1}.", field="channels")
            order = np.asarray(channels, dtype=np.int64)
            if sort != "index":
                sub = feat.ChannelStats(*(getattr(stats, k)[order] for k in ("mean", "max", "min", "std")))
                order = order[feat.sort_channels(sub, sort)]
        else:
            order = feat.sort_channels(stats, sort)
        pg = feat.paginate(order, page, per_page)
        vmin = vmax = None
        if scale == "layer":
            vmin, vmax = value_limits(maps[pg.items]) if pg.items else (0.0, 1.0)
        tiles = [
            Tile(c, maps[c], float(stats.mean[c]), float(stats.max[c]), float(stats.min[c])) for c in pg.items
        ]
        bars, logits = self._bars(loaded, acts, layer, maps, pg.items)
        info = structure.tree.find(layer) if layer else structure.tree
        result = FeaturePage(
            loaded=loaded,
            layer=layer,
            layer_type=info.type,
            shape=tuple(int(s) for s in acts.capture.at(layer, call).shape),
            sort=sort,
            scale=scale,
            cmap=cmap,
            page=pg,
            tiles=tiles,
            vmin=vmin,
            vmax=vmax,
            stats=stats,
            rf=structure.rf.get(layer),
            net_input=acts.net_input,
            calls=acts.capture.call_count(layer),
            call=resolve_call(call, acts.capture.call_count(layer), layer),
            bars=bars,
            logits=logits,
        )
        if with_grid:
            images = [result.tile_image(t) for t in tiles]
            result.grid_png = encode_png(
                tile_grid(images, ncols=max(1, min(ncols, len(images))))
                if images
                else np.zeros((1, 1, 3), np.uint8)
            )
        return result

    @staticmethod
    def _bars(
        loaded: LoadedModel, acts: Activations, layer: str, maps: np.ndarray, items: list[int]
    ) -> tuple[list[Bar] | None, bool]:
        """Bars for a layer whose every map is 1x1 (its units have no place in the image), else None.

        The model's output layer is labelled with the class names: its values are the logits."""
        if maps.shape[1:] != (1, 1):
            return None, False
        values = maps[:, 0, 0]
        output = acts.capture.output
        tensor = acts.capture.activations[layer]
        logits = (
            output is not None
            and len(loaded.categories) == values.shape[0]
            and tensor.numel() == output.numel()
            and bool(torch.equal(tensor.reshape(-1), output.reshape(-1).to(tensor.dtype)))
        )
        top = float(np.abs(values).max()) or 1.0
        bars = [
            Bar(
                index=i,
                label=loaded.categories[i] if logits else f"unit {i}",
                value=float(values[i]),
                percent=round(100.0 * abs(float(values[i])) / top, 2),
                negative=bool(values[i] < 0),
            )
            for i in items
        ]
        return bars, logits

    def conv_at(self, structure: Structure, depth: int) -> str:
        """The ``depth``-th convolution (0 = the first)."""
        convs = structure.conv_layers
        if not convs:
            raise InvalidInput("This model has no convolution.", field="depth")
        if not 0 <= depth < len(convs):
            raise InvalidInput(f"depth must be between 0 and {len(convs) - 1}.", field="depth")
        return convs[depth]

    @staticmethod
    def tile(values: np.ndarray, cmap: str, vmin: float | None, vmax: float | None) -> np.ndarray:
        """``(h, w)`` map -> uint8 tile: small maps blown up (nearest, units stay visible), large ones shrunk."""
        if vmin is None or vmax is None:
            vmin, vmax = value_limits(values)
        img = colorize(values, cmap, vmin, vmax)
        longest = max(values.shape)
        if longest > MAX_TILE_PIXELS:
            # Large early maps are shrunk for the grid (the enlarged view keeps every unit).
            scale = MAX_TILE_PIXELS / longest
            size = (max(1, round(values.shape[0] * scale)), max(1, round(values.shape[1] * scale)))
            return resize_to(img, size)
        factor = max(1, TILE_PIXELS // longest)
        return upscale_nearest(img, factor) if factor > 1 else img

    def channel(
        self,
        name: str | None,
        weights: str,
        image_id: str | None,
        layer: str,
        channel: int,
        cmap: str = "viridis",
        opacity: float = 0.5,
        vmin: float | None = None,
        vmax: float | None = None,
        call: int | None = None,
    ) -> ChannelView:
        """One channel enlarged and overlaid on the input with opacity ``opacity`` and range [vmin, vmax]."""
        loaded = self.model(name, weights)
        acts, maps = self.layer_activation(loaded, image_id, layer, call)
        if not 0 <= channel < maps.shape[0]:
            raise InvalidInput(f"channel must be between 0 and {maps.shape[0] - 1}.", field="channel")
        values = maps[channel].copy()  # not a view: a pending picture must not keep the whole layer alive
        lo, hi = value_limits(values)
        lo = lo if vmin is None else vmin
        hi = hi if vmax is None else vmax
        if hi <= lo:
            raise InvalidInput("vmax must be greater than vmin.", field="vmax")
        return ChannelView(
            loaded=loaded,
            layer=layer,
            channel=channel,
            values=values,
            vmin=lo,
            vmax=hi,
            cmap=cmap,
            opacity=opacity,
            net_input=acts.net_input,
        )

    # --- learned filters ---------------------------------------------------------------------------------------

    def filters(
        self,
        name: str | None,
        weights: str,
        layer: str | None = None,
        sort: str = "index",
        page: int = 1,
        per_page: int = 64,
        filter_index: int | None = None,
    ) -> FilterView:
        """First conv: colour tiles per output filter. Later convs: one output filter's kernels per input
        channel (``filter_index``, default the strongest by L2 norm)."""
        loaded = self.model(name, weights)
        convs = [c.name for c in fv.conv_layers(loaded.module)]
        if not convs:
            raise NotFound(f"{loaded.display_name} has no 2-D convolution.", field="layer", choices=[])
        _, layer_name, weight = self.filter_weights(name, weights, layer)
        first = layer_name == convs[0]
        if first:
            order = fv.filter_order(weight, sort)
            pg = feat.paginate(order, page, per_page)
            rgb = fv.rgb_tiles(weight)
            norms = np.sqrt((weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1))
            tiles = [(i, self._kernel_tile(to_uint8_image(rgb[i])), float(norms[i])) for i in pg.items]
            return FilterView(
                loaded, layer_name, weight.shape, True, sort, pg, tiles, 1.0, None, conv_layers=convs
            )
        norms = np.sqrt((weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1))
        by_norm = np.argsort(-norms, kind="stable")
        if filter_index is None:
            filter_index = int(by_norm[0])
        if not 0 <= filter_index < weight.shape[0]:
            raise InvalidInput(f"filter must be between 0 and {weight.shape[0] - 1}.", field="filter")
        kernels, limit = fv.per_input_channel(weight, filter_index)
        k_norms = np.sqrt((kernels.reshape(kernels.shape[0], -1) ** 2).sum(axis=1))
        order = np.arange(kernels.shape[0]) if sort == "index" else np.argsort(-k_norms, kind="stable")
        pg = feat.paginate(order, page, per_page)
        tiles = [
            (c, self._kernel_tile(colorize(kernels[c], "rdbu", -limit, limit)), float(k_norms[c]))
            for c in pg.items
        ]
        choices = [(int(i), float(norms[i])) for i in by_norm]
        return FilterView(
            loaded, layer_name, weight.shape, False, sort, pg, tiles, limit, filter_index, choices, convs
        )

    @staticmethod
    def _kernel_tile(img: np.ndarray) -> np.ndarray:
        factor = max(1, FILTER_TILE_PIXELS // max(img.shape[:2]))
        return upscale_nearest(img, factor) if factor > 1 else img

    def filter_weights(
        self, name: str | None, weights: str, layer: str | None
    ) -> tuple[LoadedModel, str, np.ndarray]:
        loaded = self.model(name, weights)
        try:
            with loaded.lock:
                layer_name, weight = fv.conv_weight(loaded.module, layer)
        except LayerNotFound as exc:
            raise NotFound(
                f"No convolution named {exc.name!r} in {loaded.display_name}.",
                field="layer",
                choices=exc.choices,
            ) from exc
        return loaded, layer_name, weight

    def filter_zoom(
        self, name: str | None, weights: str, layer: str, index: int, filter_index: int | None = None
    ) -> FilterZoom:
        """One kernel enlarged: the first conv's output filter ``index`` (each input channel), or a later
        conv's input channel ``index`` of output filter ``filter_index`` (default 0)."""
        loaded, layer_name, weight = self.filter_weights(name, weights, layer)
        first = layer_name == fv.conv_layers(loaded.module)[0].name
        if first:
            if not 0 <= index < weight.shape[0]:
                raise InvalidInput(f"index must be between 0 and {weight.shape[0] - 1}.", field="index")
            kernels = weight[index]
            title = f"{layer_name}: filter {index}"
        else:
            out = filter_index if filter_index is not None else 0
            if not 0 <= out < weight.shape[0]:
                raise InvalidInput(f"filter must be between 0 and {weight.shape[0] - 1}.", field="filter")
            if not 0 <= index < weight.shape[1]:
                raise InvalidInput(f"index must be between 0 and {weight.shape[1] - 1}.", field="index")
            kernels = weight[out, index : index + 1]
            title = f"{layer_name}: filter {out}, input channel {index}"
        limit = float(np.abs(kernels).max()) or 1.0
        pictures = []
        for c, kernel in enumerate(kernels):
            img = colorize(kernel, "rdbu", -limit, limit)
            factor = max(1, ZOOM_PIXELS // max(kernel.shape))
            pictures.append((c, upscale_nearest(img, factor), kernel.tolist()))
        return FilterZoom(loaded, title, pictures, limit, first)

    # --- receptive fields --------------------------------------------------------------------------------------

    def rf_table(
        self, name: str | None, weights: str = "auto", image_id: str | None = None
    ) -> tuple[LoadedModel, Structure]:
        loaded = self.model(name, weights)
        return loaded, self.structure(loaded, image_id)

    @staticmethod
    def rf_grid_layers(structure: Structure) -> list[str]:
        """Layers whose units have (y, x) positions on a (C, H, W) map: the ones a click can probe."""
        return [n for n, r in structure.rf.items() if r.grid and r.output_shape and len(r.output_shape) == 3]

    def rf_default_layer(self, structure: Structure) -> str | None:
        """A convolution half-way down: big enough to see the field grow, small enough to click a unit."""
        grid = self.rf_grid_layers(structure)
        middle = [c for c in structure.conv_layers if c in grid]
        return middle[len(middle) // 2] if middle else (grid[0] if grid else None)

    def rf_probe(
        self,
        name: str | None,
        weights: str,
        image_id: str | None,
        layer: str | None,
        y: int | None,
        x: int | None,
        channel: int | None = None,
        cmap: str = "magma",
        call: int | None = None,
    ) -> RFProbe:
        """Theoretical box of unit (y, x) of ``layer`` and its effective RF by gradient.

        ``layer`` None: ``rf_default_layer``; ``y`` or ``x`` None: the centre unit."""
        loaded = self.model(name, weights)
        structure = self.structure(loaded, image_id)
        if layer is None:
            layer = self.rf_default_layer(structure)
            if layer is None:
                raise InvalidInput(f"{loaded.display_name} has no layer with a spatial map.", field="layer")
        if layer not in structure.rf:
            choices = [n for n, r in structure.rf.items() if r.grid]
            raise NotFound(
                f"No layer {layer!r} with a spatial map in {loaded.display_name}.",
                field="layer",
                choices=choices,
            )
        lrf = structure.rf[layer]
        calls = structure.rf_calls.get(layer, [lrf])
        # The last call by default, as the RF table; a concrete index lets the ERF pass stop right after it.
        try:
            call_index = resolve_call(call, len(calls), layer)
        except CallNotFound as exc:
            raise InvalidInput(str(exc), field="call") from exc
        lrf = calls[call_index]
        if not lrf.grid or lrf.output_shape is None or len(lrf.output_shape) != 3:
            if not lrf.spatial or lrf.global_context:
                reason = "its units see the whole image"
            else:
                # e.g. a transformer's channels-last (H, W, C) tokens: units have a place, but not as a map.
                shape = "×".join(str(d) for d in lrf.output_shape or ())
                reason = f"its output ({shape or 'no tensor'}) is not a (C, H, W) feature map"
            raise InvalidInput(
                f"{layer} has no spatial map: {reason}.",
                field="layer",
                choices=[n for n, r in structure.rf.items() if r.grid],
            )
        _, height, width = lrf.output_shape
        y = height // 2 if y is None else y
        x = width // 2 if x is None else x
        if not 0 <= y < height:
            raise InvalidInput(f"y must be between 0 and {height - 1} for {layer}.", field="y")
        if not 0 <= x < width:
            raise InvalidInput(f"x must be between 0 and {width - 1} for {layer}.", field="x")
        if channel is not None and not 0 <= channel < lrf.output_shape[0]:
            raise InvalidInput(f"channel must be between 0 and {lrf.output_shape[0] - 1}.", field="channel")
        net_input = self.net_input(loaded, image_id)
        with loaded.lock:
            erf = effective_rf(loaded.module, net_input.tensor, layer, y, x, channel, call=call_index)
        box = rf_box(lrf, y, x)
        img_h, img_w = net_input.shown.shape[:2]
        peak = float(erf.max())
        norm = erf / peak if peak > 0 else erf
        ys, xs = np.nonzero(norm >= 0.01)
        extent = (
            {"top": int(ys.min()), "left": int(xs.min()), "bottom": int(ys.max()), "right": int(xs.max())}
            if ys.size
            else None
        )
        return RFProbe(
            loaded=loaded,
            layer=lrf,
            y=y,
            x=x,
            channel=channel,
            box=box.to_dict(),
            box_clipped=box.clipped(img_h, img_w).to_dict(),
            erf=erf,
            erf_max=peak,
            erf_extent=extent,
            net_input=net_input,
            cmap=cmap,
            call=call_index,
            calls=len(calls),
        )

    @staticmethod
    def stack_comparison(max_layers: int = 4, channels: int = 64) -> list[Any]:
        return stack_vs_large(max_layers=max_layers, channels=channels, size=16)

    # --- milestones --------------------------------------------------------------------------------------------

    def mean_map(
        self,
        loaded: LoadedModel,
        image_id: str | None,
        layer: str,
        cmap: str = "viridis",
        call: int | None = None,
    ) -> MeanMap:
        """The channel-mean of a layer's maps at ``call`` (None: the last), blown up to the input size."""
        acts, maps = self.layer_activation(loaded, image_id, layer, call)
        mean = maps.mean(axis=0)
        lo, hi = value_limits(mean)
        h, w = acts.net_input.shown.shape[:2]
        return MeanMap(layer, mean, lo, hi, (int(h), int(w)), cmap)


def _draw_box(img: np.ndarray, box: Box, colour: tuple[int, int, int] = (255, 212, 0)) -> np.ndarray:
    """Outline ``box`` (inclusive rows/columns, inside the image) on a copy of ``img (H, W, 3)``, 2 px wide."""
    out = img.copy()
    top, left, bottom, right = box.top, box.left, box.bottom, box.right
    if bottom < top or right < left:
        return out
    out[top : min(top + 2, bottom + 1), left : right + 1] = colour
    out[max(bottom - 1, top) : bottom + 1, left : right + 1] = colour
    out[top : bottom + 1, left : min(left + 2, right + 1)] = colour
    out[top : bottom + 1, max(right - 1, left) : right + 1] = colour
    return out
