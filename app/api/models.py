"""JSON routes for the model zoo and its weights."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.responses import COMMON, errors, multipart_upload
from app.deps import ClientDep, JobsDep, RegistryDep, SettingsDep
from app.http.uploads import read_model_upload
from app.schemas.common import JobCreated, ModelInfo
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


MODEL_UPLOAD_OPENAPI = multipart_upload(
    {
        "architecture": "JSON: layers or a torchvision name, see the README (at most 256 KiB)",
        "weights": ".safetensors state dict (optional; at most max_model_bytes)",
    },
    required=("architecture",),
)


@router.post(
    "/models",
    status_code=201,
    response_model=ModelInfo,
    openapi_extra=MODEL_UPLOAD_OPENAPI,
    summary="Upload a model (multipart fields `architecture` and optional `weights`)",
    responses=errors(409, 413, 415, 422, 507),
)
async def upload_model(request: Request, registry: RegistryDep) -> ModelInfo:
    """Add a model: a JSON architecture plus optional safetensors weights (never a pickle).

    Its parameters, multiply-accumulates and activation memory are computed from the description before it is
    built, and refused past max_model_parameters, max_model_macs and max_model_activation_bytes (422 over_limit).
    """
    arch_bytes, weight_bytes = await read_model_upload(request, registry)
    record = await run_in_threadpool(registry.custom.put, arch_bytes, weight_bytes)
    spec = registry.spec(record.id)
    return ModelInfo.from_spec(spec, registry.pretrained_available(spec))
