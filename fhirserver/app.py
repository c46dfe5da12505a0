"""The ASGI application: routers, error handlers, middleware, lifespan."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import APIRouter, FastAPI

from fhirserver import __version__
from fhirserver.api import auth_routes, health, metadata, publish, routes, scheduling
from fhirserver.api.errors import install_error_handlers
from fhirserver.api.observability import ObservabilityMiddleware
from fhirserver.audit.middleware import AuditMiddleware
from fhirserver.auth.service import AuthApiError
from fhirserver.config import Settings
from fhirserver.context import AppContext
from fhirserver.scheduling.clock import Clock

log = logging.getLogger(__name__)


class TlsConfig(uvicorn.Config):
    """uvicorn's configuration with HTTPS held to TLS 1.2 or newer (docs/phi.md)."""

    def load(self) -> None:
        """Build the SSL context as uvicorn does, then refuse anything older than TLS 1.2."""
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def server_config(settings: Settings, clock: Clock | None = None) -> uvicorn.Config:
    """The uvicorn configuration `fhirserver serve` (and the tests) run the app with."""
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile")
    return TlsConfig(
        create_app(settings, clock),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.keep_alive_seconds,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
    )


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """Build the application; the database connects when the lifespan starts.

    `clock` lets tests move time (hold expiry, notice windows) instead of sleeping.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await AppContext.start(settings, clock)
        app.state.ctx = ctx
        try:
            if settings.demo:
                from fhirserver.demo.loader import load_demo_once

                await load_demo_once(ctx)
                if ctx.auth is not None:
                    from fhirserver.auth.demo import demo_banner, ensure_demo_credentials

                    creds = await asyncio.to_thread(ensure_demo_credentials, ctx.auth)
                    print(demo_banner(creds), flush=True)
            log.info("fhirserver ready at %s", settings.base_url())
            yield
        finally:
            await ctx.stop()

    app = FastAPI(
        title="fhirserver",
        version=__version__,
        description="FHIR R4 appointment scheduling server",
        lifespan=lifespan,
        docs_url=f"{settings.base_path}/docs",
        openapi_url=f"{settings.base_path}/openapi.json",
        redoc_url=None,
    )
    fhir = APIRouter(prefix=settings.base_path)
    # Fixed paths first: /metadata, /health must not be taken for a resource type.
    fhir.include_router(metadata.router)
    fhir.include_router(health.router)
    fhir.include_router(auth_routes.wellknown_router)
    if settings.bench_endpoints:
        fhir.include_router(health.noop_router)
    fhir.include_router(scheduling.router)
    fhir.include_router(publish.router)
    fhir.include_router(routes.router)
    app.include_router(fhir)
    app.include_router(auth_routes.router)
    app.add_exception_handler(AuthApiError, auth_routes.on_auth_api_error)
    # The base itself takes transaction/batch Bundles (a router cannot own an empty path).
    app.add_api_route(
        settings.base_path, routes.transaction, methods=["POST"], summary="transaction / batch"
    )
    app.add_api_route(
        f"{settings.base_path}/", routes.transaction, methods=["POST"], include_in_schema=False
    )
    app.include_router(health.metrics_router)
    install_error_handlers(app)
    # Added first, so it runs inside ObservabilityMiddleware (which sets the request id).
    app.add_middleware(AuditMiddleware)
    app.add_middleware(ObservabilityMiddleware)
    return app
