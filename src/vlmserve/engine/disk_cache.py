"""The disk tier of the image-embedding cache: vision-encoder outputs that survive a restart.

A restarted server (or a re-run over the same folder of pictures) asked about a known
picture can skip the vision encoder, which is most of a cold request's time on a CPU.
The key is the RAM cache's key (content hash + mmproj identity), so an entry written for
one projector is never served for another.

One file per entry, named by a hash of the key (keys may hold characters a file name
cannot). Each file is a self-describing record::

    magic (8 bytes) | format version (u32) | header length (u32) | header (JSON) | payload

The JSON header holds the full key, the payload's dtype, shape, length and blake2b
checksum. An entry is served only when every one of those matches what is read back; a
truncated, resized, foreign or damaged file is removed and counted (``corrupt_removed``),
never returned. Writes go to a temporary file in the same folder, are fsynced and then
renamed over the final name, so a crash leaves either the old entry, the new one, or a
temporary file that is ignored (and removed once stale).

The byte budget counts whole files. ``put`` evicts least-recently-used entries to make
room; recency is kept in memory and mirrored in each file's mtime (touched on every hit),
so a new instance over the same folder starts with the same LRU order. One process owns a
folder; within it the cache is thread-safe (the engine calls it from its vision worker
while the HTTP side may read stats), and file I/O runs outside the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = b"VLMEMBD\x00"
FORMAT_VERSION = 1
SUFFIX = ".embd"
TEMP_PREFIX = ".tmp-"
_PREAMBLE = struct.Struct("<8sII")  # magic, version, header length
_MAX_HEADER = 64 * 1024  # a real header is ~200 bytes; more means garbage
_MAX_DIMS = 8
_NAME = re.compile(r"[0-9a-f]{32}" + re.escape(SUFFIX))


class _Corrupt(Exception):
    """A file that must not be served (the message says why, for debugging)."""


@dataclass(frozen=True)
class DiskCacheStats:
    hits: int
    misses: int
    writes: int
    evictions: int
    corrupt_removed: int
    entries: int
    bytes: int
    budget_bytes: int


def file_name(key: str) -> str:
    """The entry's file name: a fixed-length hash, whatever characters the key holds."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest() + SUFFIX


def encode_record(key: str, embd: np.ndarray) -> tuple[bytes, memoryview]:
    """The preamble + header bytes and the payload view of one entry (no copy of the data)."""
    payload = _bytes_view(embd)
    header = json.dumps({
        "key": key,
        "dtype": embd.dtype.str,
        "shape": list(embd.shape),
        "payload_bytes": payload.nbytes,
        "blake2b": hashlib.blake2b(payload).hexdigest(),
    }, separators=(",", ":")).encode("utf-8")
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)) + header, payload


