"""Server settings: one pydantic-settings model fed by ``VLMSERVE_*`` variables and CLI flags.

Precedence, highest first: CLI flags (passed to ``ServerSettings.load`` as keyword
arguments), ``VLMSERVE_*`` environment variables (``VLMSERVE_MODEL``, ``VLMSERVE_PORT``,
``VLMSERVE_API_KEY`` ...), then the defaults below. Like llama-cpp-python's
``server/settings.py``, one model serves every source, so a setting cannot be known to
one and forgotten by the other.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from vlmserve.config import EngineConfig, ImageOptions
from vlmserve.errors import ModelNotFoundError, VlmserveError

MIB = 1024 * 1024

# Base64 turns 3 bytes into 4; 1.4 leaves room for line breaks some encoders add.
_BASE64_GROWTH = 1.4
# JSON, message text and conversation history around the image(s).
_REQUEST_MARGIN_BYTES = 256 * 1024


class ServerSettings(BaseSettings):
    """Everything ``vlmserve serve`` can be told; validated when built."""

    model_config = SettingsConfigDict(
        env_prefix="VLMSERVE_",
        extra="ignore",  # other VLMSERVE_* variables belong to other commands
        frozen=True,
    )

    # -- network
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for remote access")
    port: int = Field(7860, ge=1, le=65535)
    api_key: SecretStr | None = Field(
        None, description="when set, /v1/* and /metrics need 'Authorization: Bearer KEY' "
        "and the page asks for it as its password")
    ui: bool = Field(True, description="serve the Gradio page on /")
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug|trace)$")

    # -- model and engine
    model: Path | None = Field(None, description="Qwen3-VL text GGUF")
    mmproj: Path | None = Field(None, description="matching vision projector (mmproj) GGUF")
    demo: bool = Field(False, description="the model is the random-weight demo: show a banner")
    ctx_size: int = Field(8192, ge=256, description="KV cells per slot (per parallel request)")
    parallel: int = Field(4, ge=1, le=64, description="requests decoded together")
    threads: int = Field(0, ge=0, description="llama.cpp threads; 0 picks a default")
    threads_vision: int = Field(0, ge=0, description="vision-encoder threads; 0 picks a default")
    batch_size: int = Field(512, ge=32, description="most tokens in one llama_decode")
    n_gpu_layers: int = Field(-1, description="layers to offload; -1 all the build can")
    flash_attn: str = Field("auto", pattern="^(auto|on|off)$",
                            description="text-model flash attention: auto = on with a GPU")
    image_cache_mb: int = Field(512, ge=0, description="vision-embedding cache budget")
    image_cache_dir: Path | None = Field(None, description="folder of the disk tier of the "
                                         "vision-embedding cache (off when unset)")
    image_cache_disk_mb: int = Field(4096, ge=0, description="disk tier's byte budget")
    image_slice: int = Field(64, ge=1, description="most image KV cells put in per engine "
                             "step, so running answers keep streaming")
    max_queue: int = Field(64, ge=1, description="requests waiting for a slot before 503")

    # -- requests
    context_budget: int = Field(
        4096, ge=256, description="sliding window: most tokens a conversation's prompt plus "
        "its reply may use (also capped by ctx_size)")
    max_tokens: int = Field(512, ge=1, description="reply length when a request gives none")
    allow_remote_images: bool = Field(
        False, description="let requests name http(s) image URLs for the server to fetch")
    remote_image_timeout_s: float = Field(10.0, gt=0, le=300)
    image_max_edge: int = Field(1024, ge=32, le=8192, description="longest edge after resize")
    image_min_tokens: int = Field(0, ge=0, description="floor on vision tokens (0: model's)")
    image_max_tokens: int = Field(0, ge=0, description="cap on vision tokens (0: model's)")
    image_max_mb: float = Field(20.0, gt=0, le=1024, description="largest accepted image file")
    max_request_mb: float = Field(
        0.0, ge=0, description="largest /v1 request body; 0: image_max_mb x 1.4 + 256 kB")
    session_ttl_s: float = Field(3600.0, gt=0, description="idle time before a session ends")
    max_sessions: int = Field(1000, ge=1)
    templates_file: Path | None = Field(None, description="YAML/JSON file of extra templates")

    @classmethod
    def load(cls, **overrides: object) -> ServerSettings:
        """Settings from the environment, with ``overrides`` (CLI flags) on top.

        ``None`` overrides are ignored (a flag that was not given). Invalid values raise
        ``VlmserveError`` with one line naming the setting, not pydantic's report.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ".".join(str(p) for p in error["loc"]) or "settings"
            raise VlmserveError(
                f"invalid setting {name} (flag --{name.replace('_', '-')} or "
                f"VLMSERVE_{name.upper()}): {error['msg']}"
            ) from None

    # -- derived values

    @property
    def image_max_bytes(self) -> int:
        return int(self.image_max_mb * MIB)

    @property
    def max_request_bytes(self) -> int:
        """The /v1 body limit: enough for one image at the limit, base64-encoded."""
        if self.max_request_mb > 0:
            return int(self.max_request_mb * MIB)
        return int(self.image_max_bytes * _BASE64_GROWTH) + _REQUEST_MARGIN_BYTES

    @property
    def api_key_value(self) -> str | None:
        """The API key in clear, or None when the API is open (an empty key counts as none)."""
        if self.api_key is None:
            return None
        return self.api_key.get_secret_value() or None

    def image_options(self) -> ImageOptions:
        return ImageOptions(max_edge=self.image_max_edge, max_bytes=self.image_max_bytes)

    def to_engine_config(self) -> EngineConfig:
        """The engine's configuration; ``ModelNotFoundError`` when no model is set."""
        if self.model is None:
            raise ModelNotFoundError(
                "no model given: pass --model and --mmproj (or set VLMSERVE_MODEL and "
                "VLMSERVE_MMPROJ)")
        return EngineConfig(
            model_path=self.model.expanduser(),
            mmproj_path=self.mmproj.expanduser() if self.mmproj else None,
            n_ctx_per_slot=self.ctx_size,
            n_parallel=self.parallel,
            n_threads=self.threads,
            n_threads_vision=self.threads_vision,
            n_batch=self.batch_size,
            n_gpu_layers=self.n_gpu_layers,
            flash_attn=self.flash_attn,
            image_min_tokens=self.image_min_tokens,
            image_max_tokens=self.image_max_tokens,
            image_cache_mb=self.image_cache_mb,
            image_cache_dir=self.image_cache_dir.expanduser() if self.image_cache_dir else None,
            image_cache_disk_mb=self.image_cache_disk_mb,
            image_slice=self.image_slice,
            max_queue=self.max_queue,
        )
