"""Why images are encoded one by one: the vendored mtmd refuses to batch two Qwen3-VL images.

``mtmd_batch_*`` would let the encoder run several waiting images in one pass, but the
clip graph of the Qwen3-VL projector in llama.cpp 0c1e570 does not support batches:
``mtmd_batch_add_chunk`` answers 2 ("batch too large") for a second image of any size.
If a llama.cpp update changes that, this test fails and the encoder thread should start
using the batch API (docs/architecture.md).
"""

from __future__ import annotations

from llama_cpp import mtmd_cpp

from tests.conftest import png_bytes
from vlmserve.chat import ChatMessage, ChatRenderer
from vlmserve.images import prepare_image


def test_mtmd_refuses_a_second_qwen3vl_image_in_one_batch(engine):
    backend = engine._backend
    images = [prepare_image(png_bytes(256, 256, seed=s)) for s in (1, 2)]
    prompt = ChatRenderer(engine.info.chat_template).render(
        [ChatMessage.user("First.", images[0]), ChatMessage.assistant("ok"),
         ChatMessage.user("Second.", images[1])])
    chunks = [c for c in backend.tokenize_prompt(prompt) if hasattr(c, "handle")]
    assert len(chunks) == 2 and chunks[0].n_tokens == chunks[1].n_tokens
    batch = mtmd_cpp.mtmd_batch_init(backend._mtmd)
    try:
        assert mtmd_cpp.mtmd_batch_add_chunk(batch, chunks[0].handle) == 0
        assert mtmd_cpp.mtmd_batch_add_chunk(batch, chunks[1].handle) == 2
    finally:
        mtmd_cpp.mtmd_batch_free(batch)
        for c in chunks:
            c.free()
