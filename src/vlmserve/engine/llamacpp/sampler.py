"""Per-request token samplers built from llama.cpp's sampler chain.

A pick costs whatever is done over the whole vocabulary, 151,936 entries for
Qwen: ``llama_sampler_sample`` copies every logit into a token-data array
(``{id, logit, p}``, 1.8 MB) and the greedy sampler then scans that copy,
about 0.2 ms a token on one CPU core, a real share of a small model's step.
(llama.cpp at this version already reuses the chain's array between calls, so
the cost is the copy and the scan, not an allocation; llama-server pays the same.)
A plain greedy request needs neither: numpy's argmax over llama.cpp's own
logits buffer picks the same token (the first maximum, as llama.cpp's greedy
sampler does) in a tenth of the time. Everything else (temperature, grammar,
penalties) goes through the chain unchanged, so seeded outputs are the chain's.
"""

from __future__ import annotations

import llama_cpp
import numpy as np

from vlmserve.errors import EngineError, RequestError
from vlmserve.types import SamplingParams

PENALTY_WINDOW = 64  # tokens the penalties look back over (llama.cpp's server default)


def token_logprobs(ctx: llama_cpp.llama_context_p, batch_index: int, n_vocab: int,
                   token: int, n_top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """Log-softmax over the raw logits at ``batch_index``: ``token``'s value and the
    ``n_top`` largest (id, value), most likely first.

    Read from llama.cpp's own logits buffer (still valid after sampling, until the next
    decode), in float64 so a 151,936-entry sum loses nothing. Only requests that ask for
    logprobs call this: the sampling path itself is unchanged.
    """
    ptr = llama_cpp.llama_get_logits_ith(ctx, batch_index)
    if not ptr:
        raise EngineError(f"no logits at batch index {batch_index}")
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
    peak = logits.max()
    log_z = peak + np.log(np.exp(logits - peak).sum())
    top: tuple[tuple[int, float], ...] = ()
    if n_top > 0:
        ids = np.argpartition(-logits, n_top - 1)[:n_top]
        ids = ids[np.lexsort((ids, -logits[ids]))]  # most likely first, ties by id
        top = tuple((int(i), float(logits[i] - log_z)) for i in ids)
    return float(logits[token] - log_z), top


class Sampler:
    """A llama.cpp sampler chain for one request (owns the C object).

    Greedy when ``temperature == 0``; otherwise penalties -> top-k -> top-p ->
    min-p -> temperature -> seeded random pick, the order llama.cpp's server
    uses. An optional GBNF grammar constrains every pick.
    """

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, params: SamplingParams,
                 default_seed: int, fast_greedy: bool = True) -> None:
        self._n_vocab = n_vocab
        # Greedy and nothing else in the chain: the pick is an argmax (see module docstring).
        # ``fast_greedy=False`` keeps llama_sampler_sample, for the tests that compare the two.
        self._argmax_only = (fast_greedy and params.greedy and not params.grammar
                             and not params.penalized)
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
        if params.penalized:
            # One sampler for all three, over the last PENALTY_WINDOW tokens: repeat divides
            # a seen token's logit, frequency subtracts per occurrence, presence once. The
            # vendored llama.h (0.3.36) takes n_vocab first; the old 4-argument call raised
            # TypeError in the engine thread.
            add(llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_WINDOW, params.repeat_penalty, params.frequency_penalty,
                params.presence_penalty))
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
        if self._argmax_only:
            ptr = llama_cpp.llama_get_logits_ith(ctx, batch_index)
            if not ptr:
                raise EngineError(f"no logits at batch index {batch_index}")
            token = int(np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).argmax())
            llama_cpp.llama_sampler_accept(self._chain, token)  # as llama_sampler_sample does
            return token
        # llama_sampler_sample also calls accept() on the chosen token.
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))

    def free(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:  # safety net; the engine frees explicitly
        self.free()
