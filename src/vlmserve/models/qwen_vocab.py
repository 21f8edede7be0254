"""The real Qwen vocabulary (151,936 entries) for demo models, found locally or fetched with pip.

The small trained demo vocabulary hides every cost that grows with the
vocabulary (the LM head, the logits, sampling over all candidates, real
Chinese token counts). The full Qwen2 BPE, which Qwen3 and Qwen3-VL share,
ships as ``models/ggml-vocab-qwen2.gguf`` inside the llama-cpp-python source
distribution: a package we already depend on, so no model hub is involved.

Lookup order: the extracted file in the cache folder; an sdist tarball there;
else ``pip download`` of the sdist (the running interpreter's pip) into the
cache folder. The cache folder is ``$VLMSERVE_VOCAB_CACHE``, else
``$XDG_CACHE_HOME/vlmserve/vocab`` (``~/.cache/vlmserve/vocab``).

The file's ids 151646.. are ``[PAD...]`` placeholders; they are relabelled with
Qwen3-VL's added tokens as the published Qwen3-VL GGUF has them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from vlmserve.errors import VlmserveError
from vlmserve.models.demo_tokenizer import (
    QWEN3VL_SPECIAL_TOKENS,
    TOKEN_CONTROL,
    TOKEN_USER_DEFINED,
    Vocabulary,
)
from vlmserve.models.gguf_kv import read_tokenizer_arrays

SDIST_VERSION = "0.3.36"  # the llama-cpp-python release this project is built against
SDIST_NAME = f"llama_cpp_python-{SDIST_VERSION}"
VOCAB_FILE = "ggml-vocab-qwen2.gguf"
_MEMBER = f"{SDIST_NAME}/vendor/llama.cpp/models/{VOCAB_FILE}"
QWEN_VOCAB_SIZE = 151_936
FIRST_ADDED_ID = 151_643  # <|endoftext|>: the first of Qwen3-VL's added tokens


class VocabUnavailableError(VlmserveError):
    """The Qwen vocabulary file is neither cached nor obtainable with pip."""


def vocab_cache_dir() -> Path:
    """Where the vocabulary file (and a downloaded sdist) is kept."""
    explicit = os.environ.get("VLMSERVE_VOCAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlmserve" / "vocab"


def find_qwen_vocab_file(cache_dir: Path | None = None) -> Path:
    """Path of ``ggml-vocab-qwen2.gguf``: cached, extracted from a cached sdist, or fetched."""
    cache = cache_dir or vocab_cache_dir()
    target = cache / VOCAB_FILE
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VocabUnavailableError(f"cannot create the vocabulary cache {cache}: "
                                    f"{exc.strerror or exc}") from exc
    sdist = cache / f"{SDIST_NAME}.tar.gz"
    if not sdist.is_file():
        _pip_download(cache)
    _extract(sdist, target)
    return target


def _pip_download(cache: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(cache),
           f"llama-cpp-python=={SDIST_VERSION}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VocabUnavailableError(f"could not run pip to fetch the Qwen vocabulary: {exc}"
                                    ) from exc
    if proc.returncode != 0 or not (cache / f"{SDIST_NAME}.tar.gz").is_file():
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        why = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
        raise VocabUnavailableError(
            f"the Qwen vocabulary ({VOCAB_FILE}) is not in {cache} and pip could not fetch "
            f"the llama-cpp-python {SDIST_VERSION} sdist that ships it: {why}")


def _extract(sdist: Path, target: Path) -> None:
    tmp = target.with_suffix(".part")
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            src = tar.extractfile(_MEMBER)
            if src is None:
                raise KeyError(_MEMBER)
            with src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    except (OSError, tarfile.TarError, KeyError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise VocabUnavailableError(f"{sdist.name} has no readable {_MEMBER}: {exc}") from exc
    tmp.replace(target)


def load_qwen_vocabulary(cache_dir: Path | None = None) -> Vocabulary:
    """The 151,936-entry Qwen2 BPE with ids 151643.. relabelled as Qwen3-VL has them."""
    path = find_qwen_vocab_file(cache_dir)
    try:
        tokens, types, merges = read_tokenizer_arrays(path)
    except ValueError as exc:
        raise VocabUnavailableError(f"{path} is not a usable vocabulary: {exc}") from exc
    if len(tokens) != QWEN_VOCAB_SIZE:
        raise VocabUnavailableError(f"{path} has {len(tokens)} tokens, "
                                    f"expected {QWEN_VOCAB_SIZE}")
    tokens, types = list(tokens), list(types)
    for offset, (text, control) in enumerate(QWEN3VL_SPECIAL_TOKENS):
        tokens[FIRST_ADDED_ID + offset] = text
        types[FIRST_ADDED_ID + offset] = TOKEN_CONTROL if control else TOKEN_USER_DEFINED
    return Vocabulary(tuple(tokens), tuple(types), tuple(merges))
