"""Server settings: one pydantic-settings model fed by ``VLMSERVE_*`` variables and CLI flags.

Precedence, highest first: CLI flags (passed to ``ServerSettings.load`` as keyword
arguments), ``VLMSERVE_*`` environment variables (``VLMSERVE_MODEL``, ``VLMSERVE_PORT``,
``VLMSERVE_API_KEY`` ...), then the defaults below. Like llama-cpp-python's
``server/settings.py``, one model serves every source, so a setting cannot be known to
one and forgotten by the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from vlmserve.config import (
    BUDGET_MAX_TOKENS,
    QWEN_MIN_TOKENS,
    QWEN_PRESENCE_PENALTY,
    EngineConfig,
    ImageOptions,
    TokenBudget,
)
from vlmserve.errors import ModelNotFoundError, VlmserveError
from vlmserve.video.options import VideoOptions

MIB = 1024 * 1024

# Base64 turns 3 bytes into 4; 1.4 leaves room for line breaks some encoders add.
_BASE64_GROWTH = 1.4
# JSON, message text and conversation history around the image(s).
_REQUEST_MARGIN_BYTES = 256 * 1024


# ServerSettings name -> EngineConfig field: the one map between the two tables.
ENGINE_FIELDS = {
    "ctx_size": "n_ctx_per_slot",
    "parallel": "n_parallel",
    "threads": "n_threads",
    "threads_vision": "n_threads_vision",
    "batch_size": "n_batch",
    "n_gpu_layers": "n_gpu_layers",
    "flash_attn": "flash_attn",
    "image_cache_mb": "image_cache_mb",
    "image_cache_dir": "image_cache_dir",
    "image_cache_disk_mb": "image_cache_disk_mb",
    "image_slice": "image_slice",
    "max_queue": "max_queue",
}


def _setting(default: Any, group: str, help: str, **bounds: Any) -> Any:
    """A field of the table: its default, the flag group it is shown in, its help."""
    return Field(default, description=help, json_schema_extra={"group": group}, **bounds)


def _engine(name: str, help: str, **bounds: Any) -> Any:
    """An engine setting: its default is ``EngineConfig``'s, written there once."""
    return _setting(EngineConfig.__dataclass_fields__[ENGINE_FIELDS[name]].default, "engine",
                    help, **bounds)


def engine_config(model: Path, mmproj: Path | None, **values: Any) -> EngineConfig:
    """An ``EngineConfig`` from settings named as in the table (``ctx_size=...``)."""
    fields = {ENGINE_FIELDS[k]: v for k, v in values.items()}
    if fields.get("image_cache_dir") is not None:
        fields["image_cache_dir"] = Path(fields["image_cache_dir"]).expanduser()
    return EngineConfig(model_path=model, mmproj_path=mmproj, **fields)


