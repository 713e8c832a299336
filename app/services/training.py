"""Training as a job: check and bound the request, then generate the data, train with the engine
(app/core/training/engine.py) and save the best weights as a model of the custom store, which every view opens.

Everything that can be refused is refused before the job is queued, naming the field and the limit: the
architecture (its layers, its cost per image), the number of classes against the dataset's, epochs, batch size,
the number of images and their bytes, one batch's activations, the estimated seconds (``max_job_seconds``) and
the number of training jobs at once (``max_training_jobs``). Input channels and size never refuse: the images are
converted to the model (greyscale copied to RGB, RGB to luminance, resized), and the job's ``dataset_note`` says so.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, replace
from typing import Any

from safetensors.torch import save as save_safetensors
from torch import nn

from app.config import Settings
from app.core.models.custom_models import Architecture, build_module
from app.core.training.datasets import DATASETS, DatasetSpec, generation_side, load_dataset
from app.core.training.engine import OPTIMIZERS, TrainConfig, TrainingDiverged, TrainProgress, train
from app.errors import Busy, InvalidInput, OverLimit
from app.services.custom_models import CUSTOM_PREFIX, MAX_ARCHITECTURE_BYTES, decode_architecture
from app.services.jobs import Job, JobContext, JobEstimate, JobManager
from app.services.models import ModelRegistry

KIND = "train"
# A backward pass and an optimiser step cost about two forwards: one training image = 3 forwards.
TRAIN_FORWARDS_PER_IMAGE = 3
# Share of the job's progress bar spent generating the data (the rest is training, then saving).
DATA_SHARE = 0.05
_submit_lock = threading.Lock()


@dataclass(frozen=True)
class TrainRequest:
    """What a client asked for (the fields of app/schemas/training.py, validated there for the API)."""

    dataset: str
    epochs: int
    architecture: dict[str, Any] | None = None
    model: str | None = None
    seed: int = 0
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    train_size: int | None = None
    val_size: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class TrainingPlan:
    """A checked request: the architecture to train, where its first weights come from, and the sizes."""

    architecture: Architecture
    base_model: str | None  # a custom model whose weights are the start; None: seeded random weights
    dataset: DatasetSpec
    train_size: int
    val_size: int
    config: TrainConfig
    name: str
    estimate: JobEstimate


def _architecture_field(request: TrainRequest) -> str:
    return "architecture" if request.architecture is not None else "model"


def _resolve_architecture(request: TrainRequest, registry: ModelRegistry) -> tuple[Architecture, str | None]:
    if (request.architecture is None) == (request.model is None):
        raise InvalidInput(
            "Give either `architecture` (a new model, the JSON of POST /api/v1/models) or `model` (a model "
            "uploaded or trained here, to train further), not both and not neither.",
            field="architecture",
        )
    if request.architecture is not None:
        raw = json.dumps(request.architecture).encode()
        if len(raw) > MAX_ARCHITECTURE_BYTES:
            raise InvalidInput("The architecture JSON is larger than 256 KiB.", field="architecture")
        return decode_architecture(raw), None
    assert request.model is not None
    if not request.model.startswith(CUSTOM_PREFIX):
        registry.spec(request.model)  # an unknown name is a 404 naming the choices
        raise InvalidInput(
            f"{request.model!r} is a built-in or zoo model: only models uploaded or trained here (custom-...) can be "
            "trained further. Starting from a zoo backbone (transfer learning) is not available yet; send its "
            "`architecture` instead to train the same layers from scratch.",
            field="model",
        )
    record = registry.custom.get(request.model)
    return record.architecture, request.model if record.has_weights else None


def _fit_to_dataset(arch: Architecture, spec: DatasetSpec, field: str) -> Architecture:
    """The architecture with the dataset's class names; InvalidInput when the number of classes differs."""
    classes = len(spec.categories)
    if len(arch.categories) != classes:
        where = f"{field}.categories" if field == "architecture" else field
        raise InvalidInput(
            f"The dataset {spec.name} has {classes} classes ({', '.join(spec.categories)}), but the model gives "
            f"{len(arch.categories)} outputs for the {len(arch.categories)} categories it lists. List {classes} "
            f"categories and end with a layer of {classes} outputs (e.g. a linear layer with out_features {classes}).",
            field=where,
        )
    return replace(arch, categories=list(spec.categories))


