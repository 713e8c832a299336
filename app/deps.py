"""Annotated dependency aliases: routes declare what they need, the app state supplies it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from app.config import Settings
from app.services.images import ImageStore
from app.services.jobs import JobManager
from app.services.models import ModelRegistry
from app.services.network import NetworkService
from app.services.pictures import PictureStore


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_image_store(request: Request) -> ImageStore:
    store: ImageStore = request.app.state.image_store
    return store


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def get_jobs(request: Request) -> JobManager:
    jobs: JobManager = request.app.state.jobs
    return jobs


def get_network_service(request: Request) -> NetworkService:
    """One per app: its activation cache is shared by the pages and the API."""
    service: NetworkService = request.app.state.network_service
    return service


def get_pictures(request: Request) -> PictureStore:
    pictures: PictureStore = request.app.state.pictures
    return pictures


def model_name(registry: Annotated[ModelRegistry, Depends(get_registry)], model: str | None = None) -> str:
    """The `model` query parameter, or the default model when it is absent or empty.

    One place for the fallback that used to be written `model or registry.default_model()` in every route.
    """
    return model or registry.default_model()


async def read_form(request: Request) -> FormData:
    """The submitted form, read on the event loop (waiting for bytes is I/O): with it as a dependency a
    form route can be a plain `def`, which FastAPI runs in a worker thread, off the loop (issue 9)."""
    return await request.form()


def client_id(request: Request) -> str:
    """Who a request counts against for the per-client job cap: the peer's address.

    The access token (when one is configured) is shared by a whole class, so it names no one client.
    """
    return request.client.host if request.client is not None else "unknown"


def is_htmx(request: Request) -> bool:
    """True for requests made by HTMX (they get a partial, not a whole page)."""
    return request.headers.get("HX-Request", "").lower() == "true"


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
PicturesDep = Annotated[PictureStore, Depends(get_pictures)]
# A route that declares `model: ModelNameDep` takes the query parameter `model` and gets a name, never None.
ModelNameDep = Annotated[str, Depends(model_name)]
NetworkDep = Annotated[NetworkService, Depends(get_network_service)]
IsHtmx = Annotated[bool, Depends(is_htmx)]
FormDep = Annotated[FormData, Depends(read_form)]
ClientDep = Annotated[str, Depends(client_id)]
