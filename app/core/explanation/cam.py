"""Class activation maps: the Grad-CAM family, Score-CAM, Ablation-CAM, Eigen-CAM and a random baseline.

Every method here answers "which part of the target layer's feature map made the network say class c?"
with a map at feature-map resolution (for ResNet at 224x224: 7x7). The maps are RAW: unnormalised, with
the ReLU of the papers applied, so that a user can compare magnitudes across images; :func:`normalise`
and :func:`upsample` turn them into the usual [0, 1] picture the size of the input.

Why our own gradient pass instead of pytorch-grad-cam's: the library calls ``loss.backward()``, which
back-propagates through the whole network and into every weight (about 2.7x a forward on ResNet-50).
The weights are not needed. Here the target layer's output is captured by a forward hook and replaced by
a detached leaf, all parameters have ``requires_grad`` switched off for the call (and restored), so the
forward pass records a graph only from the target layer to the logits, and ``torch.autograd.grad(score,
activation)`` walks only that short tail (about 1.0x a forward). The weighting formulas are the
library's (tested to agree within float tolerance); Eigen-CAM's projection is a few lines of
``torch.linalg.svd`` (so the app does not install pytorch-grad-cam, OpenCV and scikit-learn for it).

Why the last convolutional block is the usual target layer: it is the deepest layer that still has a
spatial layout, so its channels are the most class-specific features the network has and each position
still points at a place in the image; earlier layers are sharper but respond to edges and textures of
any class, and after global pooling there is no "where" left.

All functions take a model and an input tensor ``(N, C, H, W)`` (greyscale is ``C = 1``) and hold the
model's one lock (``app.core.models.hooks.model_lock``) while hooks are registered or ``requires_grad`` is
changed, so two threads calling on the same model cannot capture each other's activations or restore each
other's flags wrongly. Hooks are removed, flags and ``model.training`` restored, in ``finally`` blocks (the
hooks toolkit's ``forward_hooks``, ``eval_mode`` and ``frozen_parameters``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.core.models.hooks import (
    Hook,
    LayerCapture,
    count_calls,
    eval_mode,
    forward_hooks,
    frozen_parameters,
    get_layer,
    hooked,
    model_lock,
    resolve_call,
)

ProgressFn = Callable[[float], None]
CheckFn = Callable[[], None]


@dataclass(frozen=True)
class MethodInfo:
    """What a CAM method is, for pickers and legends."""

    key: str
    name: str
    kind: str  # "gradient" | "activation" | "perturbation" | "baseline"
    summary: str
    paper: str
    slow: bool = False


METHODS: dict[str, MethodInfo] = {
    m.key: m
    for m in (
        MethodInfo(
            "gradcam",
            "Grad-CAM",
            "gradient",
            "Channel weight = the average gradient of the class score over the feature map.",
            "Selvaraju et al. 2017, arXiv:1610.02391",
        ),
        MethodInfo(
            "gradcam++",
            "Grad-CAM++",
            "gradient",
            "Weights only the positive gradients, scaled by second/third-order terms; "
            "better for several instances of the class.",
            "Chattopadhyay et al. 2018, arXiv:1710.11063",
        ),
        MethodInfo(
            "xgradcam",
            "XGrad-CAM",
            "gradient",
            "Gradients weighted by the normalised activation, chosen to satisfy sensitivity and "
            "conservation axioms.",
            "Fu et al. 2020, arXiv:2008.02312",
        ),
        MethodInfo(
            "layercam",
            "LayerCAM",
            "gradient",
            "Every position weighted by its own positive gradient (no channel averaging): "
            "works in earlier layers too.",
            "Jiang et al. 2021, IEEE TIP 30:5875",
        ),
        MethodInfo(
            "hirescam",
            "HiResCAM",
            "gradient",
            "Gradient times activation element-wise, summed over channels: provably shows where "
            "the score comes from.",
            "Draelos & Carin 2020, arXiv:2011.08891",
        ),
        MethodInfo(
            "scorecam",
            "Score-CAM",
            "perturbation",
            "No gradients: each channel, upsampled to a mask, keeps part of the image; "
            "weight = softmax of the class score it gets.",
            "Wang et al. 2020, arXiv:1910.01279",
            slow=True,
        ),
        MethodInfo(
            "ablationcam",
            "Ablation-CAM",
            "perturbation",
            "No gradients: weight = relative drop of the class score when that channel is zeroed.",
            "Desai & Ramaswamy 2020, WACV",
            slow=True,
        ),
        MethodInfo(
            "eigencam",
            "Eigen-CAM",
            "activation",
            "First principal component of the feature map: class-agnostic, no target needed.",
            "Muhammad & Yeasin 2020, arXiv:2008.00299",
        ),
        MethodInfo(
            "random",
            "Random baseline",
            "baseline",
            "Uniform noise at feature-map resolution: any method worth using must beat it.",
            "Adebayo et al. 2018 (sanity checks), arXiv:1810.03292",
        ),
    )
}
GRADIENT_METHODS = tuple(k for k, m in METHODS.items() if m.kind == "gradient")

WHY_LAST_CONV = (
    "The last convolutional block is the usual choice: it is the deepest layer that still knows where "
    "things are, and its features are the most specific to the class."
)

# Pooling and shape-only layers are not useful CAM targets: their output is a coarser copy of their input.
_PASS_THROUGH = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
)


@dataclass
class CamResult:
    """Maps of one call: ``maps[method]`` is ``(N, h, w)`` float32, raw (unnormalised, ReLU applied)."""

    maps: dict[str, np.ndarray]
    targets: list[int]
    layer: str
    activation_shape: tuple[int, ...]
    logits: np.ndarray  # (N, K)
    input_size: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)
    call: int = 0  # the 0-based call of ``layer`` the maps are of
    calls: int = 1  # how many times ``layer`` ran in one forward pass

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits, ``(N, K)``."""
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class LayerInfo:
    """One module with a 4-D output, in execution order."""

    name: str
    type: str
    shape: tuple[int, int, int]  # (C, h, w) of its LAST 4-D output for the traced input
    calls: int = 1  # how many times the module ran in one forward pass
    call_shapes: tuple[tuple[int, int, int] | None, ...] = ()  # (C, h, w) of each call, None if not 4-D

    @property
    def label(self) -> str:
        """``name`` plus "(called N times)" for a module that runs more than once, for layer pickers."""
        return self.name if self.calls <= 1 else f"{self.name} (called {self.calls} times)"


