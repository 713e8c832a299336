"""JSON routes for the model zoo and its weights."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.responses import COMMON, errors
from app.api.schemas import JobCreated, ModelInfo
from app.api.uploads import read_bounded
from app.deps import ClientDep, JobsDep, RegistryDep, SettingsDep
from app.services.custom_models import MAX_ARCHITECTURE_BYTES
from app.services.weights import start_download

router = APIRouter(prefix="/api/v1", tags=["models"], responses=COMMON)


@router.get("/models", response_model=list[ModelInfo], responses=errors(422))
def list_models(registry: RegistryDep, milestones: bool = False) -> list[ModelInfo]:
    """Every model: built-ins, EfficientNet-Lite0 (offline ImageNet weights), then torchvision's classifiers."""
    return [ModelInfo.from_spec(s, registry.pretrained_available(s)) for s in registry.list_specs(milestones)]


@router.get("/models/{name}", response_model=ModelInfo, responses=errors(404, 409, 422))
def model_info(name: str, registry: RegistryDep) -> ModelInfo:
    spec = registry.spec(name)
    return ModelInfo.from_spec(spec, registry.pretrained_available(spec))


@router.post(
    "/models/{name}/weights/download",
    status_code=202,
    response_model=JobCreated,
    responses=errors(404, 409, 422, 503),
)
def download(
    name: str,
    request: Request,
    registry: RegistryDep,
    jobs: JobsDep,
    settings: SettingsDep,
    client: ClientDep,
) -> JSONResponse:
    """Fetch pretrained weights into the torchvision cache as a job (with a network timeout)."""
    job = start_download(registry, jobs, name, settings.download_timeout_seconds, client)
    body = JobCreated(job_id=job.id, status_url=str(request.url_for("job_status", job_id=job.id)))
    return JSONResponse(body.model_dump(), status_code=202)


@router.post("/models", status_code=201, response_model=ModelInfo, responses=errors(409, 413, 415, 422, 507))
async def upload_model(
    registry: RegistryDep,
    architecture: Annotated[
        UploadFile, File(description="JSON: layers or a torchvision name, see the README")
    ],
    weights: Annotated[UploadFile | None, File(description=".safetensors state dict (optional)")] = None,
) -> ModelInfo:
    """Add a model: a JSON architecture plus optional safetensors weights (never a pickle)."""
    arch_bytes = await read_bounded(architecture, MAX_ARCHITECTURE_BYTES, "architecture")
    weight_bytes = (
        await read_bounded(weights, registry.max_model_bytes, "weights") if weights is not None else None
    )
    record = await run_in_threadpool(registry.custom.put, arch_bytes, weight_bytes)
    spec = registry.spec(record.id)
    return ModelInfo.from_spec(spec, registry.pretrained_available(spec))
