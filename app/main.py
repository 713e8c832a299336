"""create_app(): the FastAPI application, its lifespan (heavy objects built once), routers and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import convolution as api_convolution
from app.api import explain as api_explain
from app.api import images as api_images
from app.api import jobs as api_jobs
from app.api import models as api_models
from app.api import network as api_network
from app.api import predict as api_predict
from app.api import training as api_training
from app.config import Settings, get_settings
from app.errors import ConvScopeError
from app.middleware.body_limit import BodyLimitMiddleware
from app.middleware.security import SecurityMiddleware
from app.services.images import ImageStore
from app.services.jobs import JobManager
from app.services.models import ModelRegistry
from app.services.network import NetworkService
from app.services.pictures import PictureStore
from app.web import api_docs
from app.web import convolution as web_convolution
from app.web import explain as web_explain
from app.web import home as web_home
from app.web import images as web_images
from app.web import login as web_login
from app.web import models as web_models
from app.web import network as web_network
from app.web import pictures as web_pictures
from app.web import predict as web_predict

# Every router, listed: the JSON API (documented in OpenAPI) and the pages with their HTMX partials (not an API:
# their errors are HTML and their bodies forms, so the schema would only say less than the truth).
# Alphabetical, as the routes were first registered: where two paths could match, the earlier router wins.
API_ROUTERS = (
    api_convolution.router,
    api_explain.router,
    api_images.router,
    api_jobs.router,
    api_models.router,
    api_network.router,
    api_predict.router,
    api_training.router,
)
WEB_ROUTERS = (
    api_docs.router,
    web_convolution.router,
    web_explain.router,
    web_home.router,
    web_images.router,
    web_login.router,
    web_models.router,
    web_network.router,
    web_pictures.router,
    web_predict.router,
)


def _include_routers(application: FastAPI) -> None:
    for router in API_ROUTERS:
        application.include_router(router)
    for router in WEB_ROUTERS:
        application.include_router(router, include_in_schema=False)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_response(
    request: Request, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    if _wants_json(request):
        return JSONResponse(body, status_code=status_code, headers=headers)
    from app.web.templating import render_error

    response = render_error(request, body["error"], status_code)
    response.headers.update(headers or {})
    return response


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
    field = ".".join(loc) or None
    message = str(first.get("msg", "Invalid request"))
    if field:
        message = f"{field}: {message}"
    details = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form")),
            "message": str(e.get("msg")),
        }
        for e in exc.errors()
    ]
    return {"error": {"code": "invalid_input", "message": message, "field": field, "details": details}}


def _install_error_handlers(application: FastAPI) -> None:
    @application.exception_handler(ConvScopeError)
    async def domain_error(request: Request, exc: ConvScopeError) -> Response:
        return _error_response(request, exc.status_code, exc.to_dict(), exc.headers)

    @application.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(request, 422, _validation_body(exc))

    @application.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        message = "No such page or endpoint." if exc.status_code == 404 else str(exc.detail)
        return _error_response(
            request, exc.status_code, {"error": {"code": code, "message": message, "field": None}}
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Models and images load lazily after start-up, never at import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        application.state.settings = settings
        application.state.image_store = ImageStore(settings)
        application.state.registry = ModelRegistry(settings)
        application.state.network_service = NetworkService(
            application.state.registry, application.state.image_store
        )
        application.state.jobs = JobManager.from_settings(settings)
        application.state.pictures = PictureStore.from_settings(settings)
        application.state.image_store.ensure_samples()
        yield
        application.state.jobs.shutdown()
        application.state.image_store.close()

    application = FastAPI(
        title="ConvScope",
        version="0.1.0",
        description="See inside convolutional neural networks. JSON/PNG/.npy twins of every page under /api/v1.",
        lifespan=lifespan,
        # Served by app/web/api_docs.py from local assets: FastAPI's defaults load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    application.mount("/static", StaticFiles(directory=str(settings.static_dir)), name="static")
    application.mount(
        api_docs.ASSETS_URL, StaticFiles(directory=str(api_docs.assets_dir())), name="docs-assets"
    )
    _install_error_handlers(application)
    _include_routers(application)
    # The middleware added last runs first: security (headers, Host, Origin, token) refuses before the body
    # limit reads anything, and its headers go on every answer, the body limit's 413 included.
    application.add_middleware(BodyLimitMiddleware, settings=settings)
    application.add_middleware(SecurityMiddleware, settings=settings)
    return application
