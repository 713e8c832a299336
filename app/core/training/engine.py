"""The training engine: one seeded, bounded PyTorch loop for every model trained in ConvScope.

``train(model, data, TrainConfig(epochs=5, seed=1))`` trains ``model`` on ``data`` (a :class:`TrainingData`:
raw [0, 1] images ``(N, C, H, W)`` with labels and the per-channel mean/std to normalise them with) and returns a
:class:`TrainResult`: the per-epoch history, the best state dict by validation accuracy, and timings.

- Seeded: the model (when given as a factory), the batch order (a numpy Generator) and dropout (torch's global
  generator, forked so that the caller's stream is untouched) all derive from ``config.seed``. With a fixed
  ``config.threads`` (the intra-op thread count; deterministic algorithms on) the same seed gives the same
  history and the same weights, bit for bit. Another thread drawing from torch's global generator at the same
  time (building a random-weights model) would break that: the service runs one training job at a time.
- Bounded memory: images stay a numpy array; each batch is normalised and turned into a tensor on its own, and
  validation runs under ``inference_mode``, so the autograd graph never holds more than one batch.
- Observable and stoppable: ``progress`` is called every ``report_every`` batches and after every epoch with a
  :class:`TrainProgress`; ``checkpoint`` is called before every batch and before each validation, and whatever
  it raises (a job's cancellation or time limit) stops training there, within one batch.

Pure PyTorch/numpy: no web imports (app/core).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "EpochRecord",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingData",
    "TrainingDiverged",
    "deterministic_torch",
    "evaluate",
    "evaluate_accuracy",
    "normalise",
    "train",
]

Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@contextmanager
def deterministic_torch(seed: int, threads: int | None = 1) -> Iterator[None]:
    """Seed torch's global generator inside a fork (the caller's stream is restored afterwards).

    With ``threads`` set, also fix the intra-op thread count and demand deterministic kernels, restoring both
    afterwards: the same seed then gives the same numbers bit for bit. ``threads=None`` leaves both alone
    (a server whose other requests share the process-wide setting).
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        try:
            if threads is not None:
                torch.set_num_threads(threads)
                torch.use_deterministic_algorithms(True)
            torch.manual_seed(seed)
            yield
        finally:
            if threads is not None:
                torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
                torch.set_num_threads(old_threads)


