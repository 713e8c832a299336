"""HTML routes: the model zoo, and uploading a model described in JSON with safetensors weights."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from app.core.models.zoo import torch_cache_dir
from app.deps import RegistryDep
from app.http.uploads import read_model_upload
from app.web.templating import render

router = APIRouter()

EXAMPLE_ARCHITECTURE = {
    "name": "My nodule net",
    "in_channels": 1,
    "input_size": [64, 64],
    "categories": ["no nodule", "nodule"],
    "mean": [0.5],
    "std": [0.25],
    "layers": [
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3},
        {"type": "relu"},
        {"type": "global_avgpool"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 2},
    ],
}


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, registry: RegistryDep) -> HTMLResponse:
    specs = registry.list_specs()
    available = {s.name: registry.pretrained_available(s) for s in specs}
    return render(
        request,
        "pages/models.html",
        {
            "specs": specs,
            "available": available,
            "cache_dir": str(torch_cache_dir()),
            "default_model": registry.default_model(),
            "example": json.dumps(EXAMPLE_ARCHITECTURE, indent=1),
            "limits": registry.custom.limits,
        },
    )


@router.post("/models/upload", response_class=HTMLResponse)
async def upload_model_form(request: Request, registry: RegistryDep) -> HTMLResponse:
    arch_bytes, weight_bytes = await read_model_upload(request, registry)
    record = await run_in_threadpool(registry.custom.put, arch_bytes, weight_bytes)
    return render(
        request, "partials/model_uploaded.html", {"spec": registry.spec(record.id), "record": record}
    )
