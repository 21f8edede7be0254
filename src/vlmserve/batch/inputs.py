"""Which files a batch covers, and reading one of them into a ``LoadedImage``.

``expand_inputs`` turns command-line arguments (files, folders, globs) into a
deduplicated list of paths, in argument order with each folder's or glob's files sorted: folders are walked recursively for image files (by
extension), skipping hidden files and folders and temporary names; a file named
explicitly is kept whatever its name, so a bad file given by hand still gets its
error line.

``load_image`` reads a file once: the bytes give ``file_sha256`` (cheap, used to skip
work already done without decoding), and decoding gives the ``PreparedImage`` whose
``content_hash`` covers the pixels (the same key the engine's image cache uses).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vlmserve.config import ImageOptions
from vlmserve.errors import ImageError
from vlmserve.images import prepare_image, read_image_bytes
from vlmserve.types import PreparedImage

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif",
                              ".tiff", ".heic", ".heif"})
# Names that a writer uses while a file is not finished yet (browsers, rsync, editors).
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".partial", ".crdownload", ".download", ".swp")


def is_candidate(name: str) -> bool:
    """An image file name that is neither hidden nor temporary."""
    lower = name.lower()
    if lower.startswith((".", "~")) or lower.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(lower)[1] in IMAGE_EXTENSIONS


def walk_images(folder: str) -> Iterable[str]:
    """Image files under ``folder``, recursively, hidden folders skipped (any order)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if is_candidate(name):
                yield os.path.join(root, name)


@dataclass(frozen=True)
class Inputs:
    paths: list[str]  # in argument order, each folder's or glob's files sorted; no repeats
    warnings: list[str]  # arguments that matched nothing


def expand_inputs(args: Sequence[str]) -> Inputs:
    """Files, folders and globs (``**`` recurses) -> the image files they name."""
    found: dict[str, str] = {}  # identity -> path as first spelled
    warnings: list[str] = []

    def add(path: str) -> None:
        found.setdefault(os.path.normcase(os.path.abspath(path)), path)

    for arg in args:
        if os.path.isdir(arg):
            matched = list(walk_images(arg))
        elif os.path.exists(arg) or not glob.has_magic(arg):
            matched = [arg]  # named by hand (or missing: it gets an error line)
        else:
            matched = []
            for m in glob.glob(arg, recursive=True):
                if os.path.isdir(m):
                    matched.extend(walk_images(m))
                elif is_candidate(os.path.basename(m)):
                    matched.append(m)
        if not matched:
            warnings.append(f"{arg}: no image files found")
        for path in sorted(matched):
            add(path)
    return Inputs(list(found.values()), warnings)


@dataclass(frozen=True)
class LoadedImage:
    """One input file: its bytes' hash and decoded image, or why it has neither."""

    path: str
    file_sha256: str | None = None
    image: PreparedImage | None = None
    error: str | None = None

    @property
    def content_hash(self) -> str | None:
        return self.image.content_hash if self.image is not None else None


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_image(path: str, options: ImageOptions, data: bytes | None = None) -> LoadedImage:
    """Read (unless ``data`` is given), hash and decode one file; errors are kept, not raised."""
    sha = None
    try:
        if data is None:
            data = read_image_bytes(path, options.max_bytes)
        sha = file_sha256(data)
        return LoadedImage(path, sha, prepare_image(data, options))
    except ImageError as exc:
        return LoadedImage(path, sha, error=f"{path}: {exc.message}")
