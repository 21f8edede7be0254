"""The shared vocabulary between the HTTP/CLI layers and the engine thread.

Plain frozen dataclasses: a ``Request`` goes in, a stream of ``TokenDelta`` comes
out, and the last delta of a request carries its ``RequestStats``. Nothing here
imports llama.cpp.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from vlmserve.errors import RequestError, VlmserveError


class FinishReason(str, enum.Enum):
    """Why a request stopped producing tokens (OpenAI's names where they exist)."""

    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the slot's context was reached
    ABORT = "abort"  # the client went away or asked to cancel
    ERROR = "error"  # the engine failed for this request


class Phase(str, enum.Enum):
    """Where a request is before its first token (reported only to requests that ask)."""

    QUEUED = "queued"  # prepared, waiting for a free slot
    ENCODING = "encoding"  # in a slot, its picture at the vision encoder
    PREFILL = "prefill"  # in a slot, the prompt (and the picture's embeddings) going into KV


@dataclass(frozen=True)
class PhaseReport:
    """A request's phase changed: on a CPU the encoder alone can take tens of seconds, and
    a person (or client) waiting that long deserves to know what is happening."""

    phase: Phase
    position: int = 0  # QUEUED: place in line for a slot (1 = next); else 0
    elapsed_ms: float = 0.0  # since the request was submitted


MAX_TOP_LOGPROBS = 20  # OpenAI's limit


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability under the model (log-softmax of the raw logits
    at its position, before temperature, penalties or grammar), and the likeliest
    alternatives there, most likely first, as (token id, bytes, logprob)."""

    token: int
    bytes: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy (argmax)."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    # OpenAI's penalties, through llama.cpp's penalties sampler (last 64 tokens): presence
    # subtracts once for any token seen, frequency once per time it was seen.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF text, for structured (JSON-schema) output
    # Log-probabilities: None = off (no cost); N = the sampled token's plus the N likeliest.
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise RequestError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RequestError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise RequestError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0.0:
            raise RequestError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise RequestError(f"{name} must be in [-2, 2], got {value}")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise RequestError(f"seed must be in [0, 2**32), got {self.seed}")
        if len(self.stop) > 16 or any(not s for s in self.stop):
            raise RequestError("stop must be at most 16 non-empty strings")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise RequestError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], "
                               f"got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        """Whether any penalty changes the logits (the penalties sampler is needed)."""
        return (self.repeat_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)


@dataclass(frozen=True)
class ImageGeometry:
    """What preprocessing did to a photo, to map the model's coordinates back onto it.

    Qwen3-VL answers boxes on a 0-1000 grid of the image it saw; that image is the
    ``crop_box`` region of the upright photo (EXIF orientation applied), resized to
    ``size``. ``stored_size`` is the file's pixel grid before the orientation.
    """

    stored_size: tuple[int, int]  # width, height as stored in the file
    orientation: int  # the EXIF orientation applied (1: none; 5..8 swap the sides)
    crop_box: tuple[int, int, int, int]  # left, top, right, bottom in upright pixels
    size: tuple[int, int]  # width, height the model saw

    @property
    def upright_size(self) -> tuple[int, int]:
        """The photo's size as a person sees it (orientation applied)."""
        w, h = self.stored_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, oriented, resized RGB image, ready for the vision encoder.

    ``content_hash`` identifies the pixels (not the container), so the same
    picture sent as PNG or as a lossless WebP hits the same image-cache entry.
    """

    rgb: bytes = field(repr=False)  # width * height * 3 bytes, row-major RGB
    width: int
    height: int
    content_hash: str
    # Where the pixels came from (None for images not made by prepare_image); not part
    # of the identity: the same pixels from two photos are the same image to the cache.
    geometry: ImageGeometry | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.rgb) != self.width * self.height * 3:
            raise ValueError("rgb buffer size does not match width x height x 3")

    @staticmethod
    def hash_pixels(rgb: bytes, width: int, height: int) -> str:
        """The content hash of raw RGB pixels (sha256 over size and bytes)."""
        h = hashlib.sha256(f"{width}x{height}:".encode())
        h.update(rgb)
        return h.hexdigest()

    @classmethod
    def from_rgb(cls, rgb: bytes, width: int, height: int,
                 geometry: ImageGeometry | None = None) -> PreparedImage:
        return cls(rgb=rgb, width=width, height=height,
                   content_hash=cls.hash_pixels(rgb, width, height), geometry=geometry)


@dataclass(frozen=True)
class UserText:
    """Text someone sent (a message, a tool's result, a tool description): tokenized as
    plain text, with special-token parsing off, so ``<|im_start|>`` typed into a message
    stays the characters it is and can never open a turn of its own."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"UserText.text must be a str, got {type(self.text).__name__}")


@dataclass(frozen=True)
class PreparedClip:
    """A video clip sampled and resized for Qwen3-VL: frames in pairs, a timestamp per pair.

    Qwen3-VL's patch embedding is a Conv3d over two consecutive frames, so frames go to the
    vision encoder in pairs (mtmd merges two adjacent bitmaps marked mergeable); an odd
    count has its last frame repeated, as Qwen's video processor does. Each pair is one
    image chunk in the prompt, preceded by the pair's time as Qwen's processor writes it
    (``<1.2 seconds>``). ``content_hash`` covers every frame's pixels and the timestamps,
    so the same clip sampled the same way is the same prompt (and hits the image cache and
    the KV prefix); sampled differently it is another clip.
    """

    frames: tuple[PreparedImage, ...]  # an even number, all of one size
    timestamps: tuple[float, ...]  # seconds, one per frame pair
    content_hash: str
    source_frames: int = field(default=0, compare=False)  # frames sampled, before padding
    duration_s: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if not self.frames or len(self.frames) % 2:
            raise ValueError("a clip needs an even, non-zero number of frames")
        if len({(f.width, f.height) for f in self.frames}) != 1:
            raise ValueError("all frames of a clip must have one size")
        if len(self.timestamps) != len(self.frames) // 2:
            raise ValueError("a clip needs one timestamp per frame pair")

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height

    @property
    def n_pairs(self) -> int:
        return len(self.frames) // 2

    def pair(self, index: int) -> tuple[PreparedImage, PreparedImage]:
        return self.frames[2 * index], self.frames[2 * index + 1]

    def pair_label(self, index: int) -> str:
        """The text before pair ``index``: Qwen3-VL's ``<t.t seconds>``."""
        return f"<{self.timestamps[index]:.1f} seconds>"

    @staticmethod
    def hash_frames(frames: tuple[PreparedImage, ...], timestamps: tuple[float, ...]) -> str:
        h = hashlib.sha256(b"clip:")
        for frame in frames:
            h.update(frame.content_hash.encode())
        h.update(",".join(f"{t:.3f}" for t in timestamps).encode())
        return h.hexdigest()


PromptPart = str | UserText | PreparedImage | PreparedClip


@dataclass(frozen=True)
class Prompt:
    """A fully rendered prompt: chat-template text, message text and images in order.

    A ``str`` part is the template's own text: it may hold the model's special tokens
    (``<|im_start|>`` ...) and is tokenized with special-token parsing on. A ``UserText``
    part is what a client sent, tokenized as text. The engine keeps the two apart down to
    llama.cpp's tokenizer (``engine/llamacpp/backend.py``).
    """

    parts: tuple[PromptPart, ...]

    @property
    def images(self) -> tuple[PreparedImage, ...]:
        return tuple(p for p in self.parts if isinstance(p, PreparedImage))

    @property
    def clips(self) -> tuple[PreparedClip, ...]:
        return tuple(p for p in self.parts if isinstance(p, PreparedClip))

    @property
    def text(self) -> str:
        """The text with a placeholder where each image or clip goes (for logs and tests)."""
        return "".join(p if isinstance(p, str) else p.text if isinstance(p, UserText)
                       else "<video>" if isinstance(p, PreparedClip) else "<image>"
                       for p in self.parts)

    @property
    def text_parts(self) -> tuple[tuple[str, bool], ...]:
        """Each text part and whether special tokens are parsed in it (template text: yes;
        message text: no), images and clips left out."""
        return tuple((p, True) if isinstance(p, str) else (p.text, False)
                     for p in self.parts if isinstance(p, (str, UserText)))


@dataclass(frozen=True)
class Request:
    """One generation job for the engine."""

    request_id: str
    prompt: Prompt
    sampling: SamplingParams = SamplingParams()
    # Phase deltas (``TokenDelta.phase``) before the first token; off, a stream holds
    # exactly what it always did (text deltas and the last one).
    report_phases: bool = False
    # The server-side conversation this request continues, if any. The engine ignores it;
    # a cluster router uses it to keep one session's turns on the replica holding its KV.
    session_id: str | None = None


@dataclass(frozen=True)
class RequestStats:
    """Figures for one finished request (attached to its last TokenDelta)."""

    prompt_tokens: int = 0  # KV cells of the prompt, image tokens included
    image_tokens: int = 0
    cached_tokens: int = 0  # prompt cells reused from the slot's KV (prefix reuse)
    completion_tokens: int = 0
    images: int = 0
    image_cache_hits: int = 0  # images whose embeddings came from the RAM cache
    image_disk_hits: int = 0  # ... from the disk tier (a restarted server skips the encoder)
    image_encode_ms: float = 0.0
    queue_ms: float = 0.0  # waiting for a free slot
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0  # from submit to the first token
    decode_ms: float = 0.0
    total_ms: float = 0.0
    replica: str | None = None  # which engine replica answered (a Ray Serve deployment)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first one (the usual "tok/s" figure)."""
        if self.completion_tokens <= 1 or self.decode_ms <= 0:
            return 0.0
        return (self.completion_tokens - 1) / (self.decode_ms / 1000.0)

    @property
    def prefill_tokens_per_s(self) -> float:
        new = self.prompt_tokens - self.cached_tokens
        return new / (self.prefill_ms / 1000.0) if self.prefill_ms > 0 else 0.0


@dataclass(frozen=True)
class TokenDelta:
    """A piece of a request's output stream.

    ``text`` holds whole UTF-8 characters only (a multi-byte character split
    across tokens is held back until complete). The last delta of a request has
    ``finish_reason`` set and carries ``stats``; ``error`` is the ``VlmserveError``
    that ended the request, when one did: it travels as itself, so each layer formats
    it (HTTP reads its status and code, the CLI and batch its message).
    """

    request_id: str
    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when the request asked
    finish_reason: FinishReason | None = None
    stats: RequestStats | None = None
    error: VlmserveError | None = None
    # A phase change before the first token (no text): only for ``report_phases`` requests.
    phase: PhaseReport | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
