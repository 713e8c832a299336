"""Models users upload: a JSON architecture plus optional safetensors weights, stored content-addressed.

An upload is checked in order of cost: bytes (the bounded reader), JSON nesting, the description (pure
arithmetic), the estimate (parameters, MACs, activation memory; see app/core/models/custom_models.py) against the
Settings limits, and only then built for real, loaded with its weights and run once on a probe batch. Reading a
stored model later never builds or runs it: its estimate is kept in info.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from torch import nn

from app.config import Settings
from app.core.models.custom_models import (
    MAX_JSON_DEPTH,
    Architecture,
    ArchitectureError,
    Estimate,
    build_module,
    estimate,
    first_non_finite_layer,
    module_with_weights,
    parse_architecture,
    probe_inputs,
)
from app.core.models.zoo import ModelSpec, Preprocessing
from app.errors import Conflict, InvalidInput, NotFound, OverLimit, PayloadTooLarge, StorageFailed

CUSTOM_PREFIX = "custom-"
MAX_ARCHITECTURE_BYTES = 256 * 1024
_ESTIMATE_KEYS = ("params", "macs", "activation_bytes", "depth")


@dataclass(frozen=True)
class CustomModelRecord:
    id: str
    name: str
    has_weights: bool
    created: str
    params: int
    depth: int
    architecture: Architecture
    macs: int = 0
    activation_bytes: int = 0


def decode_architecture(data: bytes) -> Architecture:
    """JSON bytes -> a validated Architecture; InvalidInput naming the field (never a RecursionError)."""
    try:
        spec = json.loads(data)
    except RecursionError as exc:
        raise InvalidInput(
            f"The architecture JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels).",
            field="architecture",
        ) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and integers past Python's 4300 digits
        raise InvalidInput(f"The architecture is not valid JSON: {exc}", field="architecture") from exc
    try:
        return parse_architecture(spec)
    except ArchitectureError as exc:
        raise InvalidInput(f"Architecture: {exc}", field=_field(exc)) from exc


class CustomModelStore:
    """settings.data_dir/custom_models/<id>/{architecture.json, weights.safetensors, info.json}."""

    def __init__(self, settings: Settings) -> None:
        self._root = settings.data_dir / "custom_models"
        self._max_weights = settings.max_model_bytes
        self._limits = {
            "max_model_parameters": settings.max_model_parameters,
            "max_model_macs": settings.max_model_macs,
            "max_model_activation_bytes": settings.max_model_activation_bytes,
        }
        # Ids are content hashes, so a record never changes: read each model once, not per page.
        self._records: dict[str, CustomModelRecord] = {}
        self._lock = threading.Lock()

    @property
    def limits(self) -> dict[str, int]:
        """Setting name -> maximum, for the cost of one image through an uploaded model."""
        return dict(self._limits)

    # --- checks ----------------------------------------------------------------------------------------------

    def estimate(self, arch: Architecture) -> Estimate:
        """The model's cost from its description; OverLimit past a Settings limit (nothing is allocated)."""
        try:
            cost = estimate(arch)
        except ArchitectureError as exc:
            raise InvalidInput(f"Architecture: {exc}", field=_field(exc)) from exc
        self.check_limits(cost)
        return cost

    def check_limits(self, cost: Estimate) -> None:
        for limit, value, what in (
            ("max_model_parameters", cost.params, "parameters"),
            ("max_model_macs", cost.macs, "multiply-accumulates per image"),
            ("max_model_activation_bytes", cost.activation_bytes, "bytes of activations per image"),
        ):
            maximum = self._limits[limit]
            if value > maximum:
                raise OverLimit(
                    f"This model would have {value:,} {what}, more than the {maximum:,} allowed "
                    f"(setting {limit}). Use fewer or narrower layers, or a smaller input_size.",
                    field="architecture",
                    limit=limit,
                    estimate=value,
                    maximum=maximum,
                )

    # --- writing ---------------------------------------------------------------------------------------------

    def put(self, architecture: bytes, weights: bytes | None) -> CustomModelRecord:
        if len(architecture) > MAX_ARCHITECTURE_BYTES:
            raise PayloadTooLarge("The architecture JSON is larger than 256 KiB.", field="architecture")
        if weights is not None and len(weights) > self._max_weights:
            raise PayloadTooLarge(
                f"The weights file is larger than {self._max_weights:,} bytes.", field="weights"
            )
        arch = decode_architecture(architecture)
        cost = self.estimate(arch)
        digest = hashlib.sha256(architecture + b"\0" + (weights or b"")).hexdigest()
        model_id = CUSTOM_PREFIX + digest[:16]
        final = self._root / model_id
        if final.is_dir():
            return self.get(model_id)  # the same bytes were checked when they were first stored
        # The one real build and run of this upload.
        module = build_module(arch) if weights is None else _with_weights(arch, weights)
        try:
            bad = first_non_finite_layer(module, probe_inputs(arch))
        except Exception as exc:
            # The estimate ran the same shapes on the meta device, so this is unexpected; still the model's
            # problem, said at upload, rather than a 500 here and in every view later.
            raise InvalidInput(
                f"The model fails on a probe image ({type(exc).__name__}: {str(exc)[:300]}).",
                field="architecture",
            ) from exc
        if bad is not None:
            field = "weights" if weights is not None else "architecture"
            raise InvalidInput(
                f"On a mid-grey and a noise image, layer {bad} gives values that are not finite numbers "
                "(overflow to infinity or NaN, or a sum past float32's range), so no view could show this model. "
                + ("Check the weights' scale." if weights is not None else "Check mean and std."),
                field=field,
            )
        del module
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = {"created": created, **{key: getattr(cost, key) for key in _ESTIMATE_KEYS}}
        self._write(final, arch, weights, info)
        record = _record(model_id, arch, weights is not None, info)
        with self._lock:
            self._records[model_id] = record
        return record

    def _write(self, final: Path, arch: Architecture, weights: bytes | None, info: dict[str, Any]) -> None:
        staging: Path | None = None
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self._root, prefix=".incoming-"))
            (staging / "architecture.json").write_text(json.dumps(arch.to_json(), indent=1))
            if weights is not None:
                (staging / "weights.safetensors").write_bytes(weights)
            (staging / "info.json").write_text(json.dumps(info))
            for path in staging.iterdir():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            # A directory rename is atomic: readers see the whole model or none of it.
            os.replace(staging, final)
        except OSError as exc:
            if final.is_dir():
                return  # a concurrent upload of the same bytes stored it first
            raise StorageFailed(
                f"The model could not be saved ({exc.strerror or exc}); nothing was stored. "
                "The data directory may be read-only or full.",
                field="architecture",
            ) from exc
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    # --- reading ---------------------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(p.name for p in self._root.iterdir() if p.name.startswith(CUSTOM_PREFIX) and p.is_dir())

    def get(self, model_id: str) -> CustomModelRecord:
        with self._lock:
            cached = self._records.get(model_id)
        if cached is not None:
            return cached
        record = self._read(model_id)
        with self._lock:
            self._records[model_id] = record
        return record

    def _read(self, model_id: str) -> CustomModelRecord:
        """The stored record, validated again (cheap: parsing is arithmetic) but never built or run."""
        folder = self._root / model_id
        if not model_id.startswith(CUSTOM_PREFIX) or "/" in model_id or not folder.is_dir():
            raise NotFound(f"No uploaded model with id {model_id!r}.", field="model")
        try:
            arch = parse_architecture(json.loads((folder / "architecture.json").read_text()))
            info: dict[str, Any] = json.loads((folder / "info.json").read_text())
            if not all(isinstance(info.get(key), int) for key in _ESTIMATE_KEYS):
                # Stored before estimates were kept: compute them (arithmetic, or a meta-device build).
                info.update({key: getattr(estimate(arch), key) for key in _ESTIMATE_KEYS})
            self.check_limits(
                Estimate(info["params"], info["macs"], info["activation_bytes"], info["depth"], ())
            )
        except (ArchitectureError, ValueError, OSError, OverLimit) as exc:
            # Stored before a stricter check (or a lower limit) existed: this model's problem, not a 500.
            reason = exc.message if isinstance(exc, OverLimit) else str(exc)
            raise Conflict(
                f"The uploaded model {model_id} no longer passes validation ({reason}); upload it again.",
                field="model",
            ) from exc
        return _record(model_id, arch, (folder / "weights.safetensors").is_file(), info)

    def build(self, model_id: str, with_weights: bool) -> nn.Module:
        record = self.get(model_id)
        if with_weights and record.has_weights:
            return _with_weights(record.architecture, self._root / model_id / "weights.safetensors")
        return build_module(record.architecture)

    def spec(self, model_id: str) -> ModelSpec:
        record = self.get(model_id)
        arch = record.architecture
        return ModelSpec(
            name=record.id,
            display_name=f"{arch.name} (uploaded)",
            family="Uploaded model",
            year=None,
            key_idea=f"torchvision {arch.torchvision} architecture"
            if arch.torchvision
            else f"{len(arch.layers)} layers described in JSON",
            source="custom",
            params=record.params,
            known_depth=record.depth,
            input_size=arch.input_size,
            top1=None,
            top5=None,
            # torchvision's "GFLOPS" are giga multiply-accumulates too (app/core/models/layers.py).
            gflops=record.macs / 1e9,
            num_classes=len(arch.categories),
            milestone=False,
            builtin=False,
            weights_file="weights.safetensors" if record.has_weights else None,
            preprocessing=Preprocessing(
                resize_size=arch.input_size,
                crop_size=arch.input_size,
                mean=arch.mean,
                std=arch.std,
                in_channels=arch.in_channels,
                direct_resize=True,
            ),
            extra={
                "categories": arch.categories,
                "created": record.created,
                "has_weights": record.has_weights,
                "macs": record.macs,
                "activation_bytes": record.activation_bytes,
            },
        )