def normalise(x: np.ndarray | torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Per-channel standardisation with the model's training statistics: ``(N, C, H, W) -> (N, C, H, W)``."""
    t = torch.as_tensor(x, dtype=torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (t - m) / s


def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mean: list[float],
    std: list[float],
    batch_size: int = 64,
) -> tuple[float, float]:
    """(mean cross-entropy loss, top-1 accuracy) of ``model`` on raw [0, 1] images ``x (N, C, H, W)``, labels
    ``y (N,)``. Runs in eval mode under ``inference_mode``, batch by batch, and restores the training flag."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    correct = 0
    total_loss = 0.0
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                logits = model(normalise(x[start : start + batch_size], mean, std))
                labels = torch.as_tensor(y[start : start + batch_size])
                total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    return total_loss / len(x), correct / len(x)


def evaluate_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mean: list[float],
    std: list[float],
    batch_size: int = 64,
) -> float:
    """Top-1 accuracy of ``model`` on raw [0, 1] images ``x (N, C, H, W)`` with labels ``y (N,)``."""
    return evaluate(model, x, y, mean, std, batch_size)[1]


class TrainingDiverged(ValueError):
    """The loss stopped being a finite number: nothing more can be learned from this run."""

    def __init__(self, epoch: int, batch: int, loss: float, lr: float) -> None:
        super().__init__(
            f"Training diverged: the loss became {loss} at epoch {epoch}, batch {batch}. The learning rate "
            f"({lr:g}) is probably too high for this model; try one ten times smaller."
        )
        self.epoch = epoch
        self.batch = batch


@dataclass(frozen=True)
class TrainingData:
    """Raw [0, 1] images and labels, split; ``mean``/``std`` (one per channel) normalise every batch.

    ``x_train (N, C, H, W)`` float32, ``y_train (N,)`` int64 in ``[0, len(categories))``; the same for val.
    ``note`` says in words where the images came from and how they were converted.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    categories: list[str]
    mean: list[float]
    std: list[float]
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("x_train", "x_val"):
            arr = getattr(self, name)
            if arr.ndim != 4 or arr.dtype != np.float32:
                raise ValueError(f"{name} must be float32 (N, C, H, W), not {arr.dtype} {arr.shape}")
        if len(self.x_train) != len(self.y_train) or len(self.x_val) != len(self.y_val):
            raise ValueError("images and labels differ in number")
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise ValueError("both the training and the validation set need at least one image")
        channels = self.x_train.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need one value per channel ({channels})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def channel_statistics(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``x (N, C, H, W)`` (float64 sums, rounded to 6 digits; std at least 1e-6)."""
    axes = (0, 2, 3)
    mean = [round(float(v), 6) for v in x.mean(axis=axes, dtype=np.float64)]
    std = [round(max(float(v), 1e-6), 6) for v in x.std(axis=axes, dtype=np.float64)]
    return mean, std


@dataclass(frozen=True)
class TrainConfig:
    """How to train: ``epochs`` passes over the training set in shuffled batches of ``batch_size``.

    ``optimizer``: "sgd" (with ``momentum``) or "adam"; ``lr`` its learning rate. ``threads``: intra-op threads
    fixed while training (None: leave the process-wide setting alone). ``report_every``: batches between
    progress reports (a report also follows every epoch).
    """

    epochs: int
    seed: int = 0
    batch_size: int = 32
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    threads: int | None = 1
    report_every: int = 10
    eval_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError("lr must be a positive number")
        if self.report_every < 1:
            raise ValueError("report_every must be at least 1")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss and accuracy over its batches (as trained), then validation."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "epoch": self.epoch,
            "train_loss": round(self.train_loss, 6),
            "train_accuracy": round(self.train_accuracy, 6),
            "val_loss": round(self.val_loss, 6),
            "val_accuracy": round(self.val_accuracy, 6),
        }


@dataclass(frozen=True)
class TrainProgress:
    """What a progress report carries: where training is, the running figures, and the history so far."""

    epoch: int  # 1-based, the epoch being trained (or just finished when ``epoch_done``)
    batch: int  # batches done in this epoch
    batches_per_epoch: int
    epochs: int
    fraction: float  # of all batches, in [0, 1]
    train_loss: float  # running mean over this epoch's batches so far
    train_accuracy: float
    epoch_done: bool
    history: list[EpochRecord]

    def to_dict(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "batch": self.batch,
            "batches_per_epoch": self.batches_per_epoch,
            "fraction": round(self.fraction, 4),
            "train_loss": round(self.train_loss, 6),
            "train_accuracy": round(self.train_accuracy, 6),
            "epoch_done": self.epoch_done,
            "history": [r.to_dict() for r in self.history],
        }


@dataclass
class TrainResult:
    """The outcome: history, the best weights by validation accuracy (the first epoch reaching it), timings."""

    history: list[EpochRecord]
    best_epoch: int
    best_val_accuracy: float
    best_state: dict[str, torch.Tensor]
    samples: int  # training images seen (forward + backward)
    seconds: float  # wall time of the loop, validation included
    train_seconds: float  # wall time of forward/backward/step only
    threads: int
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


def make_optimizer(
    params: Iterator[nn.Parameter] | list[nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over ``params`` with the config's learning rate and weight decay."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def train(
    model: nn.Module | Callable[[], nn.Module],
    data: TrainingData,
    config: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``model`` (a module, or a factory called under the seed so that its initial weights are seeded)
    on ``data``; return the history and the best state dict by validation accuracy.

    The module is trained in place and left in eval mode holding its *last* weights; load ``best_state`` for
    the best ones. ``checkpoint()`` runs before every batch and every validation: raise from it to stop.
    """
    started = time.perf_counter()
    n = len(data.x_train)
    batches = math.ceil(n / config.batch_size)
    total_batches = batches * config.epochs
    history: list[EpochRecord] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_acc = 0, -1.0
    train_seconds = 0.0
    samples = 0
    order_rng = np.random.default_rng(config.seed)
    with deterministic_torch(config.seed, config.threads):
        threads = torch.get_num_threads()
        module = model if isinstance(model, nn.Module) else model()
        optimiser = make_optimizer(list(module.parameters()), config)
        loss_fn = nn.CrossEntropyLoss()
        mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            module.train()
            order = order_rng.permutation(n)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(batches):
                if checkpoint is not None:
                    checkpoint()
                tick = time.perf_counter()
                idx = np.sort(order[b * config.batch_size : (b + 1) * config.batch_size])
                # One batch at a time: only it is normalised (in place, on its own copy), only its graph alive.
                xb = torch.from_numpy(data.x_train[idx]).sub_(mean).div_(std)
                yb = torch.as_tensor(data.y_train[idx])
                optimiser.zero_grad(set_to_none=True)
                logits = module(xb)
                loss = loss_fn(logits, yb)
                if not bool(torch.isfinite(loss.detach())):
                    raise TrainingDiverged(epoch, b + 1, float(loss.detach()), config.lr)
                loss.backward()
                optimiser.step()
                train_seconds += time.perf_counter() - tick
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += len(idx)
                samples += len(idx)
                done = b + 1
                if progress is not None and done % config.report_every == 0 and done < batches:
                    progress(
                        TrainProgress(
                            epoch=epoch,
                            batch=done,
                            batches_per_epoch=batches,
                            epochs=config.epochs,
                            fraction=((epoch - 1) * batches + done) / total_batches,
                            train_loss=loss_sum / seen,
                            train_accuracy=correct / seen,
                            epoch_done=False,
                            history=list(history),
                        )
                    )
            if checkpoint is not None:
                checkpoint()
            val_loss, val_acc = evaluate(
                module, data.x_val, data.y_val, data.mean, data.std, config.eval_batch_size
            )
            record = EpochRecord(
                epoch=epoch,
                train_loss=loss_sum / seen,
                train_accuracy=correct / seen,
                val_loss=val_loss,
                val_accuracy=val_acc,
                seconds=time.perf_counter() - epoch_started,
            )
            history.append(record)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch
                best_state = _state_copy(module)
            if progress is not None:
                progress(
                    TrainProgress(
                        epoch=epoch,
                        batch=batches,
                        batches_per_epoch=batches,
                        epochs=config.epochs,
                        fraction=epoch * batches / total_batches,
                        train_loss=record.train_loss,
                        train_accuracy=record.train_accuracy,
                        epoch_done=True,
                        history=list(history),
                    )
                )
        module.eval()
    assert best_state is not None  # epochs >= 1
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best_acc,
        best_state=best_state,
        samples=samples,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        threads=threads,
    )
