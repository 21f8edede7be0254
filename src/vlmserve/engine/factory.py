"""Builds the engine object graph: backend -> caches -> loop thread -> client."""

from __future__ import annotations

from vlmserve.config import EngineConfig
from vlmserve.engine.client import EngineClient
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.llamacpp.backend import LlamaBackend, gpu_offload_supported
from vlmserve.engine.loop import EngineLoop
from vlmserve.engine.preflight import preflight


def create_engine(config: EngineConfig) -> EngineClient:
    """Validate the files, load the model, start the engine thread; return its client."""
    preflight(config, gpu_offload_supported())
    backend = LlamaBackend(config)
    loop = EngineLoop(backend, ImageCache(config.image_cache_mb * 1024 * 1024),
                      max_queue=config.max_queue, prefix_cache=config.prefix_cache)
    loop.start()
    return EngineClient(backend, loop)