# ---------------------------------------------------------------------------------------------------------
# Locking and layers (the hooks toolkit: app.core.models.hooks)
# ---------------------------------------------------------------------------------------------------------


@contextmanager
def guarded(model: nn.Module, lock: AbstractContextManager[object] | None = None) -> Iterator[None]:
    """Hold the caller's lock (if any), then the model's own lock (``hooks.model_lock``).

    The services' ``LoadedModel.lock`` IS ``model_lock(module)`` (re-entrant), so passing it costs nothing.
    """
    with lock if lock is not None else nullcontext(), model_lock(model):
        yield


def trace_layers(model: nn.Module, x: Tensor) -> list[LayerInfo]:
    """Every named module whose output is a 4-D tensor, in the order their last calls finish.

    ``x``: ``(1, C, H, W)``. A module called several times (a ResNet block's shared ReLU, EfficientNet-Lite0's
    ``_swish``) is listed once, with its last call's shape in ``shape``, ``calls`` = how many times it ran and
    the shape of every call in ``call_shapes`` (``None`` for a call whose output is not 4-D). The root module is
    never listed.
    """
    shapes: dict[str, list[tuple[int, ...] | None]] = {}
    types: dict[str, str] = {}
    order: list[str] = []

    def make_hook(name: str) -> Hook:
        def hook(module: nn.Module, _inputs: tuple[object, ...], output: object) -> None:
            out = output if isinstance(output, Tensor) else None
            shapes.setdefault(name, []).append(
                tuple(out.shape[1:]) if out is not None and out.dim() == 4 else None
            )
            types[name] = type(module).__name__
            if out is not None and out.dim() == 4:
                if name in order:
                    order.remove(name)
                order.append(name)

        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    with model_lock(model), eval_mode(model), torch.inference_mode(), forward_hooks(named, make_hook):
        model(x)
    result = []
    for name in order:
        calls = shapes[name]
        last = next(s for s in reversed(calls) if s is not None)
        result.append(LayerInfo(name, types[name], last, len(calls), tuple(calls)))  # type: ignore[arg-type]
    return result


