"""``Ingress``: the Ray Serve deployment that serves vlmserve's page and OpenAI API.

It is the ordinary app of ``http.app.create_app`` (same routes, page, sessions, limits),
built on each ingress replica around a ``RemoteEngineClient`` instead of an in-process
engine. Server-side sessions live here, not on the engine replicas, so an engine
replica's death loses only cache warmth, never a conversation.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from vlmserve.cluster.board import board_actor
from vlmserve.cluster.ops import cluster_routes, serve_replica_counts
from vlmserve.cluster.remote_client import RemoteEngineClient
from vlmserve.http.app import create_app
from vlmserve.settings import ServerSettings


@serve.ingress()
class Ingress:
    async def __init__(self, engine: DeploymentHandle, settings: ServerSettings,
                       engine_deployment: str) -> None:
        app_name = serve.get_replica_context().app_name
        info = await engine.info.remote()
        self._settings = settings
        self._client = RemoteEngineClient(engine, info, settings.to_engine_config(),
                                          board_actor(app_name))
        self._counts = serve_replica_counts(app_name, engine_deployment)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._settings, engine=self._client,
                          first_routes=cluster_routes(self._client, self._counts))

    def __del__(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