def _field(exc: ArchitectureError) -> str:
    return exc.field if exc.field.startswith("architecture") else f"architecture.{exc.field}"


def _record(model_id: str, arch: Architecture, has_weights: bool, info: dict[str, Any]) -> CustomModelRecord:
    return CustomModelRecord(
        id=model_id,
        name=arch.name,
        has_weights=has_weights,
        created=str(info.get("created", "")),
        params=int(info["params"]),
        depth=int(info["depth"]),
        architecture=arch,
        macs=int(info["macs"]),
        activation_bytes=int(info["activation_bytes"]),
    )


def _with_weights(arch: Architecture, weights: bytes | Path) -> nn.Module:
    """The module with these safetensors weights (bytes of an upload, or a stored file read through a map)."""
    try:
        tensors: dict[str, torch.Tensor] = (
            load_file(weights) if isinstance(weights, Path) else load_safetensors(weights)
        )
    except (SafetensorError, ValueError, OSError) as exc:
        raise InvalidInput(
            f"The weights are not a readable .safetensors file ({exc}).", field="weights"
        ) from exc
    try:
        return module_with_weights(arch, tensors)
    except ArchitectureError as exc:
        raise InvalidInput(str(exc), field="weights") from exc


def describe(record: CustomModelRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "has_weights": record.has_weights,
        "created": record.created,
        "params": record.params,
        "macs": record.macs,
        "activation_bytes": record.activation_bytes,
    }