class ServerSettings(BaseSettings):
    """Everything ``vlmserve serve`` can be told; validated when built.

    This is the settings table: each field's default, bounds and help are written
    here once. ``vlmserve.cli.settings_flags`` derives serve's flags from it (and the
    model flags of describe / watch); engine settings take their defaults from
    ``EngineConfig`` through ``ENGINE_FIELDS``, so no default is written twice.
    """

    model_config = SettingsConfigDict(
        env_prefix="VLMSERVE_",
        extra="ignore",  # other VLMSERVE_* variables belong to other commands
        frozen=True,
    )

    # -- model
    model: Path | None = _setting(
        None, "model", "Qwen3-VL text GGUF, model folder or name from `vlmserve models` "
        "(default: the default model there)")
    mmproj: Path | None = _setting(
        None, "model", "vision projector GGUF (default: the mmproj*.gguf next to the model)")
    demo: bool = _setting(False, "model", "the model is the random-weight demo model: show "
                          "a warning banner")

    # -- network
    host: str = _setting("127.0.0.1", "network", "address to bind (0.0.0.0 for remote "
                         "access, then set --api-key)")
    port: int = _setting(7860, "network", "port", ge=1, le=65535)
    api_key: SecretStr | None = _setting(
        None, "network", "require 'Authorization: Bearer KEY' on /v1 and /metrics; the page "
        "asks for it as password")
    ssl_certfile: Path | None = _setting(
        None, "network", "serve HTTPS with this certificate (PEM; `vlmserve cert` makes one): "
        "phones allow the camera only on secure origins")
    ssl_keyfile: Path | None = _setting(None, "network", "the certificate's private key (PEM)")
    ui: bool = _setting(True, "network", "serve the API only, no page on /")
    idle_timeout: float = _setting(
        5.0, "network", "seconds a connection with no request in progress stays open",
        gt=0, le=3600)
    header_timeout: float = _setting(
        10.0, "network", "seconds a client has to send a request's headers, from its first "
        "byte", gt=0, le=3600)
    body_timeout: float = _setting(
        60.0, "network", "seconds a client has to send a request's whole body, else 408",
        gt=0, le=3600)
    max_connections: int = _setting(
        512, "network", "open connections at most; one more is answered 503", ge=1)
    shutdown_timeout: float = _setting(
        10.0, "network", "on SIGTERM, seconds running requests get to finish (queued ones "
        "end at once); then they end with a 'shutting down' error", ge=0, le=3600)
    log_level: str = _setting("info", "network", "log level",
                              pattern="^(critical|error|warning|info|debug|trace)$")

    # -- engine (defaults: EngineConfig's)
    parallel: int = _engine("parallel", "requests decoded together", ge=1, le=64)
    ctx_size: int = _engine("ctx_size", "KV cells (context tokens) per parallel slot", ge=256)
    threads: int = _engine("threads", "llama.cpp CPU threads (0: a sensible share of the "
                           "cores)", ge=0)
    threads_vision: int = _engine("threads_vision", "vision-encoder threads (0: the cores the "
                                  "text model leaves, 1 on 2 cores)", ge=0)
    batch_size: int = _engine("batch_size", "most tokens per decode step", ge=32)
    n_gpu_layers: int = _engine("n_gpu_layers", "layers to offload to the GPU (-1: all the "
                                "build can)")
    flash_attn: str = _engine("flash_attn", "text-model flash attention (auto: on with a GPU, "
                              "off on CPU)", pattern="^(auto|on|off)$")
    image_cache_mb: int = _engine("image_cache_mb", "vision-embedding cache budget, MB", ge=0)
    image_cache_dir: Path | None = _engine(
        "image_cache_dir", "keep vision embeddings on disk here too, so a restart skips the "
        "encoder for known pictures (off when unset)")
    image_cache_disk_mb: int = _engine("image_cache_disk_mb", "disk cache budget, MB", ge=0)
    image_slice: int = _engine("image_slice", "most image KV cells put in per engine step: "
                               "smaller keeps other answers smoother", ge=1)
    max_queue: int = _engine("max_queue", "waiting requests before 503", ge=1)

    # -- requests
    context_budget: int = _setting(
        4096, "requests", "sliding-window token budget of a conversation, reply included "
        "(also capped by ctx_size)", ge=256)
    max_tokens: int = _setting(512, "requests", "reply length when a request sets none", ge=1)
    text_chars_per_token: int = _setting(
        16, "requests", "a request's text over this many characters per token of a slot's "
        "context (--ctx-size) is refused (400) before it is tokenized", ge=1, le=4096)
    presence_penalty: float = _setting(
        QWEN_PRESENCE_PENALTY, "requests", "presence penalty of sampled requests that set none "
        "(Qwen3-VL's recommendation; greedy requests get none unless they ask)", ge=-2.0,
        le=2.0)
    frequency_penalty: float = _setting(0.0, "requests", "frequency penalty of requests that "
                                        "set none", ge=-2.0, le=2.0)
    allow_remote_images: bool = _setting(False, "requests", "let requests give http(s) image "
                                         "URLs to fetch")
    remote_image_allow: str = _setting(
        "", "requests", "networks (CIDR) and host names remote images may come from even "
        "though they are not public, comma-separated (e.g. 10.0.0.0/8,images.lan); "
        "loopback, private, link-local and metadata addresses are refused otherwise")
    remote_image_timeout_s: float = _setting(10.0, "requests", "seconds to fetch a remote "
                                             "image", gt=0, le=300)
    image_max_edge: int = _setting(1024, "requests", "resize images to this longest edge",
                                   ge=32, le=8192)
    image_max_tokens: int = _setting(
        TokenBudget().max_tokens, "requests", "cap on vision tokens per image (Qwen's "
        "smart_resize within these bounds): trade detail for speed", ge=QWEN_MIN_TOKENS,
        le=BUDGET_MAX_TOKENS)
    image_min_tokens: int = _setting(
        TokenBudget().min_tokens, "requests", "floor on vision tokens per image (Qwen's: 64; "
        "grounding and OCR requests raise theirs to 1024)", ge=8, le=BUDGET_MAX_TOKENS)
    image_max_mb: float = _setting(20.0, "requests", "largest image file, MB", gt=0, le=1024)
    video_max_mb: float = _setting(20.0, "requests", "largest video clip, MB (as an image: "
                                   "the body limit stays where it was)", gt=0, le=4096)
    video_max_seconds: float = _setting(600.0, "requests", "longest video clip, seconds",
                                        gt=0)
    video_max_frames: int = _setting(64, "requests", "most frames sampled from a clip (at 2 "
                                     "a second by default, Qwen's rate)", ge=1, le=768)
    video_max_tokens: int = _setting(2048, "requests", "vision tokens of a whole clip: frames "
                                     "are made smaller to fit, never dropped", ge=16, le=65536)
    max_request_mb: float = _setting(
        0.0, "requests", "largest /v1 request body, MB (0: the larger of image_max_mb and "
        "video_max_mb x 1.4 + 256 kB)", ge=0)
    session_ttl_s: float = _setting(3600.0, "requests", "idle seconds before a server-side "
                                    "session is forgotten", gt=0)
    max_sessions: int = _setting(1000, "requests", "server-side sessions kept (the least "
                                 "recently used goes first)", ge=1)
    session_mb: float = _setting(
        256.0, "requests", "memory for the pictures of server-side sessions, MB: each "
        "distinct picture is held once, the least recently used goes first (its session's "
        "next turn is then asked to send it again)", gt=0)
    templates_file: Path | None = _setting(None, "requests", "YAML/JSON file of extra prompt "
                                           "templates")

    @field_validator("image_min_tokens")
    @classmethod
    def _floor_under_cap(cls, value: int, info: ValidationInfo) -> int:
        cap = info.data.get("image_max_tokens")
        if cap is not None and value > cap:
            raise ValueError(f"must not exceed image_max_tokens ({cap})")
        return value

    @model_validator(mode="after")
    def _key_with_cert(self) -> ServerSettings:
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ValueError("give both --ssl-certfile and --ssl-keyfile, or neither")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"file not found: {path}")
        return self

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
            if not error["loc"]:  # a rule across settings (model_validator)
                message = error["msg"].removeprefix("Value error, ")
                raise VlmserveError(f"invalid settings: {message}") from None
            name = ".".join(str(p) for p in error["loc"])
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
        largest = max(self.image_max_bytes, int(self.video_max_mb * MIB))
        return int(largest * _BASE64_GROWTH) + _REQUEST_MARGIN_BYTES

    def max_text_chars(self, n_ctx_per_slot: int) -> int:
        """The most characters of text one request may send: more could never fit the
        context, and tokenizing it would cost CPU that other requests need."""
        return self.text_chars_per_token * n_ctx_per_slot

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def api_key_value(self) -> str | None:
        """The API key in clear, or None when the API is open (an empty key counts as none)."""
        if self.api_key is None:
            return None
        return self.api_key.get_secret_value() or None

    def image_options(self) -> ImageOptions:
        try:
            tokens = TokenBudget(self.image_min_tokens, self.image_max_tokens)
        except VlmserveError as exc:
            raise VlmserveError(f"--image-min-tokens / --image-max-tokens: {exc.message}"
                                ) from None
        return ImageOptions(max_edge=self.image_max_edge, max_bytes=self.image_max_bytes,
                            tokens=tokens)

    def video_options(self) -> VideoOptions:
        return VideoOptions(max_frames=self.video_max_frames, max_tokens=self.video_max_tokens,
                            max_bytes=int(self.video_max_mb * MIB),
                            max_seconds=self.video_max_seconds)

    def to_engine_config(self) -> EngineConfig:
        """The engine's configuration; ``ModelNotFoundError`` when no model is set."""
        if self.model is None:
            raise ModelNotFoundError(
                "no model given: pass --model and --mmproj (or set VLMSERVE_MODEL and "
                "VLMSERVE_MMPROJ)")
        return engine_config(self.model.expanduser(),
                             self.mmproj.expanduser() if self.mmproj else None,
                             **{name: getattr(self, name) for name in ENGINE_FIELDS})
