"""The benchmark workload: one picture, a question of an exact token length, forced output.

Modelled on the published Qwen3-VL-8B-Instruct GGUF measurements: a 768x768
image (576 vision tokens), a short text prompt (15 tokens), 100 output tokens,
greedy decoding. Everything here is plain Python: no model, no llama.cpp.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vlmserve.config import BUDGET_MAX_TOKENS, TokenBudget
from vlmserve.errors import VlmserveError

# The benchmark measures the picture it names: Qwen's rule still rounds its sides to 32 px,
# but no token cap shrinks it (the server's default cap of 1024 would).
BENCH_TOKENS = TokenBudget(64, BUDGET_MAX_TOKENS)


class BenchError(VlmserveError):
    """A benchmark option or step that cannot work (one line for the user)."""


# Question sources. The measured question is a prefix of one of these (repeated
# when more tokens are asked for) cut to exactly ``prompt_tokens`` text tokens.
COLD_QUESTION = ("Describe this picture in detail: the objects, their colours and positions, "
                 "any visible text, and what the whole scene is about.")
WARM_QUESTION = ("Now a different question about the same picture: which colour dominates the "
                 "upper left corner, and what shape sits in the middle?")

_MAX_SIDE = 8192


@dataclass(frozen=True)
class Workload:
    """What one benchmark run measures (validated; every bad value is a ``BenchError``)."""

    width: int = 768
    height: int = 768
    prompt_tokens: int = 15
    max_tokens: int = 100
    runs: int = 3
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    warmup: int = 1

    def __post_init__(self) -> None:
        if not (32 <= self.width <= _MAX_SIDE and 32 <= self.height <= _MAX_SIDE):
            raise BenchError(f"image size must be between 32 and {_MAX_SIDE} pixels a side, "
                             f"got {self.width}x{self.height}")
        if not 1 <= self.prompt_tokens <= 4096:
            raise BenchError(f"--prompt-tokens must be in [1, 4096], got {self.prompt_tokens}")
        if not 1 <= self.max_tokens <= 16384:
            raise BenchError(f"--max-tokens must be in [1, 16384], got {self.max_tokens}")
        if not 1 <= self.runs <= 1000:
            raise BenchError(f"--runs must be in [1, 1000], got {self.runs}")
        if any(not 1 <= n <= 64 for n in self.concurrency):
            raise BenchError("--concurrency levels must be in [1, 64]")
        if not 0 <= self.warmup <= 10:
            raise BenchError("warm-up runs must be in [0, 10]")

    @property
    def max_concurrency(self) -> int:
        return max(self.concurrency, default=1)

    def warmup_seed(self, k: int) -> int:
        return 9_000 + k

    def cold_seed(self, run: int) -> int:
        """The picture of measured run ``run`` (a new picture each run: really cold)."""
        return 1 + run

    def level_seed(self, level_index: int, stream: int) -> int:
        """The picture of stream ``stream`` at concurrency level number ``level_index``."""
        return 10_000 + 1_000 * level_index + stream


def parse_image_size(text: str) -> tuple[int, int]:
    """``"768x768"`` -> ``(768, 768)``; anything else is a one-line ``BenchError``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m:
        raise BenchError(f"--image must look like 768x768, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (32 <= w <= _MAX_SIDE and 32 <= h <= _MAX_SIDE):
        raise BenchError(f"--image sides must be between 32 and {_MAX_SIDE} pixels, "
                         f"got {w}x{h}")
    return w, h


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` -> ``(1, 2, 4, 8)`` (sorted, unique, each in [1, 64])."""
    levels: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part.isdigit():
            raise BenchError(f"--concurrency must be a comma-separated list of positive "
                             f"integers such as 1,2,4,8, got {text!r}")
        n = int(part)
        if not 1 <= n <= 64:
            raise BenchError(f"--concurrency levels must be in [1, 64], got {n}")
        levels.append(n)
    return tuple(sorted(set(levels)))


def make_picture(width: int, height: int, seed: int) -> bytes:
    """A deterministic PNG: colour gradients, a grid and a few seed-placed shapes.

    Different seeds give different pixels (so different image-cache keys); the
    content is irrelevant to a random-weight model but keeps the file realistic
    (compressible, not noise) so decoding it costs what a photo-sized PNG does.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = np.empty((height, width, 3), dtype=np.float32)
    img[..., 0] = 127 + 120 * np.sin(x / width * 3.1 + phase[0])
    img[..., 1] = 127 + 120 * np.sin(y / height * 2.3 + phase[1])
    img[..., 2] = 127 + 120 * np.sin((x + y) / (width + height) * 4.7 + phase[2])
    img[(x.astype(np.int32) % 64 < 2) | (y.astype(np.int32) % 64 < 2)] = 40
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(width, height)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def fit_question(source: str, n_tokens: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``source`` (repeated as needed) that is exactly ``n_tokens``
    tokens by ``count``. Word boundaries are preferred; characters are the fallback."""
    text = source
    while count(text) < n_tokens + 1:
        text = f"{text} {source}"
    words = [m.end() for m in re.finditer(r"\S+", text)]
    best = ""
    for end in words:  # word-boundary prefixes, in order
        candidate = text[:end]
        c = count(candidate)
        if c == n_tokens:
            best = candidate
        elif c > n_tokens:
            break
    if best:
        return best
    for end in range(1, len(text) + 1):  # character prefixes
        candidate = text[:end].rstrip()
        if not candidate:
            continue
        c = count(candidate)
        if c == n_tokens:
            best = candidate
        elif c > n_tokens:
            break
    if not best:
        raise BenchError(f"could not build a question of exactly {n_tokens} tokens with this "
                         "model's tokenizer")
    return best
