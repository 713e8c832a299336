"""The model registry: which models exist, loading them once into a bounded LRU, and their weights."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import threading
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from app.config import Settings
from app.core.imaging.preprocess import Fit, PreparedInput, preprocess
from app.core.models import zoo
from app.core.models.hooks import model_lock
from app.errors import Conflict, ConvScopeError, InvalidInput, NotFound, OverLimit, WeightsUnavailable
from app.services.custom_models import CUSTOM_PREFIX, CustomModelStore

WeightsChoice = Literal["auto", "pretrained", "untrained"]
WEIGHTS_CHOICES: tuple[str, ...] = ("auto", "pretrained", "untrained")


@dataclass
class LoadedModel:
    """A model ready to run, with everything a page needs to describe it honestly."""

    name: str
    display_name: str
    module: nn.Module
    weights_status: Literal["pretrained", "untrained"]
    weights_note: str | None
    categories: list[str]
    input_size: tuple[int, int]
    in_channels: int
    spec: zoo.ModelSpec
    # Settings.max_preprocess_elements: no tensor built while preparing an input may have more elements.
    preprocess_limit: int | None = None

    @property
    def lock(self) -> threading.RLock:
        """The model's one lock (``app.core.models.hooks.model_lock``, which core takes too): hold it around
        anything that registers hooks or toggles requires_grad on `module`, so that two requests on the same
        cached model never see each other's hooks."""
        return model_lock(self.module)

    @property
    def nbytes(self) -> int:
        """Bytes of the module's parameters and buffers (what keeping it loaded costs, activations aside)."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def untrained(self) -> bool:
        return self.weights_status == "untrained"

    @property
    def weights_label(self) -> str:
        if self.untrained:
            return "untrained (random weights)"
        if self.spec.builtin:
            return "trained by ConvScope on synthetic data"
        if self.spec.source == "custom":
            return "weights uploaded by a user"
        return "pretrained on ImageNet"

    def prepare(self, image: NDArray[np.floating], fit: Fit = "crop") -> PreparedInput:
        """(H, W) or (H, W, C) [0, 1] image -> this model's input tensor (1, C, h, w) and its story.

        Every view prepares its input here, so every view is bounded by max_preprocess_elements (OverLimit).
        fit: "crop" (the model's own transform) or "fit" (the whole image, aspect kept, zero-padded); the
        result's `fit` says which one made the tensor.
        """
        assert self.spec.preprocessing is not None
        return preprocess(image, self.spec.preprocessing, self.preprocess_limit, fit)


class ModelRegistry:
    """All models ConvScope knows, and a bounded LRU cache of the ones loaded."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        # One lock per model key, so two first requests for the same model build it once.
        self._build_locks: dict[tuple[str, str], threading.Lock] = {}
        self._builtin_meta = zoo.builtin_metadata(settings.builtin_models_dir)
        # Built at start: builtin_spec counts parameters on a fresh module, too much to redo for every picker.
        self._builtin_specs = {name: zoo.builtin_spec(meta) for name, meta in self._builtin_meta.items()}
        # torchvision specs with this server's zoo limits applied (name -> spec, marked when unavailable).
        self._torchvision_specs: dict[str, zoo.ModelSpec] = {}
        self.custom = CustomModelStore(settings)

    @property
    def max_model_bytes(self) -> int:
        return self._settings.max_model_bytes

    # --- what exists -----------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Built-ins first (they always work offline), then EfficientNet-Lite0, then torchvision's list."""
        return [
            *self._builtin_meta,
            *self.custom.ids(),
            zoo.EFFICIENTNET_LITE0,
            *zoo.classification_model_names(),
        ]

    def spec(self, name: str) -> zoo.ModelSpec:
        if name in self._builtin_specs:
            return self._builtin_specs[name]
        if name == zoo.EFFICIENTNET_LITE0:
            return zoo.efficientnet_lite0_spec()
        if name.startswith(CUSTOM_PREFIX):
            return self.custom.spec(name)
        if name in zoo.classification_model_names():
            spec = self._torchvision_specs.get(name)
            if spec is None:
                spec = zoo.torchvision_spec(name)
                refusal = zoo_limit_error(spec, self._settings)
                if refusal is not None:
                    spec = dataclasses.replace(spec, unavailable_reason=refusal.message)
                self._torchvision_specs[name] = spec
            return spec
        raise NotFound(
            f"Unknown model {name!r}. Choose one of: {', '.join(self.names()[:20])}, ... "
            "(GET /api/v1/models lists them all).",
            field="model",
            choices=self.names(),
        )

    def list_specs(self, milestones_only: bool = False) -> list[zoo.ModelSpec]:
        specs = []
        for name in self.names():
            try:
                specs.append(self.spec(name))
            except Conflict:
                # One broken upload must not take the whole zoo (and every model picker) down with it.
                if not name.startswith(CUSTOM_PREFIX):
                    raise
        if milestones_only:
            return [s for s in specs if s.milestone or s.builtin or s.name == zoo.EFFICIENTNET_LITE0]
        return specs

    def check_available(self, spec: zoo.ModelSpec) -> None:
        """Raise the OverLimit that makes `spec` unavailable, if any (before anything is built or downloaded)."""
        refusal = zoo_limit_error(spec, self._settings)
        if refusal is not None:
            raise refusal

    def default_model(self) -> str:
        wanted = self._settings.default_model
        if wanted in self.names():
            return wanted
        return next(iter(self._builtin_meta), zoo.EFFICIENTNET_LITE0)

    # --- weights ---------------------------------------------------------------------------------------------

    def pretrained_available(self, spec: zoo.ModelSpec) -> bool:
        if spec.offline_weights:
            return True
        if spec.source == "custom":
            return bool(spec.extra.get("has_weights"))
        path = zoo.cached_weights_path(spec)
        return path is not None and path.is_file()

    def missing_weights_message(self, spec: zoo.ModelSpec) -> str:
        if spec.source == "custom":
            return f"The uploaded model {spec.display_name} came without weights (upload a .safetensors file with it)."
        path = zoo.cached_weights_path(spec)
        return (
            f"Pretrained weights for {spec.display_name} are not on this machine: the file "
            f"{spec.weights_file} is not in {path.parent if path else 'the torchvision cache'}. "
            f"Get it with `convscope weights download {spec.name}` where there is a network, or copy "
            f"{spec.weights_file} into that folder (set TORCH_HOME to use another cache)."
        )

    # --- loading ---------------------------------------------------------------------------------------------

    def get(self, name: str | None, weights: str = "auto") -> LoadedModel:
        """A loaded model (None or "" means the default model). weights: "auto" (pretrained when it can be had,
        else untrained, labelled), "pretrained" (WeightsUnavailable if not on disk), or "untrained" (seeded
        random weights)."""
        name = name or self.default_model()
        if weights not in WEIGHTS_CHOICES:
            raise InvalidInput(
                f"weights must be one of {', '.join(WEIGHTS_CHOICES)}, not {weights!r}.", field="weights"
            )
        spec = self.spec(name)
        self.check_available(spec)
        note: str | None = None
        status: Literal["pretrained", "untrained"]
        if weights == "untrained":
            status = "untrained"
            note = "Random weights chosen on purpose: this network has learned nothing."
        elif self.pretrained_available(spec):
            status = "pretrained"
        elif weights == "pretrained":
            raise WeightsUnavailable(self.missing_weights_message(spec), field="weights", model=spec.name)
        else:
            status = "untrained"
            note = self.missing_weights_message(spec) + " Showing the same architecture with random weights."
        key = (spec.name, status)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = self._build(spec, status, note)
                with self._lock:
                    self._cache[key] = cached
                    # At most model_cache_size models and max_loaded_model_bytes of weights; the newest always
                    # stays (a request is using it), so one model larger than the budget still works.
                    while len(self._cache) > 1 and (
                        len(self._cache) > self._settings.model_cache_size
                        or sum(m.nbytes for m in self._cache.values()) > self._settings.max_loaded_model_bytes
                    ):
                        self._cache.popitem(last=False)
        return cached

    def _build(
        self, spec: zoo.ModelSpec, status: Literal["pretrained", "untrained"], note: str | None
    ) -> LoadedModel:
        pretrained = status == "pretrained"
        if spec.builtin:
            from app.core.training.builtin import load_builtin

            module, meta = load_builtin(spec.name, self._settings.builtin_models_dir)
            if not pretrained:
                module = _reinitialised(module)
            categories = list(meta["categories"])
        elif spec.source == "custom":
            module = self.custom.build(spec.name, with_weights=pretrained)
            categories = list(spec.extra["categories"])
        elif spec.name == zoo.EFFICIENTNET_LITE0:
            module = _seeded(lambda: zoo.build_efficientnet_lite0(pretrained))
            categories = zoo.imagenet_categories()
        else:
            try:
                module = zoo.build_torchvision(spec.name, pretrained)
            except (OSError, RuntimeError) as exc:
                raise WeightsUnavailable(
                    f"The weights file for {spec.display_name} could not be loaded ({exc}). "
                    f"Delete it and download it again with `convscope weights download {spec.name}`.",
                    field="weights",
                ) from exc
            categories = zoo.imagenet_categories()
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        assert spec.preprocessing is not None
        return LoadedModel(
            name=spec.name,
            display_name=spec.display_name,
            module=module,
            weights_status=status,
            weights_note=note,
            categories=categories,
            input_size=spec.input_size,
            in_channels=spec.preprocessing.in_channels,
            spec=spec,
            preprocess_limit=self._settings.max_preprocess_elements,
        )

    def loaded_keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def zoo_limit_error(spec: zoo.ModelSpec, settings: Settings) -> OverLimit | None:
    """Why this server will not run a torchvision model (past max_zoo_parameters or max_zoo_gflops), as the
    error the registry raises; None when it will. Read from the weights' metadata: nothing is built."""
    if spec.source != "torchvision":
        return None
    name = f"{spec.display_name} ({spec.name})"
    if spec.params is not None and spec.params > settings.max_zoo_parameters:
        return OverLimit(
            f"{name} is not available on this server: it has {spec.params:,} parameters "
            f"({spec.params * 4 / 2**30:.1f} GiB as 32-bit floats, for each copy in memory), more than "
            f"max_zoo_parameters = {settings.max_zoo_parameters:,}. An administrator can raise "
            "CONVSCOPE_MAX_ZOO_PARAMETERS.",
            field="model",
            limit="max_zoo_parameters",
            estimate=spec.params,
            maximum=settings.max_zoo_parameters,
        )
    if spec.gflops is not None and spec.gflops > settings.max_zoo_gflops:
        h, w = spec.input_size
        return OverLimit(
            f"{name} is not available on this server: one image at its {w} x {h} input costs "
            f"{spec.gflops:g} GFLOPS (torchvision's figure), more than max_zoo_gflops = "
            f"{settings.max_zoo_gflops:g}. An administrator can raise CONVSCOPE_MAX_ZOO_GFLOPS.",
            field="model",
            limit="max_zoo_gflops",
            estimate=spec.gflops,
            maximum=settings.max_zoo_gflops,
        )
    return None


def _seeded(build: object) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build()  # type: ignore[operator]
    assert isinstance(module, nn.Module)
    return module


def _reinitialised(module: nn.Module) -> nn.Module:
    """The same architecture with seeded random weights (for 'untrained' built-ins)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


# --- downloading torchvision weights (a job, with a timeout) --------------------------------------------------

_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def download_weights(
    spec: zoo.ModelSpec,
    timeout: float,
    report: object = None,
) -> Path:
    """Fetch a torchvision weights file into the cache, atomically, checking torchvision's hash prefix.

    Each socket operation times out after `timeout` seconds, so a dead network cannot hang a worker;
    `report(fraction)` is called as bytes arrive (it may raise to cancel).
    """
    if spec.source != "torchvision" or spec.weights_url is None:
        raise InvalidInput(
            f"{spec.display_name} needs no download: its weights ship with ConvScope.", field="model"
        )
    target = zoo.cached_weights_path(spec)
    assert target is not None
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH_PREFIX.search(os.path.basename(spec.weights_url))
    prefix = match.group(1) if match else ""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".download-", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(spec.weights_url, timeout=timeout) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if callable(report) and total:
                    report(done / total)
            out.flush()
            os.fsync(out.fileno())
        if prefix and not digest.hexdigest().startswith(prefix):
            raise ConvScopeError(f"The downloaded {spec.weights_file} is corrupt (hash mismatch); try again.")
        os.replace(tmp_name, target)
    except OSError as exc:
        raise WeightsUnavailable(
            f"Could not download {spec.weights_file} ({exc}). This machine may be offline: copy the file into "
            f"{target.parent} instead."
        ) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
