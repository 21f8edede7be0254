"""A deterministic stand-in for llama.cpp, for testing the engine loop's logic (not llama.cpp).

Like vLLM's scheduler tests with fake requests: the "model" is a hash. Each sequence's
KV is a set of (positions, content) cells; the logits of a token are a digest of its
sequence's cells at that moment, and greedy sampling maps the digest to a token. So
the next token depends on exactly what is in KV and at which positions, never on how
the loop batched or sliced it: batched == alone and sliced == whole hold exactly when
the loop puts the right things in the right places. Encodes can be held on a gate or
made to fail; every call is logged with the thread that made it.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmserve.engine.backend import BackendInfo, BatchToken, EmbdSlice, TextChunk
from vlmserve.errors import EngineError, VlmserveError
from vlmserve.types import PreparedImage, Prompt, SamplingParams, UserText

VOCAB = 50
EOG = VOCAB - 1
PATCH = 32  # pixels per image-token side


class FakeImageChunk:
    """An image of (w / PATCH) x (h / PATCH) tokens with mtmd's M-RoPE positions."""

    def __init__(self, image: PreparedImage) -> None:
        self.key = image.content_hash
        self.nx, self.ny = max(1, image.width // PATCH), max(1, image.height // PATCH)
        self.n_tokens = self.nx * self.ny
        self.n_pos = max(self.nx, self.ny)
        self.freed = False

    def positions(self, n_past: int) -> np.ndarray:
        i = np.arange(self.n_tokens)
        t = np.full(self.n_tokens, n_past)
        return np.stack([t, n_past + i // self.nx, n_past + i % self.nx,
                         np.zeros(self.n_tokens)], axis=1).astype(np.int32)

    def free(self) -> None:
        self.freed = True


@dataclass
class FakeSampler:
    freed: bool = False

    def free(self) -> None:
        self.freed = True


@dataclass
class Call:
    kind: str  # "tokens" | "embd" | "tokenize" | "encode"
    thread: str
    items: list = field(default_factory=list)  # tokens: (seq, pos); embd: (seq, n cells)


class FakeBackend:
    """Implements ``DecodeBackend`` and ``VisionBackend`` over hashes."""

    def __init__(self, n_parallel: int = 4, n_batch: int = 64, n_ctx_per_slot: int = 4096,
                 decode_s: float = 0.0) -> None:
        self.decode_s = decode_s  # time one forward pass takes (so streams overlap)
        self.info = BackendInfo(
            model_path=Path("fake.gguf"), mmproj_path=Path("fake-mmproj.gguf"),
            model_name="fake", n_ctx_per_slot=n_ctx_per_slot,
            n_parallel=n_parallel, n_batch=n_batch, threads=1, chat_template=None,
            model_size_bytes=0, n_params=0, mmproj_id="fake", vision=True,
            gpu_offload=False, system_info="fake", threads_vision=1)
        self.calls: list[Call] = []
        self.chunks: list[FakeImageChunk] = []
        self.samplers: list[FakeSampler] = []
        self.fail_keys: set[str] = set()  # encoding these raises EngineError
        self.fail_with: dict[str, VlmserveError] = {}  # encoding these raises that error
        self.gates: dict[str, threading.Event] = {}  # encoding these waits for the event
        self.encoding = threading.Event()  # set when an encode starts
        self.decode_gate: threading.Event | None = None  # decode waits for it when set
        self.decoding = threading.Event()  # set when a decode starts
        self.closed = False
        self._kv: dict[int, set[tuple]] = {i: set() for i in range(n_parallel)}
        self._logits: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def _log(self, kind: str, items: list) -> None:
        with self._lock:
            self.calls.append(Call(kind, threading.current_thread().name, items))

    # ---- VisionBackend
    def tokenize_prompt(self, prompt: Prompt) -> list:
        self._log("tokenize", [])
        out: list = []
        for part in prompt.parts:
            if isinstance(part, (str, UserText)):
                text = part if isinstance(part, str) else part.text
                out.append(TextChunk(tuple(ord(c) % EOG for c in text)))
            else:
                chunk = FakeImageChunk(part)
                self.chunks.append(chunk)
                out.append(chunk)
        return out

    def encode_images(self, chunks: Sequence[FakeImageChunk]) -> list[np.ndarray]:
        out = []
        for chunk in chunks:
            self._log("encode", [chunk.key])
            self.encoding.set()
            if chunk.freed:
                raise AssertionError("encoding a freed chunk")
            gate = self.gates.get(chunk.key)
            if gate is not None:
                gate.wait(30)
            if chunk.key in self.fail_keys:
                raise EngineError("fake encoder failure")
            if chunk.key in self.fail_with:
                raise self.fail_with[chunk.key]
            seed = int(hashlib.sha256(chunk.key.encode()).hexdigest()[:8], 16)
            out.append(np.random.default_rng(seed).standard_normal(
                (chunk.n_tokens, 4)).astype(np.float32))
        return out

    # ---- DecodeBackend
    def decode(self, tokens: Sequence[BatchToken]) -> None:
        if len(tokens) > self.info.n_batch:
            raise AssertionError(f"decode of {len(tokens)} tokens > n_batch")
        self._log("tokens", [(t.seq_id, t.pos) for t in tokens])
        self.decoding.set()
        if self.decode_gate is not None:
            self.decode_gate.wait(30)
        time.sleep(self.decode_s)
        self._logits.clear()
        for t in tokens:
            self._kv[t.seq_id].add(((t.pos,), ("t", t.token)))
        for i, t in enumerate(tokens):
            if t.logits:
                self._logits[i] = self._digest(t.seq_id)

    def decode_embeddings(self, slices: Sequence[EmbdSlice]) -> None:
        n = sum(s.n_cells for s in slices)
        if n > self.info.n_batch:
            raise AssertionError(f"embedding decode of {n} cells > n_batch")
        self._log("embd", [(s.seq_id, s.n_cells) for s in slices])
        self._logits.clear()
        for s in slices:
            for row, pos in zip(s.embd, s.pos, strict=True):
                self._kv[s.seq_id].add((tuple(int(p) for p in pos), ("e", row.tobytes())))

    def _digest(self, seq: int) -> bytes:
        return hashlib.sha256(repr(sorted(self._kv[seq])).encode()).digest()

    def new_sampler(self, params: SamplingParams) -> FakeSampler:
        sampler = FakeSampler()
        self.samplers.append(sampler)
        return sampler

    def sample(self, sampler: FakeSampler, batch_index: int) -> int:
        return int.from_bytes(self._logits[batch_index][:4], "little") % EOG

    def logprobs(self, batch_index: int, token: int, n_top: int,
                 ) -> tuple[float, tuple[tuple[int, float], ...]]:
        return -1.0, tuple((t, -1.0 - n) for n, t in enumerate(range(token, token + n_top)))

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def token_bytes(self, token: int) -> bytes:
        return bytes([97 + token % 26])

    def seq_state(self, seq_id: int) -> np.ndarray:
        return np.frombuffer(pickle.dumps(sorted(self._kv[seq_id])), dtype=np.uint8).copy()

    def set_seq_state(self, seq_id: int, state: np.ndarray) -> bool:
        self._kv[seq_id] = set(pickle.loads(state.tobytes()))
        return True

    def seq_truncate(self, seq_id: int, pos: int) -> bool:
        self._kv[seq_id] = {c for c in self._kv[seq_id] if c[0][0] < pos}
        return True

    def close(self) -> None:
        self.closed = True

    # ---- for assertions
    def token_calls(self) -> list[list[tuple[int, int]]]:
        return [c.items for c in self.calls if c.kind == "tokens"]
