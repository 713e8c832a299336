"""One toolkit for hooks and model state, used by every view that looks inside a running model.

Layer trees (``app.core.models.layers``), feature maps (``app.core.inspection.features``), receptive fields
(``app.core.inspection.receptive_field``), the one-pass analysis, the CAM family and occlusion
(``app.core.explanation``) all take what they need from here, so that there is one way to do each thing:

- ``get_layer(model, name)``: the submodule at a dotted path, or ``LayerNotFound`` (a ``KeyError``) listing
  every valid name; ``layer_names(model)``.
- ``model_lock(model)``: THE per-model re-entrant lock. Hold it around anything that registers hooks, changes
  ``training`` or ``requires_grad`` flags on a model that other threads may use. Every hooked pass in core
  (``layer_tree``, ``capture``, ``receptive_fields``, ``effective_rf``, ``analyse``, the CAMs, ``trace_layers``,
  occlusion on a model left in training mode) takes it itself, and the services' loaded models hand out this very
  lock as ``LoadedModel.lock``, so there is one lock per model, not two.
- ``eval_mode(model)``: eval mode for the duration, every submodule's own ``training`` flag restored.
- ``frozen_parameters(model)``: ``requires_grad`` off on every parameter (no weight gradient is ever built),
  each flag restored.
- ``forward_hooks(modules, make_hook)``: THE forward-hook context manager; always removes what it registered
  (``hooked(name, module, hook)`` for a single ready-made hook).
- ``first_tensor(value)``: the first tensor in a module's output (tuples, lists, dicts).
- ``LayerCapture``: a forward hook that keeps one module's output at a chosen *call*.

Calls
-----
A module can run more than once in one forward pass: a ResNet block's ``relu`` runs two or three times,
EfficientNet-Lite0's ``_swish`` runs at the stem, in every block and at the head. A *call index* picks one of
those runs. It is **0-based** (``0`` = the first call), negative values count from the end as in Python
(``-1`` = the last call), and ``None`` means the last call, which is the default everywhere (it is what a
module's output "is" for most readers: a reused ReLU's last call gives the block's output).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

Hook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


class LayerNotFound(KeyError):
    """Unknown dotted layer name; ``choices`` lists every valid one."""

    def __init__(self, name: str, choices: list[str]) -> None:
        shown = ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
        super().__init__(f"no layer named {name!r}; choose one of: {shown}")
        self.name = name
        self.choices = choices

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0])


class CallNotFound(ValueError):
    """A call index the module did not have in this forward pass (``calls`` is how many it had)."""

    def __init__(self, layer: str, call: int, calls: int) -> None:
        if calls == 0:
            message = f"layer {layer!r} was not called during the forward pass"
        else:
            times = "once" if calls == 1 else f"{calls} times"
            message = (
                f"layer {layer!r} runs {times} in one forward pass; call {call} does not exist "
                f"(calls are numbered from 0 to {calls - 1}, -1 is the last)"
            )
        super().__init__(message)
        self.layer = layer
        self.call = call
        self.calls = calls


def resolve_call(call: int | None, calls: int, layer: str = "") -> int:
    """The 0-based index of ``call`` among ``calls`` calls: ``None`` is the last, negatives count from the end.

    Raises ``CallNotFound`` when there is no such call (including a module that never ran).
    """
    index = calls - 1 if call is None else (call + calls if call < 0 else call)
    if not 0 <= index < calls:
        raise CallNotFound(layer, -1 if call is None else call, calls)
    return index


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in ``value`` (a tensor, or tuples, lists and dicts of them), depth first."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path ``name`` (``""`` is the model itself).

    Raises ``LayerNotFound`` (a ``KeyError``) whose ``choices`` lists every valid name.
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LayerNotFound(name, layer_names(model)) from None


def layer_names(model: nn.Module) -> list[str]:
    """Every dotted submodule name, in definition order (root excluded)."""
    return [n for n, _ in model.named_modules() if n]


_locks_guard = threading.Lock()
_model_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one re-entrant lock of ``model`` in this process (created on first use, dropped with the model).

    Hold it while hooks are registered or ``training`` / ``requires_grad`` flags are changed, so two threads
    on the same model never capture each other's activations or restore each other's flags wrongly.
    """
    with _locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = threading.RLock()
            _model_locks[model] = lock
        return lock


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; every submodule gets its own previous ``training`` flag back."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch ``requires_grad`` off on every parameter (so no weight gradient is ever built), then restore."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def forward_hooks(
    modules: Iterable[tuple[str, nn.Module]],
    make_hook: Callable[[str], Callable[..., Any]],
    *,
    pre: bool = False,
) -> Iterator[None]:
    """Register ``make_hook(name)`` as a forward hook on each ``(name, module)``; always remove them on exit.

    With ``pre=True`` they are forward *pre*-hooks (``hook(module, inputs)``, called before the module runs).
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in modules:
            hook = make_hook(name)
            handles.append(
                module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def hooked(name: str, module: nn.Module, hook: Callable[..., Any]) -> contextlib.AbstractContextManager[None]:
    """``forward_hooks`` for one module and one ready-made hook (e.g. a ``LayerCapture``)."""
    return forward_hooks([(name, module)], lambda _name: hook)


class StopForward(Exception):
    """Raised by a ``LayerCapture(stop=True)`` hook to end the forward pass once the wanted call has run."""


CaptureMode = Literal["keep", "copy", "leaf"]


class LayerCapture:
    """Forward hook that keeps one module's output at call ``call`` (0-based; negative from the end; None: last).

    ``mode``: ``keep`` holds the output tensor itself, autograd graph included, and lets the network continue on
    a clone of it (so a later ``ReLU(inplace=True)`` does not change what was kept); ``copy`` a detached copy
    taken when the call finishes (equally safe against later in-place operations); ``leaf`` turns it into a detached leaf that
    requires grad and lets the network continue on a clone of it, so ``torch.autograd.grad(score, capture.output)``
    walks only the tail of the network after that call (in-place operations downstream act on the clone).
    ``replace``: a tensor substituted for the module's output at the chosen call (the other calls run unchanged);
    it needs a concrete call (``call >= 0``). ``stop``: raise ``StopForward`` once the chosen call has been
    recorded (needs ``call >= 0``; for the last call the whole forward must run).

    With ``call >= 0`` only that call is touched. With ``None`` or a negative call every call is recorded (and in
    ``leaf`` mode every call becomes a leaf, so only the last call's gradient path is intact: ``leaf`` accepts
    ``None``, ``-1`` or a call of 0 or more) and the choice is made afterwards by :attr:`output`.
    """

    def __init__(
        self,
        call: int | None = None,
        *,
        mode: CaptureMode = "keep",
        replace: Tensor | None = None,
        stop: bool = False,
        layer: str = "",
    ) -> None:
        concrete = call is not None and call >= 0
        if (replace is not None or stop) and not concrete:
            raise ValueError("replace and stop need a concrete call index (0 or more)")
        if mode == "leaf" and call is not None and call < -1:
            # Every call would become a leaf, and a later leaf cuts the gradient path of an earlier one.
            raise ValueError("leaf mode needs a call index of 0 or more, -1 or None (resolve it first)")
        self.call = call
        self.mode = mode
        self.replace = replace
        self.stop = stop
        self.layer = layer
        self.calls = 0
        self._outputs: dict[int, Tensor] = {}

    def _wanted(self, index: int) -> bool:
        return self.call is None or self.call < 0 or index == self.call

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        index = self.calls
        self.calls += 1
        if not self._wanted(index):
            return None
        if self.replace is not None:
            return self.replace
        out = first_tensor(output)
        if out is None:
            return None
        result = None
        if self.mode == "leaf":
            if not isinstance(output, Tensor):
                raise TypeError(f"layer output is {type(output).__name__}, a tensor is needed")
            leaf = output.detach().requires_grad_(True)
            self._outputs[index] = leaf
            result = leaf.clone()
        elif self.mode == "copy":
            self._outputs[index] = out.detach().clone()
        else:
            self._outputs[index] = out
            if isinstance(output, Tensor):
                # The network goes on with a clone, so later in-place operations leave the kept output alone.
                result = output.clone()
        if self.call is None or self.call < 0:
            # Only the newest call can still be the last one; keep at most the ones a negative index may need.
            keep = 1 if self.call is None else -self.call
            for old in [i for i in self._outputs if i <= index - keep]:
                del self._outputs[old]
        if self.stop:
            raise StopForward
        return result

    @property
    def index(self) -> int:
        """The 0-based index of the chosen call; ``CallNotFound`` if the module did not have it."""
        return resolve_call(self.call, self.calls, self.layer)

    @property
    def output(self) -> Tensor:
        """The chosen call's output (per its ``mode``); ``CallNotFound`` if there was no such call."""
        index = self.index
        if index not in self._outputs:
            raise CallNotFound(self.layer, index, self.calls)
        return self._outputs[index]


def count_calls(model: nn.Module, layer: str, x: Tensor) -> int:
    """How many times ``layer`` runs in ``model(x)`` (one forward without gradients; hold the lock yourself)."""
    capture = LayerCapture(None, layer=layer)
    with torch.no_grad(), hooked(layer, get_layer(model, layer), capture):
        model(x)
    return capture.calls


@contextlib.contextmanager
def capture_layer(
    model: nn.Module,
    layer: str,
    call: int | None = None,
    *,
    mode: CaptureMode = "keep",
    replace: Tensor | None = None,
    stop: bool = False,
) -> Iterator[LayerCapture]:
    """``LayerCapture`` on ``model``'s submodule ``layer`` for the duration (``LayerNotFound`` for a bad name).

    Does not take the lock, change modes or flags: the caller decides (``model_lock``, ``eval_mode``...).
    """
    module = get_layer(model, layer)
    capture = LayerCapture(call, mode=mode, replace=replace, stop=stop, layer=layer)
    with hooked(layer, module, capture):
        yield capture