def _bytes_view(embd: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (also for empty arrays, which
    ``memoryview.cast`` refuses)."""
    return memoryview(embd.reshape(-1).view(np.uint8))


def read_record(f: BinaryIO, key: str) -> np.ndarray:
    """Read and verify one entry from an open file; ``_Corrupt`` for anything that does
    not match exactly."""
    st = os.fstat(f.fileno())
    pre = f.read(_PREAMBLE.size)
    if len(pre) != _PREAMBLE.size:
        raise _Corrupt("shorter than the preamble")
    magic, version, header_len = _PREAMBLE.unpack(pre)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise _Corrupt("not an embedding file of this format version")
    if not 0 < header_len <= _MAX_HEADER:
        raise _Corrupt(f"implausible header length {header_len}")
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise _Corrupt("truncated header")
    try:
        header = json.loads(raw)
        stored_key, dtype = header["key"], np.dtype(header["dtype"])
        shape = tuple(int(n) for n in header["shape"])
        payload_bytes, digest = int(header["payload_bytes"]), str(header["blake2b"])
    except (ValueError, TypeError, KeyError) as exc:
        raise _Corrupt(f"unreadable header: {exc}") from exc
    if stored_key != key:
        raise _Corrupt("written for another key")
    if dtype.kind not in "fu" or len(shape) > _MAX_DIMS or any(n < 0 for n in shape):
        raise _Corrupt(f"unexpected dtype {dtype} or shape {shape}")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != payload_bytes:
        raise _Corrupt("shape and payload length disagree")
    if st.st_size != _PREAMBLE.size + header_len + payload_bytes:
        raise _Corrupt(f"file is {st.st_size} bytes, the header promises "
                       f"{_PREAMBLE.size + header_len + payload_bytes}")
    embd = np.empty(shape, dtype=dtype)
    view = _bytes_view(embd)
    if (f.readinto(view) if payload_bytes else 0) != payload_bytes or f.read(1):
        raise _Corrupt("payload length differs from the header")
    if hashlib.blake2b(view).hexdigest() != digest:
        raise _Corrupt("payload checksum mismatch")
    return embd


class DiskEmbeddingCache:
    """Embeddings on disk under ``folder``, at most ``budget_bytes`` of files, LRU-evicted."""

    def __init__(self, folder: Path, budget_bytes: int, stale_temp_s: float = 600.0) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.folder = Path(folder)
        self.budget_bytes = budget_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # file name -> bytes, oldest first
        self._bytes = 0
        self.hits = self.misses = self.writes = self.evictions = self.corrupt_removed = 0
        self._scan(stale_temp_s)

    # ------------------------------------------------------------------ public

    def get(self, key: str) -> np.ndarray | None:
        """The embeddings stored for ``key`` (verified, bit-exact), or None."""
        name = file_name(key)
        with self._lock:
            known = name in self._sizes
        if not known:
            return self._miss()
        path = self.folder / name
        try:
            f = open(path, "rb")
        except FileNotFoundError:  # evicted or removed meanwhile
            with self._lock:
                self._forget(name)
            return self._miss()
        except OSError:
            return self._miss()
        with f:
            try:
                embd = read_record(f, key)
            except (_Corrupt, OSError):
                self._remove_corrupt(path, os.fstat(f.fileno()))
                return self._miss()
        with self._lock:
            if name in self._sizes:
                self._sizes.move_to_end(name)
            self.hits += 1
        try:
            os.utime(path)  # recency survives a restart
        except OSError:
            pass
        return embd

    def put(self, key: str, embd: np.ndarray) -> bool:
        """Store ``embd`` for ``key``. False when not written (too big, or already stored)."""
        name = file_name(key)
        with self._lock:
            if name in self._sizes:
                self._sizes.move_to_end(name)
                return False
        embd = np.ascontiguousarray(embd)
        if embd.dtype.kind not in "fu":
            raise ValueError(f"entries are float embeddings or raw bytes, got {embd.dtype}")
        head, payload = encode_record(key, embd)
        size = len(head) + payload.nbytes
        if size > self.budget_bytes:
            return False
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="-" + name, dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            with self._lock:
                self._forget(name)  # a concurrent put of the same key: count it once
                self._evict_for(size)
                os.replace(tmp, self.folder / name)
                self._sizes[name] = size
                self._bytes += size
                self.writes += 1
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fsync_folder()
        return True

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return file_name(key) in self._sizes

    def stats(self) -> DiskCacheStats:
        with self._lock:
            return DiskCacheStats(self.hits, self.misses, self.writes, self.evictions,
                                  self.corrupt_removed, len(self._sizes), self._bytes,
                                  self.budget_bytes)

    # ------------------------------------------------------------------ internals

    def _scan(self, stale_temp_s: float) -> None:
        """Index what an earlier instance left, oldest access first; drop stale temp files."""
        found: list[tuple[float, str, int]] = []
        now = time.time()
        for entry in os.scandir(self.folder):
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if entry.name.startswith(TEMP_PREFIX):
                if now - st.st_mtime > stale_temp_s:  # a writer that died mid-write
                    Path(entry.path).unlink(missing_ok=True)
            elif _NAME.fullmatch(entry.name):
                found.append((st.st_mtime, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self._bytes += size
        with self._lock:
            self._evict_for(0)  # a smaller budget than last time

    def _miss(self) -> None:
        with self._lock:
            self.misses += 1
        return None

    def _forget(self, name: str) -> None:
        """Drop ``name`` from the index (lock held)."""
        size = self._sizes.pop(name, None)
        if size is not None:
            self._bytes -= size

    def _evict_for(self, incoming: int) -> None:
        """Remove least-recently-used files until ``incoming`` more bytes fit (lock held)."""
        while self._sizes and self._bytes + incoming > self.budget_bytes:
            name, size = self._sizes.popitem(last=False)
            self._bytes -= size
            (self.folder / name).unlink(missing_ok=True)
            self.evictions += 1

    def _remove_corrupt(self, path: Path, read: os.stat_result) -> None:
        """Remove a file that failed verification, unless a fresh one was renamed over it
        meanwhile (``read`` is the stat of the file actually read)."""
        with self._lock:
            try:
                now = path.stat()
            except FileNotFoundError:
                self._forget(path.name)
                return
            if (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
                return  # a concurrent put replaced it: that one is new and whole
            path.unlink(missing_ok=True)
            self._forget(path.name)
            self.corrupt_removed += 1

    def _fsync_folder(self) -> None:
        """Make the rename itself durable (POSIX: fsync the directory)."""
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