def _over(message: str, field: str, limit: str, estimate: float, maximum: float) -> OverLimit:
    return OverLimit(message, field=field, limit=limit, estimate=estimate, maximum=maximum)


def plan_training(
    request: TrainRequest, registry: ModelRegistry, jobs: JobManager, settings: Settings
) -> TrainingPlan:
    """Check everything a training request asks for, before anything is generated or built (see module doc)."""
    arch, base = _resolve_architecture(request, registry)
    field = _architecture_field(request)
    cost = registry.custom.estimate(arch)  # max_model_* limits, by arithmetic
    spec = DATASETS.get(request.dataset)
    if spec is None:
        raise InvalidInput(
            f"dataset must be one of {', '.join(DATASETS)}, not {request.dataset!r}.", field="dataset"
        )
    if request.optimizer not in OPTIMIZERS:
        raise InvalidInput(f"optimizer must be one of {', '.join(OPTIMIZERS)}.", field="optimizer")
    arch = _fit_to_dataset(arch, spec, field)
    if request.epochs > settings.max_train_epochs:
        raise _over(
            f"epochs {request.epochs} is more than this server allows (max_train_epochs = {settings.max_train_epochs}).",
            "epochs",
            "max_train_epochs",
            request.epochs,
            settings.max_train_epochs,
        )
    if request.batch_size > settings.max_train_batch_size:
        raise _over(
            f"batch_size {request.batch_size} is more than this server allows "
            f"(max_train_batch_size = {settings.max_train_batch_size}).",
            "batch_size",
            "max_train_batch_size",
            request.batch_size,
            settings.max_train_batch_size,
        )
    n_train = request.train_size if request.train_size is not None else spec.train_size
    n_val = request.val_size if request.val_size is not None else spec.val_size
    images = n_train + n_val
    if images > settings.max_train_images:
        raise _over(
            f"{n_train} training + {n_val} validation images = {images:,}, more than this server allows "
            f"(max_train_images = {settings.max_train_images:,}).",
            "train_size",
            "max_train_images",
            images,
            settings.max_train_images,
        )
    side = generation_side(spec, arch.input_size)
    per_image = 4 * max(arch.in_channels * math.prod(arch.input_size), spec.channels * side * side)
    if images * per_image > settings.max_train_dataset_bytes:
        raise _over(
            f"{images:,} images of {arch.in_channels}x{arch.input_size[0]}x{arch.input_size[1]} take "
            f"{images * per_image / 2**20:,.0f} MiB as float32, more than max_train_dataset_bytes = "
            f"{settings.max_train_dataset_bytes / 2**20:,.0f} MiB. Use fewer images or a smaller input_size.",
            "train_size",
            "max_train_dataset_bytes",
            images * per_image,
            settings.max_train_dataset_bytes,
        )
    batch_bytes = cost.activation_bytes * request.batch_size * TRAIN_FORWARDS_PER_IMAGE
    if batch_bytes > settings.max_train_batch_activation_bytes:
        raise _over(
            f"One batch of {request.batch_size} images would hold about {batch_bytes / 2**20:,.0f} MiB of "
            "activations, gradients and their copies, more than max_train_batch_activation_bytes = "
            f"{settings.max_train_batch_activation_bytes / 2**20:,.0f} MiB. Use a smaller batch_size.",
            "batch_size",
            "max_train_batch_activation_bytes",
            batch_bytes,
            settings.max_train_batch_activation_bytes,
        )
    forwards = request.epochs * (n_train * TRAIN_FORWARDS_PER_IMAGE + n_val)
    rate = settings.training_macs_per_second
    seconds = forwards * max(cost.macs, 1) / rate + images * spec.seconds_per_image
    estimate = JobEstimate(
        kind=KIND,
        forward_passes=forwards,
        forward_macs=max(cost.macs, 1),
        macs_per_second=rate,
        batch_size=request.batch_size,
        seconds=seconds,
        what=f"training {arch.name} for {request.epochs} epochs on {n_train:,} {spec.name} images",
        hint="Use fewer epochs, fewer images (train_size) or a smaller model.",
        field_name="epochs",
        detail={"epochs": request.epochs, "train_size": n_train, "val_size": n_val},
    )
    config = TrainConfig(
        epochs=request.epochs,
        seed=request.seed,
        batch_size=request.batch_size,
        optimizer="sgd" if request.optimizer == "sgd" else "adam",
        lr=request.lr,
        # The server's thread count is process-wide (other requests share it): left as it is, and reported.
        threads=None,
        report_every=max(1, math.ceil(n_train / request.batch_size / 10)),
    )
    name = (request.name or f"{arch.name} trained on {spec.name}")[:80]
    return TrainingPlan(arch, base, spec, n_train, n_val, config, name, estimate)


