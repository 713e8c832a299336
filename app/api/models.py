"""JSON routes for the model zoo and its weights."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.schemas import JobCreated, ModelInfo
from app.deps import JobsDep, RegistryDep, SettingsDep
from app.services.weights import start_download

router = APIRouter(prefix="/api/v1", tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(registry: RegistryDep, milestones: bool = False) -> list[ModelInfo]:
    """Every model: built-ins, EfficientNet-Lite0 (offline ImageNet weights), then torchvision's classifiers."""
    return [ModelInfo.from_spec(s, registry.pretrained_available(s)) for s in registry.list_specs(milestones)]


@router.get("/models/{name}", response_model=ModelInfo)
def model_info(name: str, registry: RegistryDep) -> ModelInfo:
    spec = registry.spec(name)
    return ModelInfo.from_spec(spec, registry.pretrained_available(spec))


@router.post("/models/{name}/weights/download", status_code=202, response_model=JobCreated)
def download(
    name: str, request: Request, registry: RegistryDep, jobs: JobsDep, settings: SettingsDep
) -> JSONResponse:
    """Fetch pretrained weights into the torchvision cache as a job (with a network timeout)."""
    job = start_download(registry, jobs, name, settings.download_timeout_seconds)
    body = JobCreated(job_id=job.id, status_url=str(request.url_for("job_status", job_id=job.id)))
    return JSONResponse(body.model_dump(), status_code=202)
