"""A small byte-level BPE vocabulary in the GPT-2 / Qwen2 format, trained at write time.

The published Qwen3-VL GGUF carries a 151,936-entry Qwen2 BPE. A demo model
cannot ship that, so we train a few hundred merges on a built-in corpus of
English and Chinese text. The format is exactly llama.cpp's ``gpt2`` tokenizer
model (byte-to-unicode symbols, ``"a b"`` merges, ``qwen2`` pre-tokenizer), so
the same code paths run as for the real model, and Chinese text tokenizes to
whole characters for common ones and to raw bytes otherwise (which exercises
UTF-8 reassembly in streaming).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Qwen3-VL's added tokens, in their published order (ids 151643..151668 in the
# real vocabulary; here they follow the trained tokens). True = CONTROL, as the
# published GGUF has them: llama.cpp's converter makes an added token CONTROL when
# tokenizer_config marks it "special" or it looks like ``<|...|>`` (so the fim /
# repo / file tokens, "special": false in Qwen's config, are CONTROL too); the
# ``<tool_call>`` / ``<think>`` style ones are USER_DEFINED (plain text when
# detokenized). CONTROL tokens are never produced by detokenizing plain text.
QWEN3VL_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

# llama.cpp token types (llama_token_type / gguf.TokenType)
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4

_CORPUS = """
请用中文描述这张图片。这是一张照片，画面中有一个人站在街道上，背景是高楼和蓝色的天空。
图片里有一只猫坐在桌子上，旁边有一杯咖啡和一本书。阳光从窗户照进来，房间里很温暖。
工地上的工人戴着安全帽，穿着反光背心。请列出图片中的物体和它们的位置。
主要物体和人物是什么？它们之间的空间关系和动作关系是什么？可能的时间和地点？画面的情绪或隐含意义？
左上角 右下角 中间 前景 背景 颜色 红色 绿色 黄色 白色 黑色 汽车 自行车 树 花 山 水 河 海 天空 云
Describe this image in detail. The picture shows a person standing on a street with tall buildings.
There is a cat sitting on a table next to a cup of coffee and a book. Sunlight comes through the window.
List every object with its position: top-left, top-right, center, bottom-left, bottom-right.
Transcribe all visible text. The workers wear helmets and reflective vests on the construction site.
the of and a to in is that it with for as on was this are be at by from have has an not or
0 1 2 3 4 5 6 7 8 9 10 100 2024 12:30 ( ) [ ] { } " : , . ! ? - _ / # * =
{"helmet": true, "vest": false, "violations": []}
"""

# The qwen2 pre-tokenizer splits text much like this (contractions, letters,
# single digits, punctuation runs, whitespace); merges never cross these pieces.
_PRETOKENIZE = re.compile(
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+""",
    re.UNICODE,
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode-character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass(frozen=True)
class Vocabulary:
    """Token strings, their llama.cpp types, and the BPE merges."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]

    def token_id(self, token: str) -> int:
        return self.tokens.index(token)


def build_vocabulary(n_merges: int = 600) -> Vocabulary:
    """Train ``n_merges`` BPE merges on the built-in corpus; append Qwen's special tokens.

    Deterministic: pair-count ties are broken by the pair's text.
    """
    byte_sym = bytes_to_unicode()
    words = Counter(
        tuple(byte_sym[b] for b in piece.encode("utf-8"))
        for piece in _PRETOKENIZE.findall(_CORPUS)
    )
    tokens = [byte_sym[b] for b in range(256)]
    known = set(tokens)
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        if merged not in known:
            tokens.append(merged)
            known.add(merged)
        words = Counter({_merge_word(w, best, merged): c for w, c in words.items()})
    types = [TOKEN_NORMAL] * len(tokens)
    for text, control in QWEN3VL_SPECIAL_TOKENS:
        tokens.append(text)
        types.append(TOKEN_CONTROL if control else TOKEN_USER_DEFINED)
    return Vocabulary(tuple(tokens), tuple(types), tuple(merges))


def _merge_word(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
