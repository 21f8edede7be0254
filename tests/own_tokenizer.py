"""llama.cpp's tokenizer on a GGUF file, loaded vocabulary-only, apart from vlmserve.

What the tests compare vlmserve's token counts with: template text tokenized with special
tokens parsed, message text (``UserText``) as plain text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import llama_cpp


class OwnTokenizer:
    """A vocabulary-only llama.cpp model: ``tokenize`` and token attributes, nothing else."""

    def __init__(self, path: Path) -> None:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        assert self.model
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 16))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, special)
        assert n >= 0
        return list(buf[:n])

    def prompt(self, parts: Iterable[object]) -> list[int]:
        """Text parts as the engine must tokenize them: template text (``str``) with
        special tokens parsed, message text (``UserText``) as text."""
        return [t for part in parts for t in (
            self.tokenize(part) if isinstance(part, str)
            else self.tokenize(part.text, False))]  # type: ignore[attr-defined]

    def attr(self, token: int) -> int:
        return int(llama_cpp.llama_vocab_get_attr(self.vocab, token))

    def close(self) -> None:
        llama_cpp.llama_model_free(self.model)
