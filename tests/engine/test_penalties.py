"""Presence and frequency penalties reach llama.cpp's penalties sampler (tiny model)."""

from __future__ import annotations

from tests.engine.conftest import image_prompt, run, token_ids


def test_seeded_sampling_with_penalties_differs_from_without(engine):
    prompt = image_prompt(engine, "describe", seed=3)
    sampled = dict(max_tokens=48, temperature=1.0, top_k=0, top_p=1.0, seed=1234)
    plain = token_ids(run(engine, prompt, **sampled)[0])
    again = token_ids(run(engine, prompt, **sampled)[0])
    penalized = token_ids(run(engine, prompt, presence_penalty=2.0, frequency_penalty=2.0,
                              **sampled)[0])
    assert plain == again  # the seed makes it repeatable ...
    assert penalized != plain  # ... so the difference is the penalties'
    assert penalized == token_ids(run(engine, prompt, presence_penalty=2.0,
                                      frequency_penalty=2.0, **sampled)[0])


def test_greedy_with_a_presence_penalty_avoids_repeating_tokens(engine):
    prompt = image_prompt(engine, "describe", seed=4)
    greedy = token_ids(run(engine, prompt, max_tokens=48)[0])
    penalized = token_ids(run(engine, prompt, max_tokens=48, presence_penalty=2.0)[0])
    assert penalized != greedy
    # repeats within llama.cpp's 64-token penalty window are rarer with the penalty
    assert len(set(penalized)) >= len(set(greedy))


def test_repeat_penalty_alone_runs_to_the_end(engine):
    # The penalties sampler once was called with too few arguments: a TypeError in the
    # engine thread, and the request never ended.
    prompt = image_prompt(engine, "describe", seed=5)
    deltas, end = run(engine, prompt, max_tokens=8, repeat_penalty=1.3)
    assert end.error is None and len(token_ids(deltas)) == 8