def _seeded_reset(module: nn.Module) -> nn.Module:
    """Draw fresh initial weights from torch's (seeded) generator: build_module always uses seed 0."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def start_training(
    request: TrainRequest,
    registry: ModelRegistry,
    jobs: JobManager,
    settings: Settings,
    client: str = "local",
) -> Job:
    """Plan, admit and queue a training job. Busy (503) when max_training_jobs are already running or queued."""
    plan = plan_training(request, registry, jobs, settings)
    with _submit_lock:
        running = [j for j in jobs.active() if j.kind == KIND]
        if len(running) >= settings.max_training_jobs:
            raise Busy(
                f"{len(running)} training job{'s are' if len(running) != 1 else ' is'} already running or queued, "
                f"the most this server runs at once (max_training_jobs = {settings.max_training_jobs}). "
                "Wait for it to finish or cancel it (DELETE /api/v1/jobs/{id}).",
                retry_after=30,
                limit="max_training_jobs",
                estimate=len(running) + 1,
                maximum=settings.max_training_jobs,
            )
        return jobs.submit(
            KIND, lambda ctx: run_training(ctx, plan, registry), client=client, estimate=plan.estimate
        )


def run_training(ctx: JobContext, plan: TrainingPlan, registry: ModelRegistry) -> dict[str, Any]:
    """The job: data, training (progress and history in the partial), then the best weights saved."""
    arch = plan.architecture
    ctx.report(0.0, {"phase": "data", "history": []})
    data = load_dataset(
        plan.dataset.name, arch.input_size, arch.in_channels, plan.config.seed, plan.train_size, plan.val_size
    )
    if plan.base_model is None:
        # A new model learns its input statistics from the training split.
        arch = replace(arch, mean=tuple(data.mean), std=tuple(data.std))
    else:
        # A model trained before keeps the normalisation its weights were trained with.
        data = replace(data, mean=list(arch.mean), std=list(arch.std))
    ctx.report(DATA_SHARE, {"phase": "training", "history": [], "dataset_note": data.note})

    base = plan.base_model

    def build() -> nn.Module:
        if base is not None:
            return registry.custom.build(base, with_weights=True)
        return _seeded_reset(build_module(arch))

    def progress(p: TrainProgress) -> None:
        ctx.report(
            DATA_SHARE + (1 - 2 * DATA_SHARE) * p.fraction,
            {"phase": "training", **p.to_dict(), "dataset_note": data.note},
        )

    try:
        result = train(build, data, plan.config, progress, ctx.check_cancelled)
    except TrainingDiverged as exc:
        raise InvalidInput(str(exc), field="lr") from exc
    ctx.check_cancelled()
    history = [r.to_dict() for r in result.history]
    ctx.report(1 - DATA_SHARE, {"phase": "saving", "history": history, "dataset_note": data.note})
    saved = replace(arch, name=plan.name)
    state = {k: v.contiguous() for k, v in result.best_state.items()}
    record = registry.custom.put(json.dumps(saved.to_json()).encode(), save_safetensors(state))
    return {
        "model": record.id,
        "display_name": f"{plan.name} (uploaded)",
        "val_accuracy": round(result.best_val_accuracy, 6),
        "best_epoch": result.best_epoch,
        "history": history,
        "dataset": plan.dataset.name,
        "dataset_note": data.note,
        "categories": list(saved.categories),
        "train_size": plan.train_size,
        "val_size": plan.val_size,
        "epochs": plan.config.epochs,
        "seed": plan.config.seed,
        "batch_size": plan.config.batch_size,
        "optimizer": plan.config.optimizer,
        "lr": plan.config.lr,
        "threads": result.threads,
        "seconds": round(result.seconds, 3),
        "samples_per_second": round(result.samples_per_second, 1),
        "started_from": base,
    }


def datasets() -> list[dict[str, Any]]:
    """The built-in datasets as the API lists them."""
    return [
        {
            "name": s.name,
            "description": s.description,
            "categories": list(s.categories),
            "channels": s.channels,
            "side": s.side,
            "train_size": s.train_size,
            "val_size": s.val_size,
        }
        for s in DATASETS.values()
    ]
