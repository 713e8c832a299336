"""JSON routes for training: start a run as a job (POST /api/v1/train) and list the built-in datasets."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.responses import COMMON, errors, job_accepted
from app.deps import ClientDep, JobsDep, RegistryDep, SettingsDep
from app.schemas.common import JobAccepted
from app.schemas.training import DatasetOut, TrainRequest
from app.services import training

router = APIRouter(prefix="/api/v1", tags=["training"], responses=COMMON)


@router.get("/train/datasets", response_model=list[DatasetOut])
def list_datasets() -> list[DatasetOut]:
    """The built-in datasets (generated from a seed): classes, channels and size as drawn, default split."""
    return [DatasetOut(**d) for d in training.datasets()]


@router.post("/train", status_code=202, response_model=JobAccepted, responses=errors(404, 409, 422, 503))
async def train_route(
    body: TrainRequest,
    request: Request,
    registry: RegistryDep,
    jobs: JobsDep,
    settings: SettingsDep,
    client: ClientDep,
) -> JSONResponse:
    """Train a model as a job. Poll GET /api/v1/jobs/{id}: `partial` has the history so far, `result` the new
    model's name (it opens in predict, network and explain), its best validation accuracy and the history.

    Refused before anything runs (422 naming the field): an architecture that does not fit, a number of
    classes unlike the dataset's, epochs, batch size or images past the server's limits, a run estimated past
    max_job_seconds; 503 when max_training_jobs are already running.
    """
    order = training.TrainRequest(**body.model_dump())
    job = await run_in_threadpool(training.start_training, order, registry, jobs, settings, client)
    return job_accepted(request, job)