def _last_relu_in(seq: nn.Module, prefix: str) -> str | None:
    names = [n for n, m in seq.named_children() if isinstance(m, nn.ReLU)]
    return f"{prefix}.{names[-1]}" if names else None


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The usual CAM target: the last convolutional block before global pooling.

    Known torchvision families use the conventional block (ResNet ``layer4``, DenseNet ``features``,
    MobileNet/EfficientNet ``features[-1]``, GoogLeNet ``inception5b``, Inception-v3 ``Mixed_7c``,
    SqueezeNet ``features``, VGG/AlexNet the last ReLU in ``features``, before the final max-pool halves
    the map). Anything else (built-in and uploaded models) is found generically from a trace: the last
    leaf with a spatial 4-D output that is not pooling, climbed to the outermost enclosing block whose
    output has the same shape (so a whole block is chosen, not its last ReLU).
    """
    cls = type(model).__name__
    children = dict(model.named_children())
    features = children.get("features")
    if cls == "ResNet" and "layer4" in children:
        return "layer4"
    if cls in ("VGG", "AlexNet") and features is not None:
        relu = _last_relu_in(features, "features")
        if relu:
            return relu
    if cls in ("DenseNet", "SqueezeNet") and features is not None:
        return "features"
    if cls in ("MobileNetV2", "MobileNetV3", "EfficientNet") and isinstance(features, nn.Sequential):
        return f"features.{len(features) - 1}"
    if cls == "GoogLeNet" and "inception5b" in children:
        return "inception5b"
    if cls == "Inception3" and "Mixed_7c" in children:
        return "Mixed_7c"
    return _generic_default_layer(model, x)


def _generic_default_layer(model: nn.Module, x: Tensor) -> str:
    layers = trace_layers(model, x)
    modules = dict(model.named_modules())
    leaves = [
        info
        for info in layers
        if not list(modules[info.name].children())
        and not isinstance(modules[info.name], _PASS_THROUGH)
        and info.shape[1] * info.shape[2] > 1
    ]
    if not leaves:
        raise ValueError("the model has no layer with a spatial (N, C, h, w) output")
    best = leaves[-1]
    by_name = {info.name: info for info in layers}
    finish = {info.name: i for i, info in enumerate(layers)}
    parts = best.name.split(".")
    chosen = best.name
    # Climb while the enclosing block ends with this very output (same shape, nothing spatial after it).
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        info = by_name.get(parent)
        if info is None or info.shape != best.shape:
            break
        later = [n for n, i in finish.items() if finish[best.name] < i < finish[parent]]
        if any(isinstance(modules[n], _PASS_THROUGH) for n in later):
            break
        chosen = parent
    return chosen


# ---------------------------------------------------------------------------------------------------------
# Map helpers
# ---------------------------------------------------------------------------------------------------------


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (half-pixel centres, like OpenCV's INTER_LINEAR): ``(N, h, w) -> (N, H, W)``.

    Also accepts a single ``(h, w)`` map and returns ``(H, W)``.
    """
    single = maps.ndim == 2
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    t = t[None, None] if single else t[:, None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    res = out[0, 0] if single else out[:, 0]
    return res.numpy()


def normalise(maps: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Min-max to [0, 1] per map, as pytorch-grad-cam does: ``(N, h, w) -> (N, h, w)`` or ``(h, w)``."""
    single = maps.ndim == 2
    m = maps[None] if single else maps
    lo = m.reshape(len(m), -1).min(axis=1)[:, None, None]
    shifted = m - lo
    hi = shifted.reshape(len(m), -1).max(axis=1)[:, None, None]
    out = (shifted / (hi + eps)).astype(np.float32)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------------------
# Weighting formulas (tensors (N, K, h, w) -> maps (N, h, w), ReLU applied)
# ---------------------------------------------------------------------------------------------------------


def _weighted(weights: Tensor, acts: Tensor) -> Tensor:
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1))


def _gradient_maps(method: str, acts: Tensor, grads: Tensor) -> Tensor:
    if method == "gradcam":
        return _weighted(grads.mean(dim=(2, 3)), acts)
    if method == "gradcam++":
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        return _weighted((torch.relu(grads) * aij).sum(dim=(2, 3)), acts)
    if method == "xgradcam":
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        return _weighted((grads * acts / (sum_a + 1e-7)).sum(dim=(2, 3)), acts)
    if method == "layercam":
        return torch.relu((torch.relu(grads) * acts).sum(dim=1))
    if method == "hirescam":
        return torch.relu((grads * acts).sum(dim=1))
    raise KeyError(method)


def _eigen_maps(acts: Tensor) -> np.ndarray:
    """Eigen-CAM: each sample's (hw, K) activation matrix, centred per channel, projected on its first
    right-singular vector (the first principal component), ReLU'd. Shape (N, h, w), float32.

    A singular vector's sign is arbitrary (A = U S Vt = (-U) S (-Vt)), so LAPACK builds and libraries
    disagree on it (pytorch-grad-cam's numpy projection and this one differ on about 1 random case in 40,
    and with the ReLU a flipped sign shows the complement of the object). The sign is fixed the way
    Seg-Eigen-CAM does (Chung & Ying 2025, Eq. 13): the projection is flipped when its most negative value
    is larger in magnitude than its most positive one, so the salient region is the positive side.
    """
    n, k, h, w = acts.shape
    # NaNs to 0 as pytorch-grad-cam does. full_matrices=False: only K columns of U, never an (hw, hw) one.
    matrix = torch.nan_to_num(acts.detach().float(), nan=0.0).reshape(n, k, h * w).transpose(1, 2)
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    projection = (matrix @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)  # (N, hw)
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip.unsqueeze(1), -projection, projection)
    return torch.relu(projection).reshape(n, h, w).numpy()


def _random_maps(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((shape[0], shape[2], shape[3]), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------


def resolve_targets(logits: Tensor, target: int | Sequence[int] | None) -> list[int]:
    """Per-sample class indices: top-1 when ``target`` is None. Raises ValueError when out of range."""
    n, k = logits.shape
    if target is None:
        return [int(i) for i in logits.argmax(dim=1)]
    targets = [int(target)] * n if isinstance(target, int) else [int(t) for t in target]
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} inputs")
    for t in targets:
        if not 0 <= t < k:
            raise ValueError(f"target {t} is not a class index in [0, {k - 1}]")
    return targets


def compute_cams(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str],
    layer: str,
    target: int | Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    seed: int = 0,
    progress: ProgressFn | None = None,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
    call: int | None = None,
) -> CamResult:
    """Raw CAMs of ``methods`` for ``x`` ``(N, C, H, W)`` at ``layer``: each map ``(N, h, w)``.

    ``call`` picks the run of a module that runs several times in one forward (EfficientNet-Lite0's ``_swish``
    runs at the stem, in every block and at the head): 0-based, negative from the end, ``None`` (the default)
    is the last call. Gradients and the ablations act on that call only.

    All gradient methods share one hooked forward and one ``autograd.grad``; Eigen-CAM and the random
    baseline reuse that forward's activation; Score-CAM and Ablation-CAM run ``K`` extra forwards each
    (in batches of ``batch_size``), calling ``progress(fraction)`` and ``check()`` (which may raise to
    cancel) between batches. ``target`` is a class index (or one per sample); top-1 when None.
    ``lock`` (the caller's per-model lock) is held during the hooked pass and around each later batch,
    never across a whole slow method, so other requests on the model can interleave.
    Raises KeyError for an unknown method or layer (``LayerNotFound``), ValueError for a bad target, a bad
    layer output or a call the layer did not have (``CallNotFound``).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise KeyError(unknown[0])
    module = get_layer(model, layer)
    need_grad = any(m in GRADIENT_METHODS for m in methods)
    result_maps: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    with guarded(model, lock), eval_mode(model), frozen_parameters(model):
        t0 = time.perf_counter()
        if need_grad and call is not None and call < -1:
            call = resolve_call(call, count_calls(model, layer, x), layer)
        capture = LayerCapture(call, mode="leaf" if need_grad else "copy", layer=layer)
        with hooked(layer, module, capture), torch.set_grad_enabled(need_grad):
            logits = model(x)
        acts = capture.output
        call_index, calls = capture.index, capture.calls
        if acts.dim() != 4:
            raise ValueError(f"layer {layer!r} gives a {acts.dim()}-D output; a CAM needs (N, C, h, w)")
        targets = resolve_targets(logits.detach(), target)
        if need_grad:
            score = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
            (grads,) = torch.autograd.grad(score, acts)
            acts_d, grads_d = acts.detach(), grads.detach()
            for m in methods:
                if m in GRADIENT_METHODS:
                    result_maps[m] = _gradient_maps(m, acts_d, grads_d).numpy().astype(np.float32)
            del score
        else:
            acts_d = acts
        seconds["forward+gradient"] = time.perf_counter() - t0
        logits_np = logits.detach().numpy().astype(np.float32)
        del logits, acts
    if "eigencam" in methods:
        result_maps["eigencam"] = _eigen_maps(acts_d)
    if "random" in methods:
        result_maps["random"] = _random_maps(tuple(acts_d.shape), seed)
    slow = [m for m in methods if m in ("scorecam", "ablationcam")]
    for i, m in enumerate(slow):

        def sub(frac: float, i: int = i) -> None:
            if progress is not None:
                progress((i + frac) / len(slow))

        t1 = time.perf_counter()
        if m == "scorecam":
            result_maps[m] = _score_cam(model, x, acts_d, targets, batch_size, sub, check, lock)
        else:
            result_maps[m] = _ablation_cam(
                model, layer, module, x, acts_d, targets, logits_np, batch_size, sub, check, lock, call_index
            )
        seconds[m] = time.perf_counter() - t1
    if progress is not None:
        progress(1.0)
    return CamResult(
        maps={m: result_maps[m] for m in methods},
        targets=targets,
        layer=layer,
        activation_shape=tuple(acts_d.shape),
        logits=logits_np,
        input_size=(int(x.shape[2]), int(x.shape[3])),
        seconds=seconds,
        call=call_index,
        calls=calls,
    )


def _score_cam(
    model: nn.Module,
    x: Tensor,
    acts: Tensor,
    targets: list[int],
    batch_size: int,
    progress: ProgressFn,
    check: CheckFn | None,
    lock: AbstractContextManager[object] | None = None,
) -> np.ndarray:
    """Score-CAM as in pytorch-grad-cam (masks from align_corners=True upsampling, softmax of logits)."""
    n, k = acts.shape[:2]
    maps = []
    with torch.inference_mode():
        up = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)
        flat = up.reshape(n, k, -1)
        lo = flat.min(dim=-1).values[:, :, None, None]
        hi = flat.max(dim=-1).values[:, :, None, None]
        masks = (up - lo) / (hi - lo + 1e-8)
        total = n * max(1, math.ceil(k / batch_size))
        done = 0
        for b in range(n):
            scores = torch.empty(k)
            # Dead channels give an all-zero mask: one forward serves them all.
            flat_channels = (hi[b, :, 0, 0] - lo[b, :, 0, 0]) == 0
            live = torch.nonzero(~flat_channels).flatten()
            if bool(flat_channels.any()):
                with guarded(model, lock), eval_mode(model):
                    zero_score = model(torch.zeros_like(x[b : b + 1]))[0, targets[b]]
                scores[flat_channels] = zero_score
            for s in range(0, len(live), batch_size):
                if check is not None:
                    check()
                idx = live[s : s + batch_size]
                # channels_last: faster CPU convolutions for the batch.
                batch = (x[b : b + 1] * masks[b, idx, None]).contiguous(memory_format=torch.channels_last)
                with guarded(model, lock), eval_mode(model):
                    scores[idx] = model(batch)[:, targets[b]].float()
                done += 1
                progress(min(1.0, done / total))
            weights = torch.softmax(scores, dim=0)
            maps.append(_weighted(weights[None], acts[b : b + 1])[0])
    return torch.stack(maps).numpy().astype(np.float32)


def _ablation_cam(
    model: nn.Module,
    layer: str,
    module: nn.Module,
    x: Tensor,
    acts: Tensor,
    targets: list[int],
    logits: np.ndarray,
    batch_size: int,
    progress: ProgressFn,
    check: CheckFn | None,
    lock: AbstractContextManager[object] | None = None,
    call: int = 0,
) -> np.ndarray:
    """Ablation-CAM: weight_k = (y - y_k) / y with channel k of the target layer set to zero.

    As in the paper (and pytorch-grad-cam when the layer's minimum is 0, the usual post-ReLU case) the
    ablated channel is zeroed; the library's -1e7 fill for layers with negative values is not copied.
    """
    n, k = acts.shape[:2]
    maps = []
    total = n * max(1, math.ceil(k / batch_size))
    done = 0
    with torch.inference_mode():
        for b in range(n):
            original = float(logits[b, targets[b]])
            scores = torch.empty(k)
            for s in range(0, k, batch_size):
                if check is not None:
                    check()
                idx = torch.arange(s, min(k, s + batch_size))
                ablated = acts[b : b + 1].repeat(len(idx), 1, 1, 1)
                ablated[torch.arange(len(idx)), idx] = 0
                capture = LayerCapture(call, replace=ablated, layer=layer)
                with guarded(model, lock), eval_mode(model), hooked(layer, module, capture):
                    out = model(x[b : b + 1].expand(len(idx), -1, -1, -1))
                scores[idx] = out[:, targets[b]].float()
                done += 1
                progress(min(1.0, done / total))
            weights = (original - scores) / original
            maps.append(_weighted(weights[None], acts[b : b + 1])[0])
    return torch.stack(maps).numpy().astype(np.float32)
