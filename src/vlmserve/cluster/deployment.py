"""The Ray Serve application: ``Ingress`` bound to ``EngineReplica`` with its router.

``build_app`` is the one place replica counts, autoscaling, CPUs/GPUs per replica and the
request router are decided; ``vlmserve serve --ray``, the tests, the benchmark and a
KubeRay ``RayService`` (``vlmserve.cluster.deployment:app_from_env``) all build through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import serve
from ray.serve.config import RequestRouterConfig

from vlmserve.cluster.ingress import Ingress
from vlmserve.cluster.replica import EngineReplica
from vlmserve.cluster.router import AffinityRouter
from vlmserve.errors import VlmserveError
from vlmserve.settings import ServerSettings

ENGINE_DEPLOYMENT = "engine"
ROUTERS = ("affinity", "pow2")  # ours; Ray Serve's default (power of two choices)


@dataclass(frozen=True)
class ClusterOptions:
    """How many engine replicas, on what, routed how."""

    replicas: int = 2
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; overrides ``replicas``
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    router: str = "affinity"
    spill_at: int | None = None  # queue length that counts as saturated (None: 2 x slots)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise VlmserveError(f"--replicas must be >= 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise VlmserveError(f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1, "
                                    f"got {low}:{high}")
        if self.replica_gpus < 0 or self.replica_cpus < 0:
            raise VlmserveError("--replica-gpus and replica CPUs must be >= 0")
        if self.router not in ROUTERS:
            raise VlmserveError(f"unknown router {self.router!r}: use one of {', '.join(ROUTERS)}")


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"1:4"`` -> (1, 4); a one-line error otherwise."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise VlmserveError(f"--autoscale {text!r}: give MIN:MAX, e.g. 1:4") from None


def build_app(settings: ServerSettings, options: ClusterOptions) -> serve.Application:
    slots = settings.parallel
    engine_opts: dict = {
        "name": ENGINE_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": options.replica_cpus,
                              "num_gpus": options.replica_gpus},
        # Past its slots and queue the engine refuses (503); Serve holds the rest back.
        "max_ongoing_requests": slots + settings.max_queue,
        "health_check_period_s": 2,
        "graceful_shutdown_timeout_s": 5,
    }
    if options.autoscale is not None:
        low, high = options.autoscale
        engine_opts["autoscaling_config"] = {
            "min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
            "target_ongoing_requests": slots}
    else:
        engine_opts["num_replicas"] = options.replicas
    if options.router == "affinity":
        engine_opts["request_router_config"] = RequestRouterConfig(
            request_router_class=AffinityRouter,
            request_router_kwargs={"spill_at": options.spill_at or 2 * slots})
    engine = serve.deployment(EngineReplica).options(**engine_opts).bind(settings)
    return serve.deployment(Ingress).options(
        name="ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
    ).bind(engine, settings, ENGINE_DEPLOYMENT)


def app_builder(args: dict[str, str]) -> serve.Application:
    """The import path for a Serve config or a KubeRay ``RayService``
    (``vlmserve.cluster.deployment:app_builder``): settings from ``VLMSERVE_*`` variables,
    ``args`` (the config's ``args:``) may set replicas, autoscale, replica_cpus,
    replica_gpus, router and spill_at."""
    settings = ServerSettings.load()
    autoscale = args.get("autoscale")
    options = ClusterOptions(
        replicas=int(args.get("replicas", 2)),
        autoscale=parse_autoscale(str(autoscale)) if autoscale else None,
        replica_cpus=float(args.get("replica_cpus", settings.threads or 1)),
        replica_gpus=float(args.get("replica_gpus", 0)),
        router=str(args.get("router", "affinity")),
        spill_at=int(args["spill_at"]) if args.get("spill_at") else None)
    return build_app(settings, options)
