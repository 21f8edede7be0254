"""``/health`` (always open) and ``/metrics`` (Prometheus text; API key when one is set)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from vlmserve.http.auth import api_key_dependency
from vlmserve.http.errors import error_responses
from vlmserve.http.services import Services


class HealthReady(BaseModel):
    status: Literal["ok"]
    model: str
    vision: bool
    slots: int
    busy_slots: int
    queue_depth: int
    n_ctx_per_slot: int
    demo: bool


class HealthNotReady(BaseModel):
    status: Literal["loading", "error"]
    error: str | None = None  # why the load failed


class PrometheusResponse(Response):
    """Prometheus' text exposition format, under its own content type (so the OpenAPI
    schema says what ``/metrics`` really answers)."""

    media_type = CONTENT_TYPE_LATEST


def ops_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=None, responses={
        200: {"model": HealthReady, "description": "the model is loaded"},
        503: {"model": HealthNotReady, "description": "loading, or the load failed"}})
    async def health() -> JSONResponse:
        """200 ``{"status": "ok"}`` only once the model is loaded; 503 ``loading`` or
        ``error`` (with the reason) before that, so a load balancer or a start script can
        wait on it."""
        holder = services.holder
        model = holder.model
        if model is None:
            body = {"status": holder.state}
            if holder.error:
                body["error"] = holder.error
            return JSONResponse(body, status_code=503,
                                headers={"Retry-After": "2"} if holder.error is None else None)
        info = model.engine.info
        snap = model.engine.snapshot()
        return JSONResponse({
            "status": "ok",
            "model": model.model_id,
            "vision": info.vision,
            "slots": snap.n_slots,
            "busy_slots": snap.busy_slots,
            "queue_depth": snap.queue_depth,
            "n_ctx_per_slot": info.n_ctx_per_slot,
            "demo": services.settings.demo,
        })

    @router.get("/metrics", response_class=PrometheusResponse,
                dependencies=[Depends(api_key_dependency(services.settings.api_key_value))],
                responses={200: {"description": "Prometheus text format",
                                 "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
                           **error_responses(401)})
    async def metrics() -> PrometheusResponse:
        return PrometheusResponse(services.metrics.render())

    return router
