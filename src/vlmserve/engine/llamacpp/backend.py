"""The llama.cpp backend: model + mmproj + one multi-sequence context.

Thin, typed wrappers over llama-cpp-python's low-level C API. The engine thread
is the only caller of everything here except the read-only tokenizer helpers
(``tokenize``, ``count_prompt_tokens``), which llama.cpp allows from any thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from vlmserve.config import EngineConfig
from vlmserve.engine.backend import (
    BackendInfo,
    BatchToken,
    EmbdSlice,
    ImageChunk,
    PromptChunk,
    TextChunk,
)
from vlmserve.engine.llamacpp.logs import LogCapture
from vlmserve.engine.llamacpp.sampler import Sampler, token_logprobs
from vlmserve.errors import EngineError, ModelLoadError, RequestError
from vlmserve.types import PreparedClip, PreparedImage, Prompt, SamplingParams, UserText


@dataclass(frozen=True)
class LoadedMemory:
    """Memory llama.cpp itself says it allocated at load, in bytes (None: not reported).

    ``weights_bytes`` is ``llama_model_size``; the rest come from llama.cpp's
    INFO log lines (no C function returns them), summed over devices.
    """

    weights_bytes: int  # llama_model_size: bytes of the text model's tensors
    model_buffer_bytes: int | None  # "model buffer size": the buffers holding them
    kv_bytes: int | None  # "KV buffer size"
    compute_bytes: int | None  # text graph "compute buffer size" (sched_reserve)
    output_bytes: int | None  # "output buffer size" (logits, embeddings)
    mmproj_bytes: int | None  # clip "model size": the vision projector's tensors
    vision_compute_bytes: int | None  # clip "compute buffer size" (only with mtmd warm-up)


# The INFO lines LoadedMemory is read from, e.g.
# "llama_kv_cache:        CPU KV buffer size =    64.00 MiB", "load_hparams: model size: 436.13 MiB".
_MEMORY_LINE = re.compile(
    r"^(?P<func>\w+): +(?:\S+ +)?(?P<what>model|KV|compute|output|model size)"
    r"(?: buffer size =|:) +(?P<mib>[0-9.]+) MiB"
)


def _parse_memory_lines(lines: list[str]) -> dict[str, int]:
    """Sum the sizes in llama.cpp's buffer-size log lines by kind (``kv``, ``vision_compute``...)."""
    out: dict[str, int] = {}
    for line in lines:
        m = _MEMORY_LINE.match(line)
        if m is None:
            continue
        what = m["what"]
        if what == "model size":
            kind = "mmproj"
        elif what == "compute":
            kind = "compute" if m["func"] == "sched_reserve" else "vision_compute"
        else:
            kind = what.lower()
        out[kind] = out.get(kind, 0) + round(float(m["mib"]) * 1024 * 1024)
    return out


class LlamaImageChunk:
    """One image in a tokenized prompt (an ``ImageChunk``): owns a copy of the mtmd chunk.

    ``free()`` it when no one needs it any more; the engine makes sure that is never
    while the encoder thread still works on it.
    """

    def __init__(self, handle: int, key: str, n_tokens: int, n_pos: int, mrope: bool) -> None:
        self._handle = handle
        self.key = key  # content hash + mmproj id: the image-cache key
        self.n_tokens = n_tokens
        self.n_pos = n_pos
        self._mrope = mrope

    @property
    def handle(self) -> int:
        if not self._handle:
            raise EngineError("image chunk used after free")
        return self._handle

    def positions(self, n_past: int) -> np.ndarray:
        """mtmd's own decoder positions, in the section order its helper puts in a batch
        (t, y, x, z for M-RoPE), so a slice of the image gets exactly the positions the
        one-call helper would give it."""
        if not self._mrope:
            return (n_past + np.arange(self.n_tokens, dtype=np.int32)).reshape(-1, 1)
        out = (mtmd_cpp.mtmd_decoder_pos * self.n_tokens)()
        tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_image(self.handle)
        mtmd_cpp.mtmd_helper_image_get_decoder_pos(tokens, n_past, out)
        txyz = np.ctypeslib.as_array(ctypes.cast(out, ctypes.POINTER(ctypes.c_uint32)),
                                     shape=(self.n_tokens, 4))
        return np.ascontiguousarray(txyz[:, [0, 2, 1, 3]], dtype=np.int32)

    def free(self) -> None:
        if self._handle:
            mtmd_cpp.mtmd_input_chunk_free(self._handle)
            self._handle = 0

    def __del__(self) -> None:
        self.free()


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, ...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


