"""The baseline: the same request through llama-cpp-python's high-level API.

What a Python user would write without vlmserve: ``llama_cpp.Llama`` with the
multimodal chat handler and ``create_chat_completion(stream=True)``.

Handler: ``llama_cpp.llama_chat_format.MTMDChatHandler``, the generic libmtmd
handler. It renders the chat template stored in the GGUF (Qwen3-VL's own
template), replaces each image with mtmd's media marker and lets libmtmd
tokenize and encode the image, so it runs Qwen3-VL's real projector and M-RoPE
positions. The named ``Qwen25VLChatHandler`` is not used: it hard-codes the
Qwen2.5-VL prompt format (with a default system message) and goes through the
older Llava-1.5 code path. No Qwen3-VL-specific handler exists in 0.3.36.

Every call clears the KV cache (``llama.reset()`` + ``kv_cache_clear()`` in the
handler) and re-encodes the image: there is no image cache and no prefix reuse
across requests, and a ``Llama`` object is not thread-safe, so requests run one
at a time.

Measuring: ``Llama.sample`` is wrapped to note the time of every sampled token
(one list append per token). The stream reports no usage, and a text chunk can
carry several tokens (incomplete UTF-8 is held back), so token counts and the
time of the first token come from that wrapper, not from chunks.

A cap: in 0.3.36, ``_create_completion`` checks ``max_tokens`` only after a token
whose text ends in complete UTF-8 (the incomplete-character branch ``continue``s
past the check). A random-weight model can emit byte tokens that never complete
a character, and generation then runs to the end of the context. The wrapper
ends such a run at ``max_tokens`` by returning the end-of-generation token; the
number of runs capped this way is reported (``capped_runs``).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import llama_cpp
from llama_cpp.llama_chat_format import MTMDChatHandler

HANDLER_NAME = "llama_cpp.llama_chat_format.MTMDChatHandler"


class _CountingLlama(llama_cpp.Llama):
    """``Llama`` that times the tokens it samples and enforces ``limit`` (see above)."""

    limit: int | None = None
    capped = False

    def start_request(self, limit: int) -> None:
        self.sample_times: list[float] = []
        self.limit, self.capped = limit, False

    def sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.limit is not None and len(self.sample_times) >= self.limit:
            self.capped = True
            return self.token_eos()
        token = super().sample(*args, **kwargs)
        self.sample_times.append(time.perf_counter())
        return token


@dataclass
class BaselineResult:
    t_start: float  # before create_chat_completion (image decode, encode, prefill follow)
    t_first: float | None  # first token sampled
    t_first_text: float | None  # first chunk with content
    t_end: float  # stream exhausted
    completion_tokens: int
    finish_reason: str | None
    capped: bool  # ended by our max_tokens cap (see module docstring)
    token_times: list[float]


class LlamaCppPythonBaseline:
    """One ``Llama`` + ``MTMDChatHandler``; requests run sequentially."""

    def __init__(self, model_path: str, mmproj_path: str, n_ctx: int, threads: int,
                 n_gpu_layers: int = -1, flash_attn: bool = False) -> None:
        t0 = time.perf_counter()
        self.handler = MTMDChatHandler(clip_model_path=mmproj_path, verbose=False)
        # flash_attn=False is Llama's default (llama.cpp's own default is "auto").
        self.llm = _CountingLlama(model_path=model_path, chat_handler=self.handler, n_ctx=n_ctx,
                                  n_threads=threads, n_threads_batch=threads,
                                  n_gpu_layers=n_gpu_layers, flash_attn=flash_attn,
                                  verbose=False)
        self.flash_attn = flash_attn
        self.load_ms = (time.perf_counter() - t0) * 1000
        self.threads = threads
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())

    def count_text_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def request(self, png: bytes, question: str, max_tokens: int) -> BaselineResult:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        messages = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": question},
        ]}]
        self.llm.start_request(max_tokens)
        t_start = time.perf_counter()
        # The handler decodes and encodes the image and prefills the prompt inside this
        # call, before the first chunk: the clock is already running.
        stream = self.llm.create_chat_completion(
            messages=messages, stream=True, max_tokens=max_tokens, temperature=0.0,
            repeat_penalty=1.0, top_k=1, top_p=1.0, min_p=0.0, seed=0)
        t_first_text, finish = None, None
        for chunk in stream:
            choice = chunk["choices"][0]
            if t_first_text is None and choice["delta"].get("content"):
                t_first_text = time.perf_counter()
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        t_end = time.perf_counter()
        times = list(self.llm.sample_times)
        capped = self.llm.capped
        if capped:
            finish = "length"
        elif finish == "stop" and times:
            times.pop()  # the end-of-generation token is sampled, not output
        return BaselineResult(t_start, times[0] if times else None, t_first_text, t_end,
                              len(times), finish, capped, times)

    def close(self) -> None:
        self.llm.close()
