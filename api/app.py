"""LoomCtl: the FastAPI app. Routers per resource; the Temporal client lives on app.state."""

from __future__ import annotations

from fastapi import FastAPI

from api.routers import cluster, events, health, jobs, marketplace


def create_app() -> FastAPI:
    app = FastAPI(title="LoomCtl", version="0.1.0", description="LoomOS control API")
    app.include_router(health.router)
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(cluster.router, prefix="/api/v1")
    app.include_router(events.router, prefix="/api/v1")
    app.include_router(marketplace.router, prefix="/api/v1")
    return app