def _file_identity(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


class LlamaBackend:
    """Owns the llama model, context, mtmd context and a reusable batch.

    Implements both ``DecodeBackend`` (engine thread) and ``VisionBackend`` (the vision
    stage's threads); see ``vlmserve.engine.backend`` for which thread calls what.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._logs = LogCapture(keep_info=_MEMORY_LINE)
        self._model = self._ctx = self._mtmd = None
        self._batch = None
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # ---- loading -------------------------------------------------------------------
    def _load(self) -> None:
        cfg = self.config
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = cfg.n_gpu_layers if cfg.n_gpu_layers >= 0 else 999
        mparams.use_mmap = cfg.use_mmap
        self._logs.clear()
        self._model = llama_cpp.llama_model_load_from_file(str(cfg.model_path).encode(), mparams)
        if not self._model:
            raise ModelLoadError(f"llama.cpp could not load {cfg.model_path}: "
                                 f"{self._logs.last_error() or 'unknown error'}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = cfg.n_ctx_total
        cparams.n_seq_max = cfg.n_parallel
        cparams.n_batch = cfg.n_batch
        cparams.n_ubatch = cfg.n_batch
        cparams.n_threads = cfg.threads
        cparams.n_threads_batch = cfg.threads
        cparams.no_perf = True
        # One KV stream per slot: slots never see each other's cells.
        cparams.kv_unified = False
        cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                                   if cfg.use_flash_attn(gpu_offload_supported())
                                   else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ModelLoadError(f"could not create a llama.cpp context of {cfg.n_ctx_total} "
                                 f"tokens: {self._logs.last_error() or 'out of memory?'}")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.n_ctx_per_slot = llama_cpp.llama_n_ctx_seq(self._ctx)

        if cfg.mmproj_path is not None:
            tparams = mtmd_cpp.mtmd_context_params_default()
            tparams.use_gpu = mparams.n_gpu_layers > 0 and llama_cpp.llama_supports_gpu_offload()
            tparams.n_threads = cfg.threads_vision
            tparams.print_timings = False
            # Warm-up only reserves the graph of a 1472px image (it encodes nothing): the
            # vision compute buffer is then allocated at the first image, sized for it.
            tparams.warmup = False
            if cfg.image_min_tokens:
                tparams.image_min_tokens = cfg.image_min_tokens
            if cfg.image_max_tokens:
                tparams.image_max_tokens = cfg.image_max_tokens
            self._logs.clear()
            self._mtmd = mtmd_cpp.mtmd_init_from_file(
                str(cfg.mmproj_path).encode(), self._model, tparams)
            if not self._mtmd:
                raise ModelLoadError(f"llama.cpp could not load the mmproj {cfg.mmproj_path}: "
                                     f"{self._logs.last_error() or 'unknown error'}")
            if not mtmd_cpp.mtmd_support_vision(self._mtmd):
                raise ModelLoadError(f"{cfg.mmproj_path} has no vision encoder")
            self._mrope = bool(mtmd_cpp.mtmd_decode_use_mrope(self._mtmd))
        self._n_embd_inp = llama_cpp.llama_model_n_embd_inp(self._model)
        self._batch = llama_cpp.llama_batch_init(cfg.n_batch, 0, 1)
        self.info = self._describe()
        self._memory = self._loaded_memory()

    def _loaded_memory(self) -> LoadedMemory:
        sizes = _parse_memory_lines(self._logs.info_lines())
        return LoadedMemory(
            weights_bytes=self.info.model_size_bytes,
            model_buffer_bytes=sizes.get("model"),
            kv_bytes=sizes.get("kv"),
            compute_bytes=sizes.get("compute"),
            output_bytes=sizes.get("output"),
            mmproj_bytes=sizes.get("mmproj"),
            vision_compute_bytes=sizes.get("vision_compute"),
        )

    def memory_report(self) -> LoadedMemory:
        """What llama.cpp allocated for this model and context (as of load).

        Log sizes are printed in MiB with two decimals, so they are exact to ~5 KiB.
        """
        return self._memory

    def _describe(self) -> BackendInfo:
        cfg = self.config
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self._model, b"general.name", buf, len(buf))
        name = buf.value.decode("utf-8", "replace") if n > 0 else cfg.model_path.stem
        tmpl = llama_cpp.llama_model_chat_template(self._model, None)
        return BackendInfo(
            model_path=cfg.model_path,
            mmproj_path=cfg.mmproj_path,
            model_name=name,
            n_ctx_per_slot=self.n_ctx_per_slot,
            n_parallel=cfg.n_parallel,
            n_batch=cfg.n_batch,
            threads=cfg.threads,
            threads_vision=cfg.threads_vision if self._mtmd is not None else 0,
            chat_template=tmpl.decode("utf-8") if tmpl else None,
            model_size_bytes=llama_cpp.llama_model_size(self._model),
            n_params=llama_cpp.llama_model_n_params(self._model),
            mmproj_id=_file_identity(cfg.mmproj_path) if cfg.mmproj_path else "",
            vision=self._mtmd is not None,
            gpu_offload=gpu_offload_supported(),
            system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace"),
        )

    def close(self) -> None:
        """Free everything (idempotent)."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._mtmd:
            mtmd_cpp.mtmd_free(self._mtmd)
            self._mtmd = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None
        self._logs.close()

    # ---- tokens --------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Text -> token ids (special tokens such as ``<|im_start|>`` parsed when ``special``)."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        if n < 0:  # buffer too small: -n is the size needed
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes a token stands for (possibly part of a UTF-8 character)."""
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize_prompt(self, prompt: Prompt) -> list[PromptChunk]:
        """Split a rendered prompt into text and image chunks, as mtmd places them.

        Template text (``str`` parts) is tokenized with special-token parsing on, message
        text (``UserText``) with it off: typed ``<|im_start|>`` stays text. With images,
        ``mtmd_tokenize_from_parts`` takes the same parts (each with its own
        ``parse_special``, no media marker to substitute), wraps each image in
        ``<|vision_start|>``/``<|vision_end|>`` itself and preprocesses the pixels to the
        encoder's grid here (no encoding yet).
        """
        media = [p for p in prompt.parts if isinstance(p, (PreparedImage, PreparedClip))]
        if media and self._mtmd is None:
            raise RequestError("this model was loaded without an mmproj: it cannot see images")
        if not media:
            tokens: list[int] = []
            for text, special in prompt.text_parts:
                tokens += self.tokenize(text, special)
            return [TextChunk(tuple(tokens))]
        keep: list[object] = []  # the ctypes objects the parts point into, alive for the call
        parts: list[object] = []
        bitmaps: list[int] = []

        def add_text(text: str, special: bool) -> None:
            data = text.encode("utf-8")
            itext = mtmd_cpp.mtmd_input_text(text=data, text_len=len(data), add_special=False,
                                             parse_special=special)
            keep.extend([data, itext])
            parts.append(mtmd_cpp.mtmd_input_part(text=ctypes.pointer(itext), bitmap=None))

        def add_bitmap(bm: int) -> None:
            bitmaps.append(bm)
            parts.append(mtmd_cpp.mtmd_input_part(text=None, bitmap=bm))

        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            for part in prompt.parts:
                if isinstance(part, PreparedImage):
                    add_bitmap(self._bitmap(part))
                elif isinstance(part, PreparedClip):
                    self._add_clip(part, add_text, add_bitmap)
                elif isinstance(part, UserText):
                    add_text(part.text, False)
                else:
                    add_text(part, True)
            arr = (ctypes.POINTER(mtmd_cpp.mtmd_input_part) * len(parts))(
                *(ctypes.pointer(p) for p in parts))
            rc = mtmd_cpp.mtmd_tokenize_from_parts(self._mtmd, chunks, arr, len(parts), False)
            if rc != 0:
                raise RequestError(f"the prompt could not be tokenized with its images (mtmd {rc}): "
                                   f"{self._logs.last_error() or ''}".rstrip(": "))
            return self._read_chunks(chunks)
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bm in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bm)

    def _bitmap(self, image: PreparedImage, key: str | None = None) -> int:
        buf = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        bm = mtmd_cpp.mtmd_bitmap_init(image.width, image.height, buf)
        if not bm:
            raise RequestError(f"image {image.width}x{image.height} was refused by mtmd")
        key = key or image.content_hash
        mtmd_cpp.mtmd_bitmap_set_id(bm, f"{key}:{self.info.mmproj_id}".encode())
        return bm

    def _add_clip(self, clip: PreparedClip, add_text, add_bitmap) -> None:
        """A clip's parts: each pair's ``<t.t seconds>`` (template text) then its two frames
        as adjacent mergeable bitmaps.

        mtmd merges two adjacent mergeable bitmaps into one image chunk (Qwen-VL's temporal
        patch) wrapped in ``<|vision_start|>``/``<|vision_end|>``: the layout Qwen3-VL's
        processor writes for a video. The text between pairs keeps pairs apart. A pair's
        chunk id (its image-cache key) is the clip's hash and the pair's index.
        """
        for i in range(clip.n_pairs):
            add_text(clip.pair_label(i), True)
            for frame in clip.pair(i):
                bm = self._bitmap(frame, f"{clip.content_hash}.{i}")
                mtmd_cpp.mtmd_bitmap_set_mergeable(bm, True)
                add_bitmap(bm)

    def _read_chunks(self, chunks: int) -> list[PromptChunk]:
        out: list[PromptChunk] = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            c = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            kind = mtmd_cpp.mtmd_input_chunk_get_type(c)
            if kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = mtmd_cpp.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n))
                out.append(TextChunk(tuple(ptr[j] for j in range(n.value))))
            elif kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                key = (mtmd_cpp.mtmd_input_chunk_get_id(c) or b"").decode()
                out.append(LlamaImageChunk(mtmd_cpp.mtmd_input_chunk_copy(c), key,
                                           mtmd_cpp.mtmd_input_chunk_get_n_tokens(c),
                                           mtmd_cpp.mtmd_input_chunk_get_n_pos(c), self._mrope))
            else:
                raise RequestError("audio input is not supported")
        return out

    # ---- images (the vision stage's encoder thread) ---------------------------------
    def encode_images(self, chunks: Sequence[ImageChunk]) -> list[np.ndarray]:
        """Run the vision encoder; return a copy of each image's embeddings (float32,
        ``(n_tokens, n_embd * (1 + deepstack layers))``), in order.

        Images go one encoder pass each: the vendored clip graph for Qwen3-VL does not
        support ``mtmd_batch`` (``mtmd_batch_add_chunk`` refuses a second image), so
        several waiting images cannot share a pass; see docs/architecture.md.
        """
        return [self._encode_one(c) for c in chunks]

    def _encode_one(self, chunk: ImageChunk) -> np.ndarray:
        rc = mtmd_cpp.mtmd_encode_chunk(self._mtmd, chunk.handle)  # a LlamaImageChunk
        if rc != 0:
            raise EngineError(f"image encoding failed ({rc}): {self._logs.last_error() or ''}")
        ptr = mtmd_cpp.mtmd_get_output_embd(self._mtmd)
        flat = np.ctypeslib.as_array(ptr, shape=(chunk.n_tokens * self._n_embd_inp,))
        return flat.reshape(chunk.n_tokens, self._n_embd_inp).copy()

    def decode_embeddings(self, slices: Sequence[EmbdSlice]) -> None:
        """One ``llama_decode`` over image embeddings of one or more sequences.

        Builds a legacy ``llama_batch`` over numpy arrays: embeddings row-major, M-RoPE
        positions section-major (``pos[j * n + i]``), as mtmd's helper lays them out.
        """
        embd = np.ascontiguousarray(np.concatenate([s.embd for s in slices]), dtype=np.float32)
        n = len(embd)
        if n > self.config.n_batch:
            raise EngineError("embedding batch larger than n_batch")
        pos = np.ascontiguousarray(np.concatenate([s.pos for s in slices]).T, dtype=np.int32)
        seq = np.concatenate([np.full(s.n_cells, s.seq_id, dtype=np.int32) for s in slices])
        n_seq = np.ones(n, dtype=np.int32)
        seq_ptrs = (ctypes.POINTER(llama_cpp.llama_seq_id) * n)(
            *[ctypes.cast(seq.ctypes.data + 4 * i, ctypes.POINTER(llama_cpp.llama_seq_id))
              for i in range(n)])
        logits = np.zeros(n, dtype=np.int8)
        batch = llama_cpp.llama_batch(
            n_tokens=n, token=None,
            embd=embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            pos=pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            n_seq_id=n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(seq_ptrs, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id))),
            logits=logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"decoding image embeddings failed ({rc}): "
                              f"{self._logs.last_error() or ''}")

    # ---- decoding ------------------------------------------------------------------
    def decode(self, tokens: Sequence[BatchToken]) -> None:
        """One ``llama_decode`` over tokens of several sequences (at most n_batch)."""
        b = self._batch
        if len(tokens) > self.config.n_batch:
            raise EngineError("batch larger than n_batch")
        for i, t in enumerate(tokens):
            b.token[i] = t.token
            b.pos[i] = t.pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = t.seq_id
            b.logits[i] = t.logits
        b.n_tokens = len(tokens)
        rc = llama_cpp.llama_decode(self._ctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc}): {self._logs.last_error() or ''}")

    def new_sampler(self, params: SamplingParams, fast_greedy: bool = True) -> Sampler:
        return Sampler(self._vocab, self.n_vocab, params, self.config.seed, fast_greedy)

    def sample(self, sampler: Sampler, batch_index: int) -> int:
        return sampler.sample(self._ctx, batch_index)

    def logprobs(self, batch_index: int, token: int, n_top: int,
                 ) -> tuple[float, tuple[tuple[int, float], ...]]:
        return token_logprobs(self._ctx, batch_index, self.n_vocab, token, n_top)

    # ---- KV memory -----------------------------------------------------------------
    def seq_state(self, seq_id: int) -> np.ndarray:
        n = llama_cpp.llama_state_seq_get_size(self._ctx, seq_id)
        buf = np.empty(n, dtype=np.uint8)
        got = llama_cpp.llama_state_seq_get_data(
            self._ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), n, seq_id)
        if got != n:
            raise EngineError(f"could not copy sequence {seq_id}'s KV ({got} of {n} bytes)")
        return buf

    def set_seq_state(self, seq_id: int, state: np.ndarray) -> bool:
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, 0, -1)
        state = np.ascontiguousarray(state, dtype=np.uint8)
        got = llama_cpp.llama_state_seq_set_data(
            self._ctx, state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), state.nbytes,
            seq_id)
        if got != state.nbytes:
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, 0, -1)
            return False
        return True

    def seq_truncate(self, seq_id: int, pos: int) -> bool:
        """Drop ``seq_id``'s KV cells at positions >= ``pos`` (0 clears the sequence).

        Returns False when llama.cpp refused the partial removal (some cache types
        cannot cut a sequence in the middle); the whole sequence is cleared then.
        """
        if llama_cpp.llama_memory_seq_rm(self._mem, seq_id, pos, -1):
            return True
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, 0, -1)
        return False
