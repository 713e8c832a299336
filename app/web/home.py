"""HTML route: the start page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import ImageStoreDep
from app.web.templating import render

router = APIRouter()

# The lecture's ideas in its order, each with the place in ConvScope where a student can try it.
LECTURE_MAP: tuple[tuple[str, str, str], ...] = (
    (
        "Why fully-connected networks fail on images",
        "/cost",
        "300 weights for 10x10x3; 4,294,967,296 vs 589,824 at 256x256",
    ),
    ("Multiply and sum", "/conv?preset=multiply_and_sum", "one output cell, every product written out"),
    ("Filters detect patterns: the vertical edge", "/conv?preset=vertical_edge", "rows of 0 30 30 0"),
    ("The Sobel-like 0.25 / 0.5 kernel", "/conv?preset=sobel_lecture", "the same edge, weighted"),
    ("Filters and feature maps on real images", "/filters", "a layer of kernels on a CT slice or a photo"),
    ("Filters can be 3-D", "/filters", "one kernel per colour channel, summed"),
    ("ReLU", "/conv?preset=relu_dark_to_bright", "negatives vanish"),
    ("Padding keeps the size", "/conv?preset=padded_nodule", "zeros, reflection and more"),
    (
        "Translation equivariance: move the nodule",
        "/conv?preset=moved_nodule",
        "the feature map moves with it",
    ),
    ("No scale equivariance: small vs large nodule", "/conv?preset=large_nodule", "one detection vs four"),
    ("Pooling", "/conv?preset=large_nodule_pooling", "four detections become one"),
    ("Flattening", "/conv?preset=flatten", "a 3x3 map becomes 9 numbers"),
    ("Pooling and depth grow the receptive field", "/receptive-fields", "what one unit can see"),
    (
        "Learned first-layer filters: edges and blobs",
        "/network?model=digit-cnn#filters-section",
        "and noise when untrained",
    ),
    ("Early vs late feature maps", "/network", "local and simple, then abstract"),
    (
        "AlexNet, VGG, Inception, ResNet, SqueezeNet, MobileNet, DenseNet, EfficientNet",
        "/milestones",
        "year, depth, cost, key idea",
    ),
    ("Transfer learning", "/milestones", "reuse a pretrained backbone"),
    ("Grad-CAM, Grad-CAM++, Score-CAM, Ablation-CAM, Eigen-CAM", "/explain", "where the network looked"),
    ("Occlusion sensitivity with top-k labels", "/occlusion", "hide a patch, watch the probability"),
    ("Do the explanations agree?", "/compare", "side by side, with faithfulness scores"),
)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, store: ImageStoreDep) -> HTMLResponse:
    samples = [r for r in store.list_images() if r.source == "sample"]
    return render(request, "pages/home.html", {"samples": samples[:12], "lecture_map": LECTURE_MAP})


@router.get("/healthz")
def health() -> dict[str, str]:
    return {"status": "ok"}
