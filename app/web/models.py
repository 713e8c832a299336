"""HTML route: the model zoo."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.core.zoo import torch_cache_dir
from app.deps import RegistryDep
from app.web.templating import render

router = APIRouter()


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
        },
    )
