"""Per-request token samplers built from llama.cpp's sampler chain."""

from __future__ import annotations

import llama_cpp

from vlmserve.errors import RequestError
from vlmserve.types import SamplingParams


class Sampler:
    """A llama.cpp sampler chain for one request (owns the C object).

    Greedy when ``temperature == 0``; otherwise penalties -> top-k -> top-p ->
    min-p -> temperature -> seeded random pick, the order llama.cpp's server
    uses. An optional GBNF grammar constrains every pick.
    """

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, params: SamplingParams,
                 default_seed: int) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(chain_params)
        add = lambda s: llama_cpp.llama_sampler_chain_add(self._chain, s)  # noqa: E731
        if params.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode("utf-8"), b"root")
            if not grammar:
                self.free()
                raise RequestError("the grammar (or JSON schema) could not be parsed")
            add(grammar)
        if params.repeat_penalty != 1.0:
            add(llama_cpp.llama_sampler_init_penalties(64, params.repeat_penalty, 0.0, 0.0))
        if params.greedy:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(llama_cpp.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else default_seed
            add(llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        """Pick a token from the logits at ``batch_index`` of the last decode, and accept it."""
        # llama_sampler_sample also calls accept() on the chosen token.
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))

    def free(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:  # safety net; the engine frees explicitly
        self.free()
