"""Models users upload: a JSON architecture plus optional safetensors weights, stored content-addressed."""

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
from torch import nn

from app.config import Settings
from app.core.custom_models import (
    Architecture,
    ArchitectureError,
    build_module,
    load_weights,
    parse_architecture,
)
from app.core.zoo import ModelSpec, Preprocessing, weighted_depth
from app.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge

CUSTOM_PREFIX = "custom-"
MAX_ARCHITECTURE_BYTES = 256 * 1024


@dataclass(frozen=True)
class CustomModelRecord:
    id: str
    name: str
    has_weights: bool
    created: str
    params: int
    depth: int
    architecture: Architecture


class CustomModelStore:
    """settings.data_dir/custom_models/<id>/{architecture.json, weights.safetensors, info.json}."""

    def __init__(self, settings: Settings) -> None:
        self._root = settings.data_dir / "custom_models"
        self._max_weights = settings.max_model_bytes
        # Ids are content hashes, so a record never changes: read and build each model once, not per page.
        self._records: dict[str, CustomModelRecord] = {}
        self._lock = threading.Lock()

    def put(self, architecture: bytes, weights: bytes | None) -> CustomModelRecord:
        if len(architecture) > MAX_ARCHITECTURE_BYTES:
            raise PayloadTooLarge("The architecture JSON is larger than 256 KiB.", field="architecture")
        if weights is not None and len(weights) > self._max_weights:
            raise PayloadTooLarge(
                f"The weights file is larger than {self._max_weights:,} bytes.", field="weights"
            )
        try:
            arch = parse_architecture(json.loads(architecture))
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"The architecture is not valid JSON: {exc}", field="architecture") from exc
        except ArchitectureError as exc:
            raise InvalidInput(f"Architecture: {exc}", field=f"architecture.{exc.field}") from exc
        module = build_module(arch)
        if weights is not None:
            _load_checked(module, weights)
        digest = hashlib.sha256(architecture + b"\0" + (weights or b"")).hexdigest()
        model_id = CUSTOM_PREFIX + digest[:16]
        final = self._root / model_id
        if not final.is_dir():
            self._root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self._root, prefix=".incoming-"))
            try:
                (staging / "architecture.json").write_text(json.dumps(arch.to_json(), indent=1))
                if weights is not None:
                    (staging / "weights.safetensors").write_bytes(weights)
                info = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                (staging / "info.json").write_text(json.dumps(info))
                for path in staging.iterdir():
                    with open(path, "rb") as handle:
                        os.fsync(handle.fileno())
                # A directory rename is atomic: readers see the whole model or none of it.
                os.replace(staging, final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return self.get(model_id)

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
        folder = self._root / model_id
        if not model_id.startswith(CUSTOM_PREFIX) or "/" in model_id or not folder.is_dir():
            raise NotFound(f"No uploaded model with id {model_id!r}.", field="model")
        try:
            arch = parse_architecture(json.loads((folder / "architecture.json").read_text()))
        except (ArchitectureError, ValueError) as exc:
            # Stored before a stricter check existed: report it as this model's problem, not a 500.
            raise Conflict(
                f"The uploaded model {model_id} no longer passes validation ({exc}); upload it again.",
                field="model",
            ) from exc
        info = json.loads((folder / "info.json").read_text())
        module = build_module(arch)
        return CustomModelRecord(
            id=model_id,
            name=arch.name,
            has_weights=(folder / "weights.safetensors").is_file(),
            created=str(info.get("created", "")),
            params=sum(p.numel() for p in module.parameters()),
            depth=weighted_depth(module),
            architecture=arch,
        )

    def build(self, model_id: str, with_weights: bool) -> nn.Module:
        record = self.get(model_id)
        module = build_module(record.architecture)
        if with_weights and record.has_weights:
            _load_checked(module, (self._root / model_id / "weights.safetensors").read_bytes())
        return module

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
            gflops=None,
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
            },
        )


def _load_checked(module: nn.Module, weights: bytes) -> None:
    try:
        tensors: dict[str, torch.Tensor] = load_safetensors(weights)
    except (SafetensorError, ValueError, OSError) as exc:
        raise InvalidInput(
            f"The weights are not a readable .safetensors file ({exc}).", field="weights"
        ) from exc
    try:
        load_weights(module, tensors)
    except ArchitectureError as exc:
        raise InvalidInput(str(exc), field="weights") from exc


def describe(record: CustomModelRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "has_weights": record.has_weights,
        "created": record.created,
    }
