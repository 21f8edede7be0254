"""Builds the engine object graph: backend -> caches -> vision stage + loop threads -> client."""

from __future__ import annotations

import queue

from vlmserve.config import EngineConfig
from vlmserve.engine.client import EngineClient
from vlmserve.engine.disk_cache import DiskEmbeddingCache
from vlmserve.engine.image_cache import ImageCache
from vlmserve.engine.llamacpp.backend import LlamaBackend, gpu_offload_supported
from vlmserve.engine.loop import EngineLoop
from vlmserve.engine.preflight import preflight
from vlmserve.engine.vision import VisionStage
from vlmserve.errors import VlmserveError

MIB = 1024 * 1024


def create_engine(config: EngineConfig, vision_worker: bool = True) -> EngineClient:
    """Validate the files, load the model, start the engine threads; return its client.

    ``vision_worker=False`` tokenizes and encodes on the engine thread itself (the
    blocking path, for equivalence tests and debugging).
    """
    preflight(config, gpu_offload_supported())
    disk = _disk_cache(config)
    backend = LlamaBackend(config)
    inbox: queue.Queue = queue.Queue()
    vision = VisionStage(backend, inbox.put, disk=disk, threaded=vision_worker)
    loop = EngineLoop(backend, vision, inbox, ImageCache(config.image_cache_mb * 1024 * 1024),
                      max_queue=config.max_queue, prefix_cache=config.prefix_cache,
                      image_slice=config.image_slice, prefix_store=disk)
    loop.start()
    return EngineClient(backend, loop, disk)


def _disk_cache(config: EngineConfig) -> DiskEmbeddingCache | None:
    if config.image_cache_dir is None:
        return None
    try:
        return DiskEmbeddingCache(config.image_cache_dir, config.image_cache_disk_mb * MIB)
    except OSError as exc:
        raise VlmserveError(f"cannot use {config.image_cache_dir} as the image cache folder: "
                            f"{exc.strerror or exc}") from None
