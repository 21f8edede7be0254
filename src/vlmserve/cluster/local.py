"""Start (or join) Ray, run the vlmserve application on Serve's HTTP port, stop it.

``ClusterRun`` is used by ``vlmserve serve --ray``, the tests and the benchmark. Without
an address a local Ray is started for this process (bound to the settings' host, its
object store kept small); with one, the application is deployed on that cluster.
"""

from __future__ import annotations

import logging
import os
import time

import ray
from ray import serve

from vlmserve.cluster.board import remove_board
from vlmserve.cluster.deployment import ClusterOptions, build_app
from vlmserve.cluster.errors import RayUnavailableError
from vlmserve.errors import VlmserveError
from vlmserve.settings import ServerSettings

log = logging.getLogger(__name__)

APP_NAME = "vlmserve"
OBJECT_STORE_BYTES = 150 * 1024 * 1024


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; True if this call started one."""
    if ray.is_initialized():
        return False
    # Ray's own env knobs stay in charge; these only keep a laptop's Ray small and quiet.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
            return False
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING)
        return True
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayUnavailableError(f"could not start or reach {where}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else exc}") from None


class ClusterRun:
    """The application running on Serve's proxy at ``settings.host:settings.port``."""

    def __init__(self, settings: ServerSettings, options: ClusterOptions,
                 address: str | None = None, num_cpus: int | None = None,
                 app_name: str = APP_NAME) -> None:
        self.settings = settings
        self.app_name = app_name
        self.started_ray = start_ray(address, num_cpus)
        level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
        logging_config = {"log_level": level, "enable_access_log": level == "DEBUG"}
        serve.start(http_options={"host": settings.host, "port": settings.port},
                    logging_config=logging_config)
        t0 = time.perf_counter()
        try:
            serve.run(build_app(settings, options), name=app_name, route_prefix="/",
                      blocking=False, logging_config=logging_config)
        except Exception as exc:  # a replica that cannot start: say why in one line
            self.stop()
            raise VlmserveError(f"the vlmserve application did not start on Ray: "
                                f"{_last_line(exc)}") from None
        log.info("vlmserve on Ray Serve up in %.1f s", time.perf_counter() - t0)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host
        return f"http://{host}:{self.settings.port}"

    def stop(self) -> None:
        """Delete the application (and Serve and Ray, if this run started them)."""
        try:
            serve.delete(self.app_name)
            remove_board(self.app_name)
            if self.started_ray:
                serve.shutdown()
        finally:
            if self.started_ray:
                ray.shutdown()


def _last_line(exc: BaseException) -> str:
    """The informative end of a Ray error (its last non-empty line, shortened)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
